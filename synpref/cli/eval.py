"""`synpref eval`: reward-model benchmarks with their official scoring, side by side with intervals."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from synpref.cli.options import (
    add_options,
    max_length_option,
    open_stage,
    run_stage,
    stage_options,
    state_cache_option,
    torch_state_cache,
)

if TYPE_CHECKING:
    from synpref.eval.run import Benchmark

ORDER_FREE = (
    "Reward models are order-free: each (conversation, reply) is scored on its own, so a pair has no "
    "first or second position to swap and no position bias to average out; the pair is scored as given."
)

# The Examples block of each benchmark subcommand's --help, with a typical --data path.
EXAMPLE_DATA = {
    "rewardbench": "reward-bench/filtered.parquet", "rewardbench2": "reward-bench-2/data/",
    "rmbench": "rm-bench/total_dataset.json", "judgebench": "judgebench/data/",
    "ppe": "ppe/human-preference.jsonl", "rmb": "RMB_dataset/",
}
EXAMPLES = """\b
Examples:
    synpref eval {name} -m a=ckpt-1/ -m b=ckpt-2/ --data {data} --save {name}/
    synpref eval {name} -m rm/ --data {data} --save-scores rewards.jsonl.zst --json | jq .models
    synpref eval {name} -m rm --data {data} --scores rewards.jsonl.zst --save {name}/   # no model run
"""


def _render(report, as_json: bool, save: str | None) -> None:
    from synpref.eval.report import format_table, report_json, save_report

    if save:
        written = save_report(report, save)
        click.echo(f"synpref eval: wrote {', '.join(written)} to {save}", err=True)
    if as_json:
        click.echo(report_json(report).decode())
    else:
        click.echo(format_table(report))


def report_options(command: Callable) -> Callable:
    return add_options(command, [
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table."),
        click.option("--save", type=click.Path(file_okay=False),
                     help="Write report.json, report.md and PNG plots (per-subset bars; RM-Bench 3x3 heatmaps; "
                          "PPE best-of-K curves) into this directory."),
        click.option("--resamples", type=click.IntRange(min=10), default=1000, show_default=True,
                     help="Bootstrap resamples for the 95% intervals."),
        click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed (intervals are reproducible)."),
    ])


def model_options(command: Callable) -> Callable:
    return add_options(command, [
        click.option("-m", "--model", "models", multiple=True, metavar="[NAME=]PATH",
                     help="Reward model directory (HF layout) or .gguf; repeat to compare models side by side. "
                          "NAME defaults to the last path component."),
        click.option("--engine", type=click.Choice(["torch", "vllm"]), default="torch", show_default=True,
                     help="Score engine (the one `synpref score` uses)."),
        click.option("--batch-tokens", type=click.IntRange(min=1), default=None,
                     help="Token budget of a length-sorted batch (default: synpref score's)."),
        state_cache_option(),
        max_length_option("Truncate inputs to this many tokens, as synpref score does (reward-bench uses 2048; "
                          "long-context reward models need 16384). Default: no limit beyond the model's."),
        click.option("--length-baseline", is_flag=True,
                     help="Add a 'length-baseline' column that prefers the longer reply: a sanity row, since "
                          "several subsets are solvable by length alone."),
    ])


@click.group("eval")
def eval_group() -> None:
    """Evaluate reward models: pairwise accuracy on any pair stream, and the published benchmarks
    (RewardBench v1 and 2, RM-Bench, JudgeBench, PPE, RMB) with each benchmark's own scoring rule.

    Every score comes with a 95% percentile-bootstrap interval (seeded; examples are resampled
    within each subset, and the official combination of subsets is recomputed on every resample).
    Several -m models appear side by side. The benchmark files are not downloaded: fetch them
    yourself and pass --data PATH (a file or a directory).

    --save-scores writes every response's reward as JSON lines {"benchmark": SUBCOMMAND, "model":
    NAME, "id": EXAMPLE_ID, "rewards": [...]}, and --scores reads them back, so a report needs no
    model run; each benchmark's --help gives its example ids and the order of the rewards.

    \b
    Examples:
        synpref eval pairs -m rm/ --length-baseline held-out.jsonl.zst --save report/
        synpref score -m rm/ < pairs.jsonl.zst | synpref eval pairs
        synpref eval rewardbench -m a=ckpt-1/ -m b=ckpt-2/ --data filtered.parquet
        synpref eval merge runs/*/report.json --save merged/
    """


@eval_group.command("pairs")
@stage_options(output=False)
@model_options
@click.option("--by", default="source", show_default=True, metavar="FIELD",
              help="Group pairs by this (dotted) field for the per-subset rows, e.g. extra.bias.")
@click.option("--scored", type=click.Path(dir_okay=False),
              help="Also write the input pairs with the new scores.NAME {chosen, rejected, p} (zstd JSONL), "
                   "so the next evaluation reuses them.")
@report_options
def pairs(stage_options, models, engine, batch_tokens, state_cache, max_length, length_baseline, by, scored, as_json,
          save, resamples, seed) -> None:
    """Pairwise accuracy of reward models on a pair stream, overall and per source.

    A pair counts as right when r(chosen) > r(rejected), as half right on an exact tie. Scores
    already in the input (scores.NAME.chosen / .rejected, as `synpref score` writes them) are reused;
    with -m DIR, pairs missing scores.NAME are scored with the model first (-m NAME alone, not a path,
    only reads scores.NAME). Without -m, every score name found in the input is evaluated. Rows are the pooled accuracy, the unweighted mean over subsets,
    and each subset (--by FIELD). Records that are not pairs are counted and skipped.

    Reward models are order-free: each (conversation, reply) is scored on its own, so a pair has
    no first or second position to swap and no position bias to average out; the pair is scored
    as given.

    \b
    Examples:
        synpref eval pairs -m untrained=rm/ -m trained=run/best --length-baseline held-out.jsonl.zst --save report/
        synpref score -m rm/ --name rm < held-out.jsonl.zst | synpref eval pairs --by extra.bias
    """
    from synpref.eval.pairs import MissingScores
    from synpref.eval.run import ScoringOptions, evaluate_pair_stream, reward_functions

    options = ScoringOptions(engine, batch_tokens, max_length, state_cache=torch_state_cache(state_cache, engine))
    stage = open_stage("eval pairs", stage_options, emits=False)
    try:
        functions = reward_functions(list(models), options, None)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        report = run_stage(stage, lambda: evaluate_pair_stream(stage.records(), functions, by, length_baseline,
                                                               resamples, seed, stage.counts, scored))
    except MissingScores as error:
        raise click.ClickException(str(error)) from None
    _render(report, as_json, save)


# A benchmark's own options, passed by name to its loader or its scorer.
BENCHMARK_OPTIONS: dict[str, list[Callable]] = {
    "rewardbench": [click.option("--prior", multiple=True, type=click.Path(exists=True),
                                 help="pref-test-sets split files (anthropic_helpful*, anthropic_hhh*, shp*, "
                                      "summarize*).")],
    "judgebench": [click.option("--single-game", is_flag=True,
                                help="Score the (A, B) game alone, as run_judge.py --single_game: a reward tie "
                                     "decides B>A (right when the label is B>A). Default: both orders, as "
                                     "run_judge.py by default and the published reward-model outputs, where a "
                                     "tie counts wrong.")],
}


def benchmark_command(benchmark: Benchmark) -> click.Command:
    """One subcommand per benchmark, all with the same model, cache and report options."""
    from synpref.eval.run import SCORES_FILE

    def command(data, models, engine, batch_tokens, state_cache, max_length, length_baseline, scores, save_scores,
                as_json, save, resamples, seed, **benchmark_options: Any) -> None:
        from synpref.eval.common import BenchmarkError
        from synpref.eval.run import ScoringOptions, run_benchmark

        options = ScoringOptions(engine, batch_tokens, max_length, scores, save_scores, length_baseline,
                                 state_cache=torch_state_cache(state_cache, engine))
        try:
            report = run_benchmark(benchmark.name, data, list(models), options, resamples, seed, **benchmark_options)
        except BenchmarkError as error:
            raise click.ClickException(str(error)) from None
        _render(report, as_json, save)

    command.__doc__ = (f"{benchmark.title}\n\n{benchmark.layout}\n\n{SCORES_FILE} {benchmark.scores}\n\n"
                       f"{ORDER_FREE}\n\n" + EXAMPLES.format(name=benchmark.name, data=EXAMPLE_DATA[benchmark.name]))
    command = add_options(command, [
        click.option("--data", multiple=True, required=True, type=click.Path(exists=True),
                     help="Benchmark file or directory in the published layout (repeatable): .json, .jsonl, "
                          ".jsonl.zst, .gz, parquet, as every synpref command reads them."),
        *BENCHMARK_OPTIONS.get(benchmark.name, []),
        click.option("--scores", type=click.Path(exists=True, dir_okay=False),
                     help="Reuse rewards written by --save-scores: without -m every model in the file is reported; "
                          "a -m NAME found there needs no model."),
        click.option("--save-scores", type=click.Path(dir_okay=False),
                     help="Write every response's reward of every model (zstd JSONL: benchmark, model, id, "
                          "rewards; the length baseline is not saved)."),
    ])
    return eval_group.command(benchmark.name)(report_options(model_options(command)))


def _register() -> None:
    from synpref.eval.run import BENCHMARKS

    for benchmark in BENCHMARKS.values():
        benchmark_command(benchmark)


_register()


@eval_group.command("merge")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the merged report as JSON instead of a table.")
@click.option("--save", type=click.Path(file_okay=False), help="Write report.json, report.md and plots here.")
def merge_reports(reports, as_json, save) -> None:
    """Join report.json files of one benchmark computed for different models (one per SLURM task)
    into one side-by-side report.

    \b
    Examples:
        synpref eval merge runs/*/report.json --save merged/
        synpref eval merge a/report.json b/report.json --json | jq .models
    """
    from synpref.eval.report import merge, read_report

    loaded = [read_report(path) for path in reports]
    try:
        merged = merge(loaded)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    _render(merged, as_json, save)
