from __future__ import annotations

import os

import click

from synpref.cli.options import (
    max_length_option,
    open_stage,
    run_stage,
    stage_options,
    state_cache_option,
    torch_state_cache,
)
from synpref.engines.reward import DEFAULT_WINDOW
from synpref.engines.torch_reward import DEFAULT_RECHECK_MARGIN


@click.command()
@stage_options()
@click.option(
    "-m", "--model", "model_dir", required=True, type=click.Path(), help="Reward model directory (HF layout)."
)
@click.option("--name", help="Key under `scores` (default: the model directory's name).")
@click.option(
    "--engine",
    type=click.Choice(["torch", "vllm"]),
    default="torch",
    show_default=True,
    help="torch: transformers on CPU/CUDA; vllm: vLLM's pooling (classification) runner.",
)
@click.option(
    "--batch-tokens",
    type=click.IntRange(min=1),
    help="Tokens per torch batch. CUDA (default 8192): padded tokens (sequences x longest; one pair "
    "always fits). CPU (default 1024): pairs packed without padding into one row of at most this many "
    "tokens (each pair's conversation once, its replies behind a block mask, attention per pair; 1: one "
    "pair per row), because padding costs as much as real tokens there.",
)
@max_length_option(
    "Truncate longer pairs (see below); default: the model's maximum positions (config "
    "max_position_embeddings or the tokenizer's model_max_length, the smaller)."
)
@click.option(
    "--quantize",
    type=click.Choice(["bf16"]),
    help="CPU only, opt-in: matmuls in bfloat16 (fast on CPUs with AVX512-BF16/AMX; norms, attention "
    "and the reward head stay fp32); pairs whose rewards come within --recheck-margin are scored again "
    "in fp32. With a SmolLM2-135M RM on hh-harmless pairs: 2.77x the naive per-pair loop (1.44x "
    "synpref fp32), keeping 99.55% of fp32 p > 0.5 decisions (2,000 pairs, one run). int8 was "
    "measured and left out: ~2.2x fp32 speed but 86% of decisions kept.",
)
@click.option(
    "--recheck-margin",
    type=click.FloatRange(min=0),
    default=DEFAULT_RECHECK_MARGIN,
    show_default=True,
    help="With --quantize: |chosen - rejected| below this is re-scored in fp32 (larger: more decisions "
    "kept, slower; 0.02 kept 99.87% of 1,500 hh pairs, 0 only 98.3%).",
)
@click.option("--device", help="torch device (default: cuda when available, else cpu).")
@click.option(
    "--prefix-reuse",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Compute a pair's shared conversation once and reuse its KV cache for both replies; "
    "auto: per batch, when it processes fewer padded tokens.",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=DEFAULT_WINDOW,
    show_default=True,
    help="Pairs length-sorted together; with -o also how often finished pairs are saved for resume.",
)
@state_cache_option()
def score(
    stage_options,
    model_dir,
    name,
    engine,
    batch_tokens,
    max_length,
    quantize,
    recheck_margin,
    device,
    prefix_reuse,
    window,
    state_cache,
):
    """Add scores.NAME = {chosen, rejected, p} to every pair with a reward model.

    The reward is the model's single output at the last token of the chat-template-formatted
    conversation plus reply (no system prompt added, no duplicated BOS); p = sigmoid(chosen -
    rejected) is the Bradley-Terry probability that the current label is right. Records keep
    their input order and every other field; existing scores under other names are kept.

    \b
    Truncation (--max-length, by default the model's context): the oldest history turns are
    dropped first (a user turn with the replies after it; system messages stay), never the final
    reply; if the last user turn and the reply still do not fit, the oldest tokens are cut (the
    reward is read at the last token). Such pairs get scores.NAME.truncated ("turns" or "tokens")
    and scores.NAME.dropped_turns, and are counted as `truncated N` on stderr.

    \b
    Resume: with -o OUT, finished pairs are saved to OUT.resume.jsonl every --window pairs; run
    the same command again after a kill or preemption and it continues where it stopped (the
    input must start with the same record ids). OUT appears atomically when all pairs are done.
    SIGTERM (scancel, a preemption notice) stops at once and leaves no partial file.
    Use --shard I/N (or a SLURM array, see bin/score-slurm.sh) to split the work.

    \b
    Examples:
        synpref score -m rm/ pairs.jsonl.zst -o scored.jsonl.zst --progress
        synpref score -m gold-rm/ --name gold --engine vllm < pairs.jsonl.zst > scored.jsonl.zst
        synpref score -m rm/ --name rm < pool.jsonl.zst | synpref score -m gold-rm/ --name gold | synpref stats
    """
    from synpref.engines.reward import RewardScorer
    from synpref.score import score_stage

    state_cache = torch_state_cache(state_cache, engine)
    stage = open_stage("score", stage_options)
    try:
        scorer = RewardScorer(
            model_dir,
            engine=engine,
            batch_tokens=batch_tokens,
            max_length=max_length,
            quantize=quantize,
            device=device,
            prefix_reuse=prefix_reuse,
            window=window,
            recheck_margin=recheck_margin,
            state_cache=state_cache,
        )
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from None

    def work() -> str | None:
        try:
            return score_stage(stage, scorer, name)
        except ValueError as error:
            raise click.ClickException(str(error)) from None

    sidecar = run_stage(stage, work)
    if sidecar:
        os.unlink(sidecar)
