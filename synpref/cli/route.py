from __future__ import annotations

import dataclasses

import click

from synpref.cli.options import open_stage, run_stage, stage_options
from synpref.filter_consistent import THRESHOLD


@click.command()
@stage_options(output=False)
@click.option("--rm", required=True, metavar="NAME", help="The current RM: the scores.NAME entry to route by.")
@click.option("--threshold", type=click.FloatRange(0.5, 1, max_open=True), default=THRESHOLD, show_default=True,
              help="Confident: scores.NAME.p > THRESHOLD.")
@click.option("--confident", type=click.Path(),
              help="Write the confident pairs here atomically (default: stdout).")
@click.option("--unconfident", required=True, type=click.Path(),
              help="Write the other pairs here atomically (always created, even when empty).")
def route(stage_options, rm, threshold, confident, unconfident):
    """Split a scored stream into pairs the current RM confidently agrees with and the rest.

    Stage 2 of Skywork-Reward-V2 sends only the pairs the current best RM is not confident about
    to the LLM judges: a pair with scores.NAME.p > --threshold goes to --confident (it skips the
    judges; in the paper about 5M pairs passed that way), every other pair to --unconfident, to
    be labeled with `annotate judge`. Both sides are then checked by `filter-consistent`.

    Every input pair goes to exactly one side, unchanged (no `reason` is added: nothing is
    removed), so confident + unconfident = read; the counts go to stderr. A pair without
    scores.NAME, or with a malformed one, is a bad record naming the field (file:line: field
    'scores.NAME'; --on-error skip diverts it to --errors): sending it to the judges would hide a
    wrong --rm behind an expensive judging run.

    \b
    Examples:
        synpref score -m rm/ --name rm < pool.jsonl.zst | synpref route --rm rm --confident sure.jsonl.zst --unconfident judge-these.jsonl.zst
        synpref route --rm rm scored.jsonl.zst --unconfident judge-these.jsonl.zst | synpref filter-consistent --gold gold --removed removed.jsonl.zst > kept.jsonl.zst
    """
    from synpref.route import route as route_stage

    options = dataclasses.replace(stage_options, output=confident, removed=unconfident)
    stage = open_stage("route", options)
    run_stage(stage, lambda: route_stage(stage, rm, threshold))
