"""The dedupe decisions as three passes, and the one-process run built from them.

    scan (signatures, per shard)  ->  decide (clusters, once)  ->  apply (filter, per shard)

`scan` turns records into fixed-size facts (content status, benchmark match, 128-bit exact key,
MinHash signature, id) keyed by each record's position in the concatenated input; `decide` sorts all
facts by position and picks every record's fate; `apply` re-reads records and routes them to kept or
--removed. Because the decision only depends on the facts sorted by position, N shards give exactly
what one process gives. Texts are never held: the one-process run reads its inputs twice (stdin is
spooled to a temporary zstd file). `synpref.dedupe.workdir` stores the passes' results in a work
folder for the sharded cluster mode; `dedupe_records` is the whole stage over records in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synpref.dedupe.decontaminate import BenchmarkIndex, user_turns_text
from synpref.dedupe.exact import KEYS, key_hashes, normalized_key
from synpref.dedupe.minhash import MinHashParams, components, shingle_text, signatures
from synpref.io import StreamError
from synpref.io.ids import pack_ids, unpack_id
from synpref.records import Record, pair_problems
from synpref.stage import Stage, Verdict

KEPT, CONTENT, CONTAMINATED, EXACT, NEAR = range(5)
BATCH = 2048


@dataclass
class DedupeConfig:
    """Everything that decides a record's fate; cluster-mode files must agree on it."""

    key: str = "pair"
    exact: bool = True
    near: bool = True
    keep: str = "first"
    minhash: MinHashParams = field(default_factory=MinHashParams)
    decontaminate: list[str] = field(default_factory=list)
    decontaminate_ngram: int = 13

    def __post_init__(self) -> None:
        if self.key not in KEYS:
            raise ValueError(f"key must be one of {', '.join(KEYS)}, got {self.key!r}")
        if self.keep not in ("first", "longest"):
            raise ValueError(f"keep must be first or longest, got {self.keep!r}")
        self.minhash = self.minhash.resolved()

    def fingerprint(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "exact": self.exact,
            "near": self.near,
            "keep": self.keep,
            "minhash": self.minhash.as_dict(),
            "decontaminate": [os.path.basename(path) for path in self.decontaminate],
            "decontaminate_ngram": self.decontaminate_ngram,
        }


@dataclass
class Facts:
    """What the clusters pass needs about each record, in input order; no texts."""

    positions: np.ndarray
    status: np.ndarray  # KEPT, CONTENT or CONTAMINATED
    benchmark: np.ndarray  # index into benchmark names, -1
    hashes: np.ndarray  # (n, 2) uint64 exact keys
    sig_chunks: list[np.ndarray]  # (m, num_perm) uint32 blocks, consumed by decide()
    shingles: np.ndarray  # shingle count; 0: no words
    lengths: np.ndarray  # characters of the shingle text (--keep longest)
    id_blob: bytes
    id_offsets: np.ndarray

    def record_id(self, row: int) -> str:
        return unpack_id(self.id_blob, self.id_offsets, row)

    @classmethod
    def concat(cls, parts: list[Facts]) -> Facts:
        """Merge shards and sort by position (the one order every mode agrees on)."""
        positions = np.concatenate([part.positions for part in parts])
        order = np.argsort(positions, kind="stable")
        ids = [part.record_id(row) for part in parts for row in range(len(part.positions))]
        blob, offsets = pack_ids([ids[i] for i in order])
        sigs = np.concatenate([np.concatenate(part.sig_chunks) for part in parts])[order] if parts else None
        return cls(
            positions[order],
            np.concatenate([part.status for part in parts])[order],
            np.concatenate([part.benchmark for part in parts])[order],
            np.concatenate([part.hashes for part in parts])[order],
            [sigs],
            np.concatenate([part.shingles for part in parts])[order],
            np.concatenate([part.lengths for part in parts])[order],
            blob,
            offsets,
        )


class _SignatureStore:
    """Signatures in chunks of CHUNK_BYTES: big enough that malloc maps each one separately, so
    decide() hands every chunk back to the system as soon as it has copied it."""

    CHUNK_BYTES = 64 << 20

    def __init__(self, width: int):
        self.width = width
        self.rows = max(1, self.CHUNK_BYTES // max(1, 4 * width))
        self.full: list[np.ndarray] = []
        self.current = np.empty((0, width), dtype=np.uint32)
        self.filled = 0

    def append(self, block: np.ndarray) -> None:
        start = 0
        while start < block.shape[0]:
            if self.filled == self.current.shape[0]:
                if self.current.shape[0]:
                    self.full.append(self.current)
                self.current, self.filled = np.empty((self.rows, self.width), dtype=np.uint32), 0
            take = min(block.shape[0] - start, self.current.shape[0] - self.filled)
            self.current[self.filled : self.filled + take] = block[start : start + take]
            self.filled += take
            start += take

    def chunks(self) -> list[np.ndarray]:
        return [*self.full, self.current[: self.filled]]


def scan(
    records: Iterable[tuple[int, Record, bytes | None]],
    config: DedupeConfig,
    benchmark: BenchmarkIndex | None = None,
) -> Facts:
    """Pass 1: the facts of every (position, record, input line) of `Stage.positioned()`."""
    columns: dict[str, list] = {
        name: [] for name in ("positions", "status", "benchmark", "hashes", "shingles", "lengths")
    }
    store = _SignatureStore(config.minhash.num_perm if config.near else 0)
    ids = bytearray()
    id_ends: list[int] = [0]
    batch: list[tuple[int, Record]] = []

    def flush() -> None:
        if not batch:
            return
        recs = [record for _, record in batch]
        status = np.array([CONTENT if pair_problems(r) else KEPT for r in recs], dtype=np.uint8)
        matched = np.full(len(recs), -1, dtype=np.int64)
        if benchmark is not None:
            matched = benchmark.matches([user_turns_text(r) for r in recs])
            status[(status == KEPT) & (matched >= 0)] = CONTAMINATED
            matched[status != CONTAMINATED] = -1
        texts = [shingle_text(r, config.key) for r in recs]
        if config.near:
            sigs, counts = signatures(texts, config.minhash)
        else:
            sigs, counts = np.empty((len(recs), 0), np.uint32), np.zeros(len(recs), np.int64)
        columns["positions"].append(np.array([p for p, _ in batch], dtype=np.int64))
        columns["status"].append(status)
        columns["benchmark"].append(matched)
        columns["hashes"].append(key_hashes([normalized_key(r, config.key) for r in recs]))
        columns["shingles"].append(counts.astype(np.int64))
        columns["lengths"].append(np.array([len(t) for t in texts], dtype=np.int64))
        store.append(sigs)
        for record in recs:
            ids.extend(str(record.get("id", "")).encode("utf-8", "surrogatepass"))
            id_ends.append(len(ids))
        batch.clear()

    for position, record, _ in records:
        batch.append((position, record))
        if len(batch) >= BATCH:
            flush()
    flush()
    sig_chunks = store.chunks()
    empty = {
        "positions": np.int64,
        "status": np.uint8,
        "benchmark": np.int64,
        "shingles": np.int64,
        "lengths": np.int64,
    }
    merged = {
        name: np.concatenate(parts) if parts else np.empty(0, empty.get(name, np.uint64))
        for name, parts in columns.items()
    }
    if not columns["hashes"]:
        merged["hashes"] = np.empty((0, 2), np.uint64)
    return Facts(
        merged["positions"],
        merged["status"],
        merged["benchmark"],
        merged["hashes"],
        sig_chunks,
        merged["shingles"],
        merged["lengths"],
        bytes(ids),
        np.array(id_ends, dtype=np.int64),
    )


@dataclass
class Decisions:
    """Every record's fate: reason code and reference (a representative's position, or a benchmark
    index for CONTAMINATED); ids of the referenced representatives; benchmark names."""

    positions: np.ndarray
    reason: np.ndarray
    ref: np.ndarray
    ref_ids: dict[int, str]
    benchmarks: list[tuple[str, str]]

    def counts(self) -> dict[str, int]:
        names = ("kept", "content", "contaminated", "exact_duplicate", "near_duplicate")
        found = np.bincount(self.reason, minlength=len(names))
        return {name: int(count) for name, count in zip(names, found, strict=True)}


def _take_rows(chunks: list[np.ndarray], rows: np.ndarray, width: int) -> np.ndarray:
    """Rows (sorted) of the concatenation of `chunks`, freeing each chunk once copied (peak memory
    stays one signature matrix plus one chunk)."""
    out = np.empty((rows.shape[0], width), dtype=np.uint32)
    start = filled = 0
    while chunks:
        chunk = chunks.pop(0)
        stop = start + chunk.shape[0]
        mine = rows[(rows >= start) & (rows < stop)]
        out[filled : filled + mine.shape[0]] = chunk[mine - start]
        filled += mine.shape[0]
        start = stop
    return out


def decide(facts: Facts, config: DedupeConfig, benchmarks: list[tuple[str, str]] | None = None) -> Decisions:
    """Pass 2: content and benchmark status from the scan, then exact duplicates (first occurrence
    kept), then near-duplicate components among the survivors. Consumes facts.sig_chunks."""
    reason = facts.status.copy()
    ref = np.where(reason == CONTAMINATED, facts.benchmark, -1).astype(np.int64)
    positions = facts.positions
    if config.exact:
        rows = np.flatnonzero(reason == KEPT)
        order = rows[np.lexsort((positions[rows], facts.hashes[rows, 1], facts.hashes[rows, 0]))]
        keys = facts.hashes[order]
        starts = np.ones(order.shape[0], dtype=bool)
        starts[1:] = np.any(keys[1:] != keys[:-1], axis=1)
        first = order[np.maximum.accumulate(np.where(starts, np.arange(order.shape[0]), 0))]
        dropped = ~starts
        reason[order[dropped]] = EXACT
        ref[order[dropped]] = positions[first[dropped]]
    if config.near and facts.sig_chunks:
        rows = np.flatnonzero((reason == KEPT) & (facts.shingles > 0))
        sigs = _take_rows(facts.sig_chunks, rows, config.minhash.num_perm)
        root = rows[components(sigs, config.minhash)]
        del sigs
        representative = root
        if config.keep == "longest":
            order = np.lexsort((positions[rows], -facts.lengths[rows], root))
            group_first = np.ones(order.shape[0], dtype=bool)
            group_first[1:] = root[order[1:]] != root[order[:-1]]
            best = {int(root[order[i]]): int(rows[order[i]]) for i in np.flatnonzero(group_first)}
            representative = np.array([best[int(r)] for r in root], dtype=np.int64)
        dropped = representative != rows
        reason[rows[dropped]] = NEAR
        ref[rows[dropped]] = positions[representative[dropped]]
    facts.sig_chunks.clear()
    referenced = np.unique(ref[(reason == EXACT) | (reason == NEAR)])
    row_of = np.searchsorted(positions, referenced)
    ref_ids = {int(p): facts.record_id(int(r)) for p, r in zip(referenced, row_of, strict=True)}
    return Decisions(positions, reason, ref, ref_ids, list(benchmarks or []))


def verdict(decisions: Decisions, position: int, record: Record) -> Verdict:
    """The fate of the record at POSITION, with its reason and the id it duplicates."""
    row = int(np.searchsorted(decisions.positions, position))
    if row >= decisions.positions.shape[0] or decisions.positions[row] != position:
        raise StreamError(
            "input",
            None,
            f"record {record.get('id')!r} at position {position} has no decision: "
            "the inputs changed since the signatures pass",
        )
    reason, ref = int(decisions.reason[row]), int(decisions.ref[row])
    if reason == KEPT:
        return Verdict(True)
    if reason == CONTENT:
        problems = pair_problems(record)
        return Verdict(False, problems[0], {"problems": problems} if len(problems) > 1 else {})
    if reason == CONTAMINATED:
        benchmark_id, benchmark_file = decisions.benchmarks[ref]
        return Verdict(False, "contaminated", {"benchmark_id": benchmark_id, "benchmark_file": benchmark_file})
    name = "exact_duplicate" if reason == EXACT else "near_duplicate"
    return Verdict(False, name, {"duplicate_of": decisions.ref_ids[ref]})


def apply(records: Iterable[tuple[int, Record, bytes | None]], decisions: Decisions, stage: Stage) -> None:
    """Pass 3: route every (position, record, original line or None) to kept or removed."""
    for position, record, original in records:
        stage.route(record, verdict(decisions, position, record), original)


def load_benchmarks(config: DedupeConfig) -> BenchmarkIndex | None:
    if not config.decontaminate:
        return None
    return BenchmarkIndex.from_files(config.decontaminate, config.decontaminate_ngram)


def dedupe(stage: Stage, config: DedupeConfig) -> Decisions:
    """The one-process run: scan, decide, then read the inputs again and route. The Stage must be
    opened with `rereadable=True`."""
    benchmark = load_benchmarks(config)
    decisions = decide(scan(stage.positioned(), config, benchmark), config, benchmark.names if benchmark else None)
    apply(stage.reread(), decisions, stage)
    return decisions


def dedupe_records(
    records: Iterable[Record], config: DedupeConfig | None = None
) -> tuple[list[Record], list[Record]]:
    """The stage as a plain function: (kept, removed with `reason`) of RECORDS (held in memory)."""
    with Stage.over("dedupe", records) as stage:
        dedupe(stage, config or DedupeConfig())
    return stage.outputs(), stage.outputs("removed")
