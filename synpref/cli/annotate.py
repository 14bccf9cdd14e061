"""`synpref annotate`: LLM attributes, objective pre-verification and pairwise judging."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from synpref.cli.options import add_options, open_stage, run_stage, stage_options
from synpref.io import StreamError

ENGINE_HELP = (
    "torch: transformers on CPU/CUDA in this process (batched, left-padded, a shared prompt head read "
    "once); vllm: vLLM's offline LLM with prefix caching (not installed by default); openai: any "
    "OpenAI-compatible server at --base-url (vLLM, SGLang or llama.cpp serving), -m naming its model."
)


def engine_flags(command: Callable) -> Callable:
    """The model and engine flags every annotate task shares."""
    return add_options(command, [
        click.option("--engine", type=click.Choice(["torch", "vllm", "openai"]), default="torch",
                     show_default=True, help=ENGINE_HELP),
        click.option("--device", help="torch: device (default: cuda when available, else cpu)."),
        click.option("--batch-tokens", type=click.IntRange(min=1),
                     help="torch: padded tokens per batch (default 1024 on CPU, 16384 on CUDA; generation "
                     "counts each row's prompt plus --max-tokens)."),
        click.option("--base-url", help="openai: the server's OpenAI-compatible root, e.g. http://node:8000/v1."),
        click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, metavar="NAME",
                     help="openai: the environment variable holding the API key (unset: no key sent)."),
        click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True,
                     help="openai: requests in flight at once."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
                     help="openai: seconds before a request is abandoned and retried."),
        click.option("--max-retries", type=click.IntRange(min=0), default=6, show_default=True,
                     help="openai: retries of a request (429, 5xx, dropped connections; backoff with jitter, "
                     "Retry-After honoured) before its prompt is recorded as failed."),
        click.option("--template", type=click.Path(dir_okay=False),
                     help="A prompt template file replacing the built-in one (same sections and "
                     "placeholders; see docs/annotate.md). Labels record its digest."),
        click.option("--window", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Records annotated together (batched across them); with -o also how often "
                     "finished records are saved for resume."),
    ])


def _engine_options(engine: str, device: str | None, batch_tokens: int | None, base_url: str | None,
                    api_key_env: str, concurrency: int, timeout: float, max_retries: int) -> dict[str, Any]:
    """The generation_engine keywords of ENGINE; a flag of another engine is a usage error."""
    if engine == "torch":
        if base_url:
            raise click.UsageError("--base-url applies to --engine openai only")
        return {"device": device, "batch_tokens": batch_tokens}
    if device or batch_tokens:
        raise click.UsageError(f"--device and --batch-tokens apply to --engine torch only, not {engine}")
    if engine == "vllm":
        if base_url:
            raise click.UsageError("--base-url applies to --engine openai only")
        return {}
    if not base_url:
        raise click.UsageError("--engine openai needs --base-url (the server's OpenAI-compatible root)")
    return {"base_url": base_url, "api_key_env": api_key_env, "concurrency": concurrency,
            "timeout": timeout, "max_retries": max_retries}


def _run(name: str, options: Any, make_task: Callable[[Any], Any], window: int) -> None:
    """Open the stage, build the task (loading the models), run it, print counts and the task's report."""
    from synpref.annotate import Meter, annotate_stage

    stage = open_stage(f"annotate {name}", options)
    meter = Meter()
    try:
        task = make_task(meter)
    except (FileNotFoundError, ImportError, ValueError, StreamError) as error:
        raise click.ClickException(str(error)) from None

    def work() -> str | None:
        try:
            return annotate_stage(stage, task, window, meter)
        except ValueError as error:
            raise click.ClickException(str(error)) from None

    sidecar = run_stage(stage, work)
    for line in getattr(task, "report", list)():
        click.echo(f"synpref annotate {name}: {line}", err=True)
    if sidecar:
        os.unlink(sidecar)


def _template(task: str, path: str | None) -> Any:
    from synpref.annotate import PromptTemplate

    try:
        return PromptTemplate.load(task, path)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--template") from None


@click.group("annotate")
def annotate() -> None:
    """LLM stages of curation: attributes, objective pre-verification, pairwise judging.

    Every task adds to records and drops none: a record it cannot annotate keeps its failure (in
    the label's meta, or attributes_meta.failed) or passes through unchanged, counted by reason on
    stderr. Decisions among fixed answers are read from next-token probabilities (one read of the
    prompt), never generated; only free text is generated. Prompts are package templates
    (replace one with --template FILE); results record the template's digest.

    \b
    Resume: with -o OUT, finished records are saved to OUT.resume.jsonl every --window records;
    the same command run again after a kill continues where it stopped. --shard I/N (or a SLURM
    array) splits the work. A bar (--progress) shows records/s, requests/s and tokens/s.

    \b
    Examples:
        synpref annotate attributes -m smollm2.gguf pool.jsonl.zst -o attributed.jsonl.zst
        synpref annotate verify -m qwen=Qwen2.5-7B-Instruct/ attributed.jsonl.zst > verified.zst
        synpref annotate judge -m a/ -m b/ --examples gold.jsonl.zst --both-orders retrieved.zst -o judged.zst
        synpref annotate judge --engine openai --base-url http://node:8000/v1 -m Qwen/Qwen2.5-72B-Instruct \\
            --mode generate --votes 5 pool.zst -o judged.zst
        synpref annotate attributes -m q=Qwen2.5-7B-Instruct/ pool.zst | synpref annotate verify -m q=Qwen2.5-7B-Instruct/ \\
          | synpref annotate judge -m q=Qwen2.5-7B-Instruct/ | synpref stats

    See docs/annotate.md for the prompt layouts, aggregation rules and label fields.
    """


@annotate.command("attributes")
@stage_options()
@click.option("-m", "--model", required=True, metavar="[NAME=]MODEL",
              help="The annotating model (a directory or .gguf for torch; a served name for openai). "
              "NAME (default: the last path part) goes into attributes_meta.by as llm:NAME.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=32, show_default=True,
              help="New tokens for each free-text field (desired_attributes, guideline).")
@click.option("--overwrite", is_flag=True, help="Re-annotate fields that are already present and valid.")
@click.option("--max-chars", type=click.IntRange(min=100), default=4000, show_default=True,
              help="The conversation shown is cut to its last this-many characters.")
@engine_flags
def attributes(stage_options, model, max_tokens, overwrite, max_chars, engine, device, batch_tokens, base_url,
               api_key_env, concurrency, timeout, max_retries, template, window):
    """Write the 5-tuple into `attributes`: task_category, objectivity, controversiality,
    desired_attributes, guideline.

    The three closed-set fields are chosen among their allowed values by the probability of each
    value's option letter (no generation; the pair's conversation is read once for all three):
    task_category one of coding, math, reasoning, open_qa, closed_qa, advice, creative_writing,
    rewriting, summarization, extraction, classification, brainstorming, roleplay, safety, other;
    objectivity objective or subjective; controversiality low, medium or high. desired_attributes
    (a list of short phrases) and guideline (one sentence) are generated, each conditioned on the
    fields before it, and checked against the schema; an answer that fails is asked again once with
    a stricter instruction, then the field is left out and the raw text kept in
    attributes_meta.failed (counted as failed_FIELD). attributes_meta also holds the model, the
    template digest and each closed-set choice's probability. Valid fields already present are kept
    unless --overwrite; records without a conversation pass through unchanged.

    \b
    Examples:
        synpref annotate attributes -m smollm2=SmolLM2-135M-Instruct.gguf pool.jsonl.zst -o attributed.jsonl.zst
        synpref cat pool.jsonl.zst --sample 100 | synpref annotate attributes -m qwen=Qwen2.5-7B-Instruct/ | synpref stats
        synpref annotate attributes --engine openai --base-url http://node:8000/v1 -m Qwen/Qwen2.5-72B-Instruct \\
            --shard 3/8 pool/ -o attributed-3.jsonl.zst
    """
    from synpref.annotate import AttributeAnnotator, open_models

    engine_options = _engine_options(engine, device, batch_tokens, base_url, api_key_env, concurrency, timeout,
                                     max_retries)
    prompt = _template("attributes", template)

    def make(meter):
        [judge] = open_models([model], engine, meter, **engine_options)
        return AttributeAnnotator(judge, prompt, max_tokens, overwrite, max_chars)

    _run("attributes", stage_options, make, window)


@annotate.command("verify")
@stage_options()
@click.option("-m", "--model", required=True, metavar="[NAME=]MODEL",
              help="The verifying model; its label is by llm:NAME:verify (NAME: default the last path part).")
@click.option("--all-pairs", is_flag=True,
              help="Verify every pair, not only those whose attributes.objectivity is objective.")
@click.option("--max-chars", type=click.IntRange(min=100), default=8000, show_default=True,
              help="The conversation (its last characters) and the reply are each cut to this many characters.")
@engine_flags
def verify(stage_options, model, all_pairs, max_chars, engine, device, batch_tokens, base_url, api_key_env,
           concurrency, timeout, max_retries, template, window):
    """Pre-verify objective pairs: each reply judged correct / incorrect / unsure on its own.

    For each reply the model sees the conversation and that reply only and is asked whether it is
    correct; the verdict is the likeliest of the answers Yes, No, Unknown at the first answer token
    (one read of each prompt, both replies of a pair batched together). A label is appended to the
    pair's labels: chosen when only chosen is correct, rejected when only rejected is, tie when both
    are, unsure otherwise; confidence is the product of the two verdicts' probabilities, and meta
    holds each reply's verdict and probabilities. Pairs not marked objective (run `annotate
    attributes` first), and records that are not pairs, pass through unchanged, counted by reason.

    \b
    Examples:
        synpref annotate attributes -m qwen=Qwen2.5-7B-Instruct/ pool.jsonl.zst \\
          | synpref annotate verify -m qwen=Qwen2.5-7B-Instruct/ -o verified.jsonl.zst
        synpref annotate verify -m qwen=Qwen2.5-7B-Instruct/ --all-pairs math.jsonl.zst | synpref stats
    """
    from synpref.annotate import ReplyVerifier, open_models

    engine_options = _engine_options(engine, device, batch_tokens, base_url, api_key_env, concurrency, timeout,
                                     max_retries)
    prompt = _template("verify", template)

    def make(meter):
        [judge] = open_models([model], engine, meter, **engine_options)
        return ReplyVerifier(judge, prompt, all_pairs, max_chars)

    _run("verify", stage_options, make, window)


@annotate.command("judge")
@stage_options()
@click.option("-m", "--model", "models", required=True, multiple=True, metavar="[NAME=]MODEL",
              help="A judge model; repeat for several judges (all loaded at once). Each appends a label "
              "by llm:NAME (NAME: default the last path part), and with several one more, llm:NAME1+NAME2, "
              "holds their joint verdict.")
@click.option("--mode", type=click.Choice(["logprob", "generate"]), default="logprob", show_default=True,
              help="logprob: read P(\"1\") vs P(\"2\") at the answer's first token, one forward, a calibrated "
              "confidence. generate: sample --votes answers and read the verdict out of the prose; an "
              "unreadable answer is asked again once with a stricter instruction, then is no vote (its text "
              "kept in meta.raw).")
@click.option("--votes", type=click.IntRange(min=1), default=1, show_default=True,
              help="generate: samples per prompt order (self-consistency).")
@click.option("--temperature", type=click.FloatRange(min=0), default=None,
              help="generate: sampling temperature (default 0 for one vote, 0.7 for several).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=32, show_default=True,
              help="generate: new tokens per answer.")
@click.option("--both-orders", is_flag=True,
              help="Judge each pair with each reply as Candidate 1 (default: one order, drawn per record id). "
              "Under --aggregate majority the two orders must agree, else the label is unsure (FastChat); "
              "the position consistency of each judge is reported.")
@click.option("--aggregate", type=click.Choice(["majority", "mean"]), default="majority", show_default=True,
              help="majority: the strict plurality of votes within a model, then of the models' labels "
              "(no strict plurality: unsure); mean: the mean P(chosen) over orders and votes, then over "
              "models, chosen above 0.5.")
@click.option("--examples", "example_paths", multiple=True, type=click.Path(allow_dash=False), metavar="STREAM",
              help="Human-labeled example pairs (repeatable). A pair's extra.examples (ids, or objects with "
              "an id, as synpref retrieve writes them) picks which are shown, in that order; pairs without "
              "it are judged without examples. An example's preference is its last decided human label, "
              "else its chosen reply.")
@click.option("--max-examples", type=click.IntRange(0, 8), default=8, show_default=True,
              help="Examples shown per pair at most.")
@click.option("--example-chars", type=click.IntRange(min=50), default=1000, show_default=True,
              help="Each text of an example is cut to this many characters.")
@click.option("--max-chars", type=click.IntRange(min=100), default=8000, show_default=True,
              help="The conversation (its last characters) and each reply of the judged pair are cut to "
              "this many characters (meta.clipped).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the candidate order of each record (from its id) and the sampling of each window.")
@engine_flags
def judge(stage_options, models, mode, votes, temperature, max_tokens, both_orders, aggregate, example_paths,
          max_examples, example_chars, max_chars, seed, engine, device, batch_tokens, base_url, api_key_env,
          concurrency, timeout, max_retries, template, window):
    """Label pairs with LLM judges: guideline, attributes, retrieved human examples, then the two
    replies as Candidate 1 and Candidate 2 in a seeded random order.

    Each judge's label is appended to the pair's labels (existing labels are kept): by llm:NAME,
    prefers chosen/rejected/tie/unsure, confidence, votes (counts per side), order (chosen-first,
    rejected-first or both), template (digest) and meta (every reading's candidate order and
    verdicts, p1 = P(Candidate 1) in logprob mode, p_chosen, examples used). Records that are not
    pairs pass through unchanged. Stderr ends with the counts (prefers_*, failures, retried and
    unread votes, examples used and missing) and, per judge, the position bias (the share of
    Candidate 1 verdicts; 0.5 is unbiased) and with --both-orders the position consistency.

    \b
    Examples:
        synpref retrieve --index gold.idx --queries to-label.jsonl.zst \\
          | synpref annotate judge -m smollm2=SmolLM2-135M-Instruct.gguf --examples gold.jsonl.zst -o judged.jsonl.zst
        synpref annotate judge -m a/ -m b/ --both-orders --aggregate mean pairs.jsonl.zst \\
          | synpref filter-consistent --gold gold --removed removed.jsonl.zst > kept.jsonl.zst
        synpref annotate judge --engine openai --base-url http://node:8000/v1 -m Qwen/Qwen2.5-72B-Instruct \\
            --mode generate --votes 5 pairs.jsonl.zst -o judged.jsonl.zst
    """
    from synpref.annotate import JudgeOptions, PairJudge, load_examples, open_models

    engine_options = _engine_options(engine, device, batch_tokens, base_url, api_key_env, concurrency, timeout,
                                     max_retries)
    prompt = _template("judge", template)
    options = JudgeOptions(mode=mode, votes=votes, temperature=temperature, max_tokens=max_tokens,
                           both_orders=both_orders, aggregate=aggregate, max_examples=max_examples,
                           example_chars=example_chars, max_chars=max_chars, seed=seed)
    if mode == "logprob" and votes > 1:
        raise click.UsageError("--votes > 1 needs --mode generate: a logprob reading is deterministic "
                               "(its probability already is the vote share)")
    def make(meter):
        examples = load_examples(example_paths) if example_paths else None
        return PairJudge(open_models(models, engine, meter, **engine_options), prompt, options, examples)

    _run("judge", stage_options, make, window)
