"""`synpref annotate`: the LLM stages of curation (SPEC section 4, Stage 1 steps 1, 2 and 5).

- `attributes` (`attributes.AttributeAnnotator`): the 5-tuple written into `attributes`;
- `verify` (`verify.ReplyVerifier`): objective pairs checked one reply at a time, a derived label;
- `judge` (`judge.PairJudge`): pairwise labels from one or more judges with retrieved examples.

Each is a task over windows of records (`run.Task`), run by `run.annotate_records` (records in
memory) or `run.annotate_stage` (a CLI Stage, resumable). Models run behind the generation
protocol (`synpref.engines.generation.generation_engine`: torch, vLLM, OpenAI-compatible).

    from synpref.annotate import judge_records

    for record in judge_records(records, ["smollm2=SmolLM2-135M-Instruct/"], mode="logprob", both_orders=True):
        ...
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from synpref.annotate.attributes import AttributeAnnotator, attribute_problems
from synpref.annotate.judge import JudgeOptions, PairJudge, parse_verdict, shows_rejected_first
from synpref.annotate.run import DEFAULT_WINDOW, Caller, Meter, annotate_records, annotate_stage
from synpref.annotate.templates import PromptTemplate
from synpref.annotate.verify import ReplyVerifier
from synpref.records import Record
from synpref.stage import Stage, StageOptions

__all__ = [
    "AttributeAnnotator", "Caller", "JudgeOptions", "Meter", "PairJudge", "PromptTemplate", "ReplyVerifier",
    "annotate_records", "annotate_stage", "attribute_problems", "attribute_records", "judge_records",
    "load_examples", "model_name", "open_models", "parse_verdict", "shows_rejected_first", "verify_records",
]


def model_name(spec: str) -> tuple[str, str]:
    """(name, model) of a `[NAME=]MODEL` argument; NAME defaults to the model's last path part,
    without a .gguf suffix (a served model `org/Model` is `Model`)."""
    name, separator, model = spec.partition("=")
    if separator and name and "/" not in name:
        return name, model
    model = spec
    base = os.path.basename(os.path.normpath(model))
    return (base[: -len(".gguf")] if base.endswith(".gguf") else base), model


def open_models(specs: Sequence[str], engine: str = "torch", meter: Meter | None = None,
                **engine_options: Any) -> list[Caller]:
    """One `Caller` per `[NAME=]MODEL` spec, on ENGINE (see `generation_engine` for the options)."""
    from synpref.engines.generation import generation_engine

    meter = meter or Meter()
    callers = []
    for spec in specs:
        name, model = model_name(spec)
        callers.append(Caller(name, generation_engine(engine, model, **engine_options), meter))
    return callers


def load_examples(paths: Sequence[str]) -> dict[str, Record]:
    """Human-labeled example pairs by id, from streams of any layout (a bad line names file and line)."""
    with Stage("examples", StageOptions(inputs=list(paths)), emits=False) as stage:
        return {str(record["id"]): record for record in stage.records(progress=False)}


def _callers(models: Sequence[str | Caller], engine: str, engine_options: dict[str, Any]) -> list[Caller]:
    specs = [model for model in models if isinstance(model, str)]
    opened = iter(open_models(specs, engine, **engine_options)) if specs else iter(())
    return [next(opened) if isinstance(model, str) else model for model in models]


def judge_records(records: Iterable[Record], models: Sequence[str | Caller], examples: Sequence[str] = (),
                  template: str | None = None, window: int = DEFAULT_WINDOW, counts: Counter[str] | None = None,
                  engine: str = "torch", engine_options: dict[str, Any] | None = None,
                  **options: Any) -> Iterator[Record]:
    """Each record with its judges' labels appended (`synpref annotate judge`); OPTIONS are
    `JudgeOptions` fields, MODELS `[NAME=]MODEL` specs or opened Callers."""
    task = PairJudge(_callers(models, engine, engine_options or {}), PromptTemplate.load("judge", template),
                     JudgeOptions(**options), load_examples(examples) if examples else None)
    return annotate_records(records, task, window, counts)


def verify_records(records: Iterable[Record], model: str | Caller, every_pair: bool = False,
                   template: str | None = None, window: int = DEFAULT_WINDOW, counts: Counter[str] | None = None,
                   engine: str = "torch", engine_options: dict[str, Any] | None = None,
                   max_chars: int = 8000) -> Iterator[Record]:
    """Each record, objective pairs with a `llm:NAME:verify` label appended (`synpref annotate verify`)."""
    [judge] = _callers([model], engine, engine_options or {})
    task = ReplyVerifier(judge, PromptTemplate.load("verify", template), every_pair, max_chars)
    return annotate_records(records, task, window, counts)


def attribute_records(records: Iterable[Record], model: str | Caller, template: str | None = None,
                      max_tokens: int = 32, overwrite: bool = False, window: int = DEFAULT_WINDOW,
                      counts: Counter[str] | None = None, engine: str = "torch",
                      engine_options: dict[str, Any] | None = None, max_chars: int = 4000) -> Iterator[Record]:
    """Each record with its `attributes` filled in (`synpref annotate attributes`)."""
    [judge] = _callers([model], engine, engine_options or {})
    task = AttributeAnnotator(judge, PromptTemplate.load("attributes", template), max_tokens, overwrite, max_chars)
    return annotate_records(records, task, window, counts)
