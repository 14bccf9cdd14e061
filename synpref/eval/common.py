"""What every benchmark shares: the `Example` a loader produces, model names, and reward caches.

A benchmark example is one conversation with the responses a reward model scores independently
(2 for pairs, 4 for RewardBench 2, 6 for RM-Bench, up to 32 for PPE best-of-K); `meta` holds what the
scorer needs (labels, which responses are correct). Rewards live apart from the examples, per model,
so several models and cached rewards combine freely.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from synpref.io import RecordWriter, StreamError, expand_paths, iter_raw
from synpref.io.streams import STREAM_SUFFIXES
from synpref.records import Message, RecordError, check_messages

Rewards = dict[str, list[list[float]]]  # model name -> per example, the reward of each response


@dataclass
class Example:
    id: str
    group: str
    conversation: list[Message]
    responses: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


class BenchmarkError(ValueError):
    """A benchmark file that does not match the published layout; the message names file and row."""


def model_name(spec: str) -> tuple[str, str]:
    """`NAME=PATH` or `PATH` (named after its last path component) -> (name, path)."""
    if "=" in spec and not os.path.exists(spec):
        name, path = spec.split("=", 1)
        return name, path
    return os.path.basename(os.path.normpath(spec)) or spec, spec


def rows(paths: Iterable[str]) -> Iterator[tuple[str, int, dict]]:
    """(file, row number, row) for every row the stream layer reads: .json arrays, JSONL, zstd or gzip
    JSONL, parquet, whatever their names; directories walked in sorted order, as every stage reads them.
    A null field counts as absent: a parquet file of mixed rows (RMB's pairwise and best-of-N items, PPE
    rows with and without question_id) holds every column in every row. No paths: no rows (the stream
    layer would read stdin; an option such as --prior left out must not)."""
    paths = list(paths)
    try:
        for path in expand_paths(paths) if paths else []:
            for raw in iter_raw(path):
                row = raw.parse()
                if not isinstance(row, dict):
                    raise BenchmarkError(f"{path}:{raw.line}: expected a JSON object, got {type(row).__name__}")
                yield path, raw.line, {key: value for key, value in row.items() if value is not None}
    except StreamError as error:
        raise BenchmarkError(str(error)) from None


def file_stem(path: str) -> str:
    """A data file's name without its stream suffixes (`shp-00000.jsonl.zst` -> `shp-00000`): names derived
    from it (set names, ids) stay the same when the file is recompressed or converted."""
    name = os.path.basename(path)
    while name.endswith(STREAM_SUFFIXES) and "." in name[1:]:
        name = name[:name.rindex(".")]
    return name


def need(row: dict, key: str, where: str) -> Any:
    if key not in row:
        raise BenchmarkError(f"{where}: missing field '{key}' (have: {', '.join(sorted(row)) or 'nothing'})")
    return row[key]


def messages(value: Any, where: str, field_name: str) -> list[Message]:
    """A prompt given as a string or as a list of {role, content} messages (extra keys dropped)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        cleaned = [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m for m in value]
        try:
            return check_messages(cleaned, field_name)
        except RecordError as error:
            raise BenchmarkError(f"{where}: field '{error.field}': {error}") from None
    raise BenchmarkError(f"{where}: field '{field_name}' must be a string or a message list")


def strings(value: Any, where: str, field_name: str, count: int | None = None) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BenchmarkError(f"{where}: field '{field_name}' must be a list of strings")
    if count is not None and len(value) != count:
        raise BenchmarkError(f"{where}: field '{field_name}' must hold {count} responses, has {len(value)}")
    return value


def missing_note(expected: list[str], present: Iterable[str], averaged: str) -> list[str]:
    """A report note when --data lacks some of a benchmark's domains: the headline scores then average
    the ones present and are not comparable with the published all-domain scores."""
    have = set(present)
    missing = [name for name in expected if name not in have]
    if not missing:
        return []
    return [f"--data has no examples of {', '.join(missing)}: {averaged} over "
            f"{', '.join(name for name in expected if name in have)} only, not comparable with the full benchmark"]


# How many example ids an error about a --scores file lists.
FIRST_IDS = 5


def load_rewards(path: str, benchmark: str) -> Rewards:
    """Rewards saved by --save-scores: rows {benchmark, model, id, rewards}; rows of other benchmarks are
    skipped, and a file with none for BENCHMARK is an error naming the benchmarks it holds."""
    found: dict[str, dict[str, list[float]]] = {}
    others: set[str] = set()
    for file, line, row in rows([path]):
        where = f"{file}:{line}"
        tag = str(need(row, "benchmark", where))
        if tag != benchmark:
            others.add(tag)
            continue
        values = need(row, "rewards", where)
        if not isinstance(values, list) or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                                   for x in values):
            raise BenchmarkError(f"{where}: field 'rewards' must be a list of numbers, one per response")
        found.setdefault(str(need(row, "model", where)), {})[str(need(row, "id", where))] = [float(x) for x in values]
    if not found:
        if others:
            raise BenchmarkError(f"--scores {path}: these are scores for benchmark {', '.join(sorted(others))}, "
                                 f"not {benchmark}")
        raise BenchmarkError(f"--scores {path}: the file holds no scores")
    return found  # type: ignore[return-value]


def check_unique_ids(examples: list[Example], benchmark: str) -> None:
    """Saved rewards are keyed by example id, so ids that repeat would mix two examples' rewards."""
    repeated = [sample_id for sample_id, count in Counter(e.id for e in examples).items() if count > 1]
    if repeated:
        raise BenchmarkError(f"{len(repeated):,} {benchmark} example ids repeat in --data (first: "
                             f"{', '.join(map(repr, repeated[:FIRST_IDS]))}); --scores and --save-scores match "
                             "rewards to examples by id, so ids must be unique (is a file given twice?)")


def coverage_gap(saved: dict[str, list[float]], examples: list[Example]) -> str | None:
    """None when SAVED holds one reward per response for every example, else what is missing or
    miscounted: the counts and the first ids, so the user can tell which --data the scores came from."""
    missing = [e.id for e in examples if e.id not in saved]
    miscounted = [f"{e.id!r} has {len(saved[e.id])} rewards for {len(e.responses)} responses"
                  for e in examples if e.id in saved and len(saved[e.id]) != len(e.responses)]
    gaps = []
    if missing:
        gaps.append(f"{len(missing):,} of {len(examples):,} examples have no rewards (first ids: "
                    f"{', '.join(map(repr, missing[:FIRST_IDS]))})")
    if miscounted:
        gaps.append(f"{len(miscounted):,} have the wrong number ({'; '.join(miscounted[:FIRST_IDS])})")
    return "; ".join(gaps) or None


def save_rewards(path: str, benchmark: str, examples: list[Example], rewards: Rewards) -> None:
    with RecordWriter(path) as writer:
        for model, per_example in rewards.items():
            for example, values in zip(examples, per_example, strict=True):
                writer.write({"benchmark": benchmark, "model": model, "id": example.id, "rewards": values})
