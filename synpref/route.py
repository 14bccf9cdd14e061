"""`synpref route`: split a scored stream into the pairs the current RM confidently agrees with and
the rest, so that only the rest goes to the LLM judges (SPEC section 4, Stage 2: in the paper about
5M pairs passed the p > 0.5 check and skipped further verification).

Nothing is dropped: every pair goes to exactly one side, unchanged. The unconfident side is the
Stage's second output (its `removed` writer), written without a `reason`: those pairs are not
removed, they go on to `annotate judge` and then to `filter-consistent`. A pair without the score
(or with a malformed one) is a bad record naming the field: routing it to the judges would hide a
wrong --rm name behind an expensive judging run.

Library API::

    from synpref.route import route_records

    confident, unconfident, counts = route_records(records, "rm", threshold=0.5)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from synpref.filter_consistent import THRESHOLD, check_score
from synpref.records import Record, RecordError, is_pair
from synpref.stage import Stage

UNCONFIDENT = "removed"  # the Stage writer the unconfident side goes to


def check_route(record: Record, rm: str) -> None:
    """A pair with a well-formed `scores.RM` (a Stage `check`)."""
    if not is_pair(record):
        raise RecordError("not a pair: route needs chosen and rejected", "chosen")
    if check_score(record, rm) is None:
        raise RecordError(f"missing: score the stream first (`synpref score -m RM --name {rm}`)", f"scores.{rm}")


def route(stage: Stage, rm: str, threshold: float = THRESHOLD) -> None:
    """Write each pair with scores.RM.p > threshold to the Stage's output (confident), the others to its
    `removed` writer (unconfident); counts `confident` and `unconfident`."""
    if not 0.5 <= threshold < 1:
        raise ValueError(f"threshold must be in [0.5, 1), not {threshold}")
    unconfident = stage.writer(UNCONFIDENT)  # opened now, so the file appears even when empty
    for record, original in stage.records_with_bytes(check=lambda record: check_route(record, rm)):
        confident = record["scores"][rm]["p"] > threshold
        stage.counts["confident" if confident else "unconfident"] += 1
        writer = stage.writer() if confident else unconfident
        if original is None:
            writer.write(record)
        else:
            writer.write_line(original)  # unchanged: the input line as read


def route_records(
    records: Iterable[Record], rm: str, threshold: float = THRESHOLD
) -> tuple[list[Record], list[Record], Counter[str]]:
    """The stage as a plain function: (confident, unconfident, counts) of RECORDS."""
    with Stage.over("route", records) as stage:
        route(stage, rm, threshold)
    return stage.outputs(), stage.outputs(UNCONFIDENT), stage.counts
