"""What the three annotate tasks share: engine calls that fail one prompt at a time, the progress
bar (records/s with requests/s and tokens/s), windows of records, and resume after a kill.

A task (`Task`) annotates a window of records at a time and never drops one: a record it cannot
annotate comes back with the failure recorded (a label's meta, `attributes_meta.failed`) or passes
through unchanged with a reason. Its `tally` counts each output record by what happened to it, read
from the record itself, so the counts are the same whether a run was resumed or not.

Resume works as in `synpref score`: with -o, every finished window is appended (fsynced) to
`OUT.resume.jsonl`; the same command run again checks that its input starts with the same ids,
skips those records and continues; OUT appears atomically at the end.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

import orjson

from synpref.engines import GenerationEngine, Prompt
from synpref.io import AppendStream
from synpref.io.resume import resume_path, skip_finished
from synpref.records import Record
from synpref.stage import Stage

DEFAULT_WINDOW = 64  # records annotated together; with -o also the resume granularity


@dataclass(frozen=True)
class Failure:
    """A prompt the engine could not serve, in place of its result."""

    error: str


class Meter:
    """Requests and tokens per second beside a records bar (tokens from engines that keep `usage`)."""

    def __init__(self, bar: Any = None):
        self.bar = bar
        self.requests = 0
        self.engines: list[Any] = []

    def add_requests(self, count: int) -> None:
        self.requests += count
        self._refresh()

    def add_records(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)
            self._refresh()

    def tokens(self) -> int | None:
        """Tokens read and written by the engines so far: `usage` prompt + completion tokens (torch,
        vLLM), or `stats["tokens"]` (openai); None when no engine counts them."""
        total, counted = 0, False
        for engine in self.engines:
            usage, stats = getattr(engine, "usage", None), getattr(engine, "stats", None)
            if isinstance(usage, dict):
                total += int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
            elif isinstance(stats, dict) and "tokens" in stats:
                total += int(stats["tokens"])
            else:
                continue
            counted = True
        return total if counted else None

    def _refresh(self) -> None:
        if self.bar is None or self.bar.disable:
            return
        elapsed = self.bar.format_dict["elapsed"] or 1e-9
        text = f"{self.requests / elapsed:,.1f} req/s"
        tokens = self.tokens()
        if tokens is not None:
            text += f", {tokens / elapsed:,.0f} tok/s"
        self.bar.set_postfix_str(text, refresh=False)


class Caller:
    """One model's engine as the tasks call it: requests counted, failures kept per prompt.

    Errors that belong to prompts become those prompts' `Failure`s: an engine that raises with
    `.results` (None at each failed prompt) and `.failures` (index -> reason) after finishing the
    others (the openai engine, out of retries), or returns None for a prompt; a ValueError (a prompt
    the model cannot take) makes each prompt be tried alone. Any other error is the engine's (a
    wrong URL or key, out of memory) and stops the run, which resumes from its last window.
    """

    def __init__(self, name: str, engine: GenerationEngine, meter: Meter | None = None):
        self.name, self.engine = name, engine
        self.meter = meter or Meter()
        self.meter.engines.append(engine)

    def logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float] | Failure]:
        return self._call(self.engine.candidate_logprobs, prompts, candidates)

    def generate(self, prompts: Sequence[Prompt], **options: Any) -> list[list[str] | Failure]:
        return self._call(self.engine.generate, prompts, **options)

    def _call(self, method: Callable, prompts: Sequence[Prompt], *args: Any, **kwargs: Any) -> list[Any]:
        if not prompts:
            return []
        failures: dict[int, str] = {}
        try:
            results = list(method(list(prompts), *args, **kwargs))
        except ValueError as error:
            if len(prompts) == 1:
                return [Failure(f"{type(error).__name__}: {error}")]
            return [self._call(method, [prompt], *args, **kwargs)[0] for prompt in prompts]
        except Exception as error:
            partial, failures = getattr(error, "results", None), getattr(error, "failures", None)
            if not (isinstance(partial, list) and isinstance(failures, dict)):
                raise
            results = partial
        if len(results) != len(prompts):
            raise RuntimeError(f"engine of {self.name} returned {len(results)} results for {len(prompts)} prompts")
        self.meter.add_requests(len(prompts))
        return [Failure(str(failures.get(index, "the engine returned no result"))) if result is None else result
                for index, result in enumerate(results)]


class Task(Protocol):
    """One annotate subcommand's work on windows of records."""

    name: str

    def annotate(self, records: list[Record]) -> list[Record]:
        """The window's records, annotated (or with their failure recorded), in order."""
        ...

    def tally(self, record: Record) -> Iterable[str]:
        """The count keys of one output record (what happened to it)."""
        ...


def window_seed(seed: int, records: Sequence[Record]) -> int:
    """A sampling seed of a window, from --seed and its first record id: a resumed run draws the same."""
    first = str(records[0].get("id")) if records else ""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{first}".encode()).digest()[:4], "big")


def annotate_records(records: Iterable[Record], task: Task, window: int = DEFAULT_WINDOW,
                     counts: Counter[str] | None = None) -> Iterator[Record]:
    """TASK over RECORDS, WINDOW at a time, in input order; counts each output record into COUNTS."""
    iterator = iter(records)
    while chunk := list(islice(iterator, window)):
        for record in task.annotate(chunk):
            if counts is not None:
                counts.update(task.tally(record))
            yield record


def annotate_stage(stage: Stage, task: Task, window: int, meter: Meter) -> str | None:
    """Run TASK over a Stage's records to its output; with -o resumable after a kill.

    Returns the resume file to delete once the stage has closed cleanly (None without -o).
    """
    records = stage.records(progress=False)  # the bar below counts annotated records
    meter.bar = stage.progress_bar(unit="rec")

    def emit(record: Record) -> None:
        stage.counts.update(task.tally(record))
        stage.emit(record)

    try:
        if not stage.options.output:
            for chunk in _windows(records, window):
                for record in task.annotate(chunk):
                    emit(record)
                meter.add_records(len(chunk))
            return None
        sidecar = AppendStream(resume_path(stage.options.output), plain=True)
        try:
            done = skip_finished(sidecar, window, records)
            stage.counts["resumed"] += done
            meter.add_records(done)
            for chunk in _windows(records, window):
                sidecar.append([orjson.dumps(record) for record in task.annotate(chunk)])
                meter.add_records(len(chunk))
            for line in sidecar.lines():
                emit(orjson.loads(line))
        finally:
            sidecar.close(remove_if_empty=True)
        return sidecar.path if os.path.exists(sidecar.path) else None
    finally:
        meter.bar.close()


def _windows(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    while chunk := list(islice(records, size)):
        yield chunk
