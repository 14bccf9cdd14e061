"""`synpref cat`: concatenate, convert to canonical records, take the head or a reproducible sample,
merge label streams."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

from synpref.labels import Label, merge_labels
from synpref.records import Record

T = TypeVar("T")


def head(records: Iterable[T], count: int) -> Iterator[T]:
    return itertools.islice(records, count)


def reservoir_sample(records: Iterable[T], count: int, seed: int = 0) -> list[T]:
    """A uniform sample of `count` records in one pass (Algorithm R), returned in input order.

    The same seed and input give the same sample, so a sample can be re-drawn on another machine.
    """
    rng = random.Random(seed)
    reservoir: list[tuple[int, T]] = []
    for position, record in enumerate(records):
        if position < count:
            reservoir.append((position, record))
        else:
            slot = rng.randint(0, position)
            if slot < count:
                reservoir[slot] = (position, record)
    reservoir.sort(key=lambda item: item[0])
    return [record for _, record in reservoir]


def cat_stream(
    items: Iterable[tuple[Record, bytes | None]],
    head_count: int | None = None,
    sample_count: int | None = None,
    seed: int = 0,
    labels: Mapping[str, list[Label]] | None = None,
    counts: Counter[str] | None = None,
) -> Iterator[tuple[Record, bytes | None]]:
    """The stage over (record, input line) items (`Stage.records_with_bytes`): the first
    HEAD_COUNT, then a reproducible sample, then LABELS merged by id (counted as `labeled`; a
    labeled record loses its input line, since it changed)."""
    if head_count is not None:
        items = head(items, head_count)
    if sample_count is not None:
        items = reservoir_sample(items, sample_count, seed)
    counts = Counter() if counts is None else counts
    if labels is not None:
        counts["labeled"] += 0  # shown even when no id matched: a wrong label file is visible
    for record, original in items:
        if labels is not None and merge_labels(record, labels):
            counts["labeled"] += 1
            original = None
        yield record, original


def cat_records(
    records: Iterable[Record],
    head_count: int | None = None,
    sample_count: int | None = None,
    seed: int = 0,
    labels: Mapping[str, list[Label]] | None = None,
) -> list[Record]:
    """`cat_stream` as a plain function over records."""
    items = cat_stream(((record, None) for record in records), head_count, sample_count, seed, labels)
    return [record for record, _ in items]
