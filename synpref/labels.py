"""Label streams: human (or any) decisions about pairs, kept apart from the pairs until merged.

A label stream is appended to one decision at a time and made durable at once (write, fsync), so a
killed server or a closed laptop loses nothing. It is JSON Lines like every stream: with a
.jsonl/.json/.ndjson name it is plain text, otherwise each entry is its own zstd frame (the stream
reader reads concatenated frames). `synpref.io.AppendStream` does the writing: a crash can at worst
leave one torn frame at the end, which it cuts off (and reports) when the file is opened again.

Entries are decisions `{"id", "by", "prefers", "meta"}` or undos `{"id", "by", "undo": true, "meta"}`.
Replaying the stream in order gives the final label set: a decision sets the label of (id, by), an
undo removes it. `synpref cat --labels` merges the final set into the pairs' `labels` lists, and
`synpref stats` reports agreement between annotators (Cohen's kappa) and with LLM labels.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from itertools import combinations, product
from typing import Any

import orjson

from synpref.io import AppendStream, StreamError, iter_raw
from synpref.records import PREFERS, Record

DECIDED = ("chosen", "rejected", "tie")  # "unsure" (skipped, undeterminable) is no decision to agree on

Label = dict[str, Any]


def label_problem(entry: Any) -> tuple[str | None, str] | None:
    """What is wrong with one label entry as (field, message), or None when it is well formed."""
    if not isinstance(entry, dict):
        return None, f"expected a JSON object, got {type(entry).__name__}"
    for field in ("id", "by"):
        if not isinstance(entry.get(field), str) or not entry[field]:
            return field, "must be a non-empty string"
    if entry.get("undo") is True:
        return None
    if entry.get("prefers") not in PREFERS:
        return "prefers", f"must be one of {', '.join(PREFERS)} (or the entry must be an undo)"
    if "meta" in entry and not isinstance(entry["meta"], dict):
        return "meta", "must be an object"
    return None


def read_label_entries(path: str) -> Iterator[Label]:
    """Every entry of a label stream in file order, checked; a bad one raises naming file and line."""
    for raw in iter_raw(path):
        entry = raw.parse()
        problem = label_problem(entry)
        if problem is not None:
            raise StreamError(raw.path, raw.line, problem[1], problem[0])
        yield entry


def replay(entries: Iterable[Label]) -> dict[tuple[str, str], Label]:
    """The final label set, keyed by (id, by), in the order the surviving decisions were made."""
    final: dict[tuple[str, str], Label] = {}
    for entry in entries:
        key = (entry["id"], entry["by"])
        final.pop(key, None)  # a new decision for the same key moves to the end
        if not entry.get("undo"):
            final[key] = entry
    return final


def load_labels(paths: Iterable[str]) -> dict[str, list[Label]]:
    """Final labels of one or more label streams, grouped by pair id (entries without their id)."""
    by_id: dict[str, list[Label]] = defaultdict(list)
    for path in paths:
        for (pair_id, _), entry in replay(read_label_entries(path)).items():
            by_id[pair_id].append({key: value for key, value in entry.items() if key != "id"})
    return dict(by_id)


def merge_labels(record: Record, labels: Mapping[str, list[Label]]) -> bool:
    """Add the labels of this record's id to its `labels` list; a label from the same `by` replaces
    the old one, so merging twice changes nothing. Returns whether the record had any."""
    new = labels.get(record.get("id"))  # type: ignore[arg-type]
    if not new:
        return False
    replaced = {label["by"] for label in new}
    kept = [label for label in record.get("labels") or [] if label.get("by") not in replaced]
    record["labels"] = kept + new
    return True


class LabelWriter:
    """Appends label entries to a label stream, each checked, then durable before `append` returns
    (a `synpref.io.AppendStream`: one frame per entry, an exclusive lock while open)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._stream = AppendStream(path)
        except ValueError:
            raise ValueError(f"{path} is being written by another process (another synpref review?)") from None
        self.dropped_tail = self._stream.dropped_tail

    def append(self, entry: Label) -> None:
        problem = label_problem(entry)
        if problem is not None:
            raise ValueError(f"label entry field {problem[0]!r}: {problem[1]}")
        self._stream.append([orjson.dumps(entry)])

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> LabelWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- agreement ----------------------------------------------------------------------------------------

def cohen_kappa(first: list[str], second: list[str]) -> float | None:
    """Cohen's kappa of two annotators' labels on the same items; None when chance agreement is 1
    (both always gave the same single category, so kappa is undefined)."""
    if len(first) != len(second):
        raise ValueError("cohen_kappa needs two label lists of the same length")
    if not first:
        return None
    count = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / count
    first_counts, second_counts = Counter(first), Counter(second)
    expected = sum(first_counts[c] * second_counts[c] for c in first_counts) / (count * count)
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)


def _votes(labels: Iterable[Label]) -> dict[str, str]:
    """One decided label per annotator: the majority of its decided votes (self-consistency samples),
    the first-seen value on a tie of counts."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for label in labels:
        if label.get("prefers") in DECIDED and isinstance(label.get("by"), str):
            counts[label["by"]][label["prefers"]] += 1
    return {by: votes.most_common(1)[0][0] for by, votes in counts.items()}


def _compare(first: list[str], second: list[str]) -> dict[str, Any]:
    kappa = cohen_kappa(first, second)
    agree = sum(a == b for a, b in zip(first, second, strict=True))
    return {"pairs": len(first), "agreement": round(agree / len(first), 4) if first else None,
            "kappa": None if kappa is None else round(kappa, 4)}


class AgreementCounter:
    """Collects, record by record, what human labels are needed to measure agreement; memory grows
    with the human-labeled records only (a gold set), not with the stream."""

    def __init__(self) -> None:
        self._rows: list[dict[str, str]] = []

    def add(self, record: Record) -> None:
        votes = _votes(record.get("labels") or [])
        if any(by.startswith("human:") for by in votes):
            self._rows.append(votes)

    def _compare_annotators(self, couples: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """Agreement of each couple of annotators on the pairs both labelled."""
        result = {}
        for first, second in couples:
            both = [row for row in self._rows if first in row and second in row]
            if both:
                result[f"{first} vs {second}"] = _compare([r[first] for r in both], [r[second] for r in both])
        return result

    def report(self) -> dict[str, Any]:
        """Human vs human (Cohen's kappa on pairs both decided; 'unsure' skips excluded), each human vs
        each LLM judge, and each human vs the stream's current label (how often they prefer `chosen`)."""
        humans = sorted({by for row in self._rows for by in row if by.startswith("human:")})
        judges = sorted({by for row in self._rows for by in row if by.startswith("llm:")})
        result: dict[str, Any] = {}
        pairs = self._compare_annotators(combinations(humans, 2))
        if pairs:
            result["inter_annotator"] = pairs
        with_llm = self._compare_annotators(product(humans, judges))
        if with_llm:
            result["human_vs_llm"] = with_llm
        with_current = {}
        for human in humans:
            sides = [row[human] for row in self._rows if row.get(human) in ("chosen", "rejected")]
            if sides:
                with_current[human] = {"pairs": len(sides),
                                       "agreement": round(sides.count("chosen") / len(sides), 4)}
        if with_current:
            result["human_vs_current_label"] = with_current
        return result
