from __future__ import annotations

import textwrap

import click

from synpref.cli.options import (
    max_length_option,
    open_stage,
    run_stage,
    stage_options,
    state_cache_option,
    torch_state_cache,
)
from synpref.filter_consistent import JUDGE_PREFIX, MISSING_GOLD, REASONS, THRESHOLD


def _reasons() -> str:
    return "\n".join(textwrap.fill(f"{reason}: {meaning}", 96, initial_indent="  ", subsequent_indent="      ")
                     for reason, meaning in REASONS.items())


HELP = f"""Keep the pairs whose label agrees with the gold RM and with the judges or the current RM.

The Stage-2 rule of Skywork-Reward-V2: a pair is kept when its current label (chosen preferred
over rejected) agrees with the gold RM (p > --threshold) and with either the LLM judges'
aggregated label or the current RM (p > --threshold). Every pair goes to stdout (-o) or to
--removed with its `reason` and a `signals` field (each signal's state and p); counts per
source and reason go to stderr.

Signals. --gold and --rm name a `scores` entry (from `synpref score --name NAME`), or a reward
model directory (one with a config.json): the pairs are then scored here first, exactly as
`synpref score -m DIR` would, and written with scores.DIRNAME (the directory's name; an input
entry of that name is replaced). Without --rm the current RM is the one score the input holds
besides the gold's (taken from the first record that has one, printed on stderr; several are an
error), or missing. An RM agrees when p > threshold, disagrees when p < 1 - threshold, and is a
tie in between (at 0.5: equal rewards). The judges are the labels whose `by` starts with a
--judges prefix: each judge's vote is the strict plurality of its decided labels (self-consistency
samples; `unsure` ones do not vote), then the strict plurality across the judges that decided is
the judges' label (agrees: chosen, disagrees: rejected, tie: tie); a split (one chosen, one
rejected) or judges that all said `unsure` make the judges unsure, as in `annotate judge`'s
majority rule. A joint label llm:A+B (annotate judge with several judges) is one vote in place of
the labels of llm:A and llm:B. Confidence is checked but not weighted.

A pair without the gold score is a bad record (file:line: field 'scores.GOLD'; --on-error skip
diverts it to --errors) unless --missing-gold remove, which removes it as gold_missing. A
malformed scores or labels entry is a bad record naming its field.

\b
Reasons (docs/curation.md has the whole decision table):
{_reasons()}

--recycle flips the pairs every available signal says are reversed (the gold RM and the judges
and/or the current RM prefer `rejected`, none of them agrees or ties) and keeps them: chosen and
rejected swapped, `flipped` toggled, every scores entry's chosen/rejected swapped and p -> 1 - p,
every label's chosen/rejected preference swapped, and a `recycled` entry appended (reason, prior
label, prior flipped, signals). A flipped pair then passes the rule, so a second run keeps it
unchanged.

\b
Examples:
    synpref score -m rm.ckpt < pairs.jsonl.zst | synpref filter-consistent --gold gold-rm/ --removed removed.jsonl.zst > kept.jsonl.zst
    synpref filter-consistent --gold gold --rm rm --recycle judged.jsonl.zst -o kept.jsonl.zst --removed removed.jsonl.zst
"""


@click.command("filter-consistent", help=HELP)
@stage_options(removed=True)
@click.option("--gold", required=True, metavar="NAME|DIR",
              help="The gold RM: a scores.NAME entry, or a reward model directory to score the pairs with.")
@click.option("--rm", metavar="NAME|DIR",
              help="The current RM: a scores.NAME entry or a model directory (default: the input's one "
              "other score, if any).")
@click.option("--judges", multiple=True, default=(JUDGE_PREFIX,), show_default=True, metavar="PREFIX",
              help="Labels whose `by` starts with PREFIX are the LLM judges; repeat for several (e.g. "
              "--judges llm:qwen --judges llm:llama to leave out a source's own llm:gpt-4 labels).")
@click.option("--threshold", type=click.FloatRange(0.5, 1, max_open=True), default=THRESHOLD, show_default=True,
              help="An RM agrees when p > THRESHOLD and disagrees when p < 1 - THRESHOLD.")
@click.option("--recycle", is_flag=True, help="Flip and keep the pairs every available signal says are reversed.")
@click.option("--missing-gold", type=click.Choice(MISSING_GOLD), default="error", show_default=True,
              help="A pair without the gold score: a bad record (error), or removed as gold_missing.")
@click.option("--engine", type=click.Choice(["torch", "vllm"]), default="torch", show_default=True,
              help="Engine for a --gold/--rm model directory (as in `synpref score`).")
@click.option("--device", help="torch device for a model directory (default: cuda when available, else cpu).")
@max_length_option("For a model directory: truncate longer pairs as `synpref score` does (default: the "
                   "model's context).")
@state_cache_option()
def filter_consistent(stage_options, gold, rm, judges, threshold, recycle, missing_gold, engine, device,
                      max_length, state_cache):
    from synpref.filter_consistent import ConsistencyConfig, filter_consistent, resolve_signal, summary_lines

    try:
        gold_name, gold_model = resolve_signal(gold)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--gold") from None
    try:
        rm_name, rm_model = resolve_signal(rm) if rm else (None, None)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--rm") from None
    try:
        config = ConsistencyConfig(gold_name, rm_name, tuple(judges), threshold, recycle, missing_gold)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    state_cache = torch_state_cache(state_cache, engine)
    stage = open_stage("filter-consistent", stage_options)
    models = {}
    for name, model_dir in ((gold_name, gold_model), (rm_name, rm_model)):
        if model_dir:
            from synpref.engines.reward import RewardScorer

            try:
                models[name] = RewardScorer(model_dir, engine=engine, device=device, max_length=max_length,
                                            state_cache=state_cache)
            except (FileNotFoundError, ValueError) as error:
                raise click.ClickException(str(error)) from None
    consistency = run_stage(stage, lambda: filter_consistent(stage, config, models))
    if rm is None:
        found = f"scores.{consistency.rm_name}" if consistency.rm_name else "none (no other score in the input)"
        click.echo(f"synpref filter-consistent: current RM: {found}", err=True)
    lines = summary_lines(consistency.by_source)
    if lines:
        click.echo("synpref filter-consistent by source and reason:\n" + "\n".join(lines), err=True)
