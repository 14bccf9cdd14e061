"""`synpref score`: add `scores.NAME = {chosen, rejected, p}` to every pair with a reward model.

Scoring is the hot loop of curation Stage 2 (every pair, often with two RMs); the speed lives in the
engines (`synpref.engines`), this module is the stage: records in, records out in input order, the
`scores` entry, and resume after a kill. p = sigmoid(chosen - rejected) is the Bradley-Terry
probability that the current label is right.

Library API (for `eval`, the Stage-2 filter and notebooks)::

    from synpref.score import score_records

    for record in score_records(records, "rm/", name="rm", engine="torch"):   # or a loaded RewardScorer
        ...
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

import orjson

from synpref.engines import Progress
from synpref.engines.reward import Group, GroupReward, RewardScorer
from synpref.io import AppendStream
from synpref.io.resume import resume_path, skip_finished
from synpref.models.reward import sigmoid
from synpref.records import Record, check_pair, is_pair
from synpref.stage import Stage


def score_entry(result: GroupReward) -> dict[str, Any]:
    """The `scores.NAME` entry of a pair, with how its text was truncated when it was."""
    chosen, rejected = result.rewards
    entry: dict[str, Any] = {"chosen": chosen, "rejected": rejected, "p": sigmoid(chosen - rejected)}
    if result.truncated:
        entry["truncated"] = result.truncated
        entry["dropped_turns"] = result.dropped_turns
    return entry


def pair_group(record: Record) -> Group:
    """A pair as the (conversation, [chosen, rejected]) group the scorer takes."""
    if not is_pair(record):
        raise ValueError(f"record {record.get('id')!r} is not a pair (needs chosen and rejected)")
    return record.get("conversation") or [], [record["chosen"], record["rejected"]]


def score_records(
    records: Iterable[Record],
    model: str | os.PathLike | RewardScorer,
    name: str | None = None,
    progress: Progress | None = None,
    **scorer_options: Any,
) -> Iterator[Record]:
    """Each record with `scores.NAME` added (NAME defaults to the model directory's name), in order."""
    scorer = model if isinstance(model, RewardScorer) else RewardScorer(model, **scorer_options)
    name = score_name(scorer, name)
    iterator = iter(records)
    while window := list(islice(iterator, scorer.window)):
        results = scorer.iter_group_rewards(map(pair_group, window), progress)
        for record, result in zip(window, results, strict=True):
            yield {**record, "scores": {**(record.get("scores") or {}), name: score_entry(result)}}


def score_name(scorer: RewardScorer, name: str | None = None) -> str:
    """The key under `scores`: NAME, or the model directory's name."""
    return name or os.path.basename(os.path.normpath(scorer.model_dir))


def score_stage(stage: Stage, scorer: RewardScorer, name: str | None = None) -> str | None:
    """Score a Stage's records to its output; with `-o` resumable after a kill.

    With an output path, finished windows are appended (and fsynced) to `resume_path(output)`; a
    re-run with the same output checks that its input starts with the same record ids, skips those
    records and continues, so windows line up and the result equals an uninterrupted run. At the end
    the resume file becomes the atomic output. Returns the resume file to delete after the stage
    closes (None without an output path, or when nothing was scored). Pairs cut to the model's
    context (or --max-length) are counted as `truncated`.
    """
    # the pairs bar below shows pairs/s and tokens/s; a record that is no pair is a bad record
    records = stage.records(progress=False, check=lambda record: check_pair(record, "score"))
    name = score_name(scorer, name)

    def emit(record: Record) -> None:
        if "truncated" in record["scores"][name]:
            stage.counts["truncated"] += 1
        stage.emit(record)

    if not stage.options.output:
        with _progress_bar(stage, 0) as progress:
            for record in score_records(records, scorer, name, progress):
                emit(record)
        return None
    sidecar = AppendStream(resume_path(stage.options.output), plain=True)
    try:
        done = skip_finished(sidecar, scorer.window, records)
        stage.counts["resumed"] += done
        with _progress_bar(stage, done) as progress:
            window: list[bytes] = []
            for record in score_records(records, scorer, name, progress):
                window.append(orjson.dumps(record))
                if len(window) == scorer.window:
                    sidecar.append(window)
                    window = []
            sidecar.append(window)
        for line in sidecar.lines():
            emit(orjson.loads(line))
    finally:
        sidecar.close(remove_if_empty=True)
    return sidecar.path if os.path.exists(sidecar.path) else None


@contextmanager
def _progress_bar(stage: Stage, done: int) -> Iterator[Progress]:
    """The stage's bar in pairs/s with tokens/s beside it; yields the engines' progress callback."""
    bar = stage.progress_bar(unit="pair", initial=done)
    tokens = 0

    def progress(groups: int, group_tokens: int) -> None:
        nonlocal tokens
        tokens += group_tokens
        elapsed = bar.format_dict["elapsed"] or 1e-9
        bar.set_postfix_str(f"{tokens / elapsed:,.0f} tok/s", refresh=False)
        bar.update(groups)

    try:
        yield progress
    finally:
        bar.close()
