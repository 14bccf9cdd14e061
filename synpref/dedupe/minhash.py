"""Near-duplicate detection: MinHash signatures over word n-grams, LSH banding, candidate pairs
confirmed by estimated Jaccard, connected components by union-find.

`sketch="minhash"` (default) gives datasketch's signatures bit for bit (same shingle hash);
`sketch="oph"` (one-permutation hashing, optimally densified) hashes each shingle once instead of
once per permutation: 2.4x faster signatures, as close to the true Jaccard similarity as MinHash
on real pairs, but different values than datasketch (see docs/dedupe.md for the study).

Records whose signatures are identical are joined first (their estimated Jaccard is 1 to each other
and equal to any third record), so buckets hold distinct signatures only; the components are those
of the full graph of confirmed candidate pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np

from synpref.dedupe import kernels
from synpref.dedupe.exact import pack_texts
from synpref.records import Record

SKETCHES = ("minhash", "oph")


@dataclass(frozen=True)
class MinHashParams:
    """What must match between the passes of one run (checked when cluster-mode files are merged)."""

    num_perm: int = 128
    ngram: int = 5
    threshold: float = 0.8
    bands: int = 0  # 0: chosen from threshold (see optimal_bands)
    rows: int = 0
    seed: int = 1
    sketch: str = "minhash"  # or "oph"

    def __post_init__(self) -> None:
        if self.sketch not in SKETCHES:
            raise ValueError(f"sketch must be one of {', '.join(SKETCHES)}, got {self.sketch!r}")

    def resolved(self) -> MinHashParams:
        if self.bands and self.rows:
            if self.bands * self.rows > self.num_perm:
                raise ValueError(
                    f"bands x rows = {self.bands * self.rows} exceeds --num-perm {self.num_perm}"
                )
            return self
        bands, rows = optimal_bands(self.threshold, self.num_perm)
        return replace(self, bands=bands, rows=rows)

    def as_dict(self) -> dict:
        return asdict(self)


def _integrate(function, low: float, high: float, steps: int = 200) -> float:
    """Simpson's rule; enough to rank (bands, rows) choices like datasketch's quad does."""
    width = (high - low) / steps
    total = function(low) + function(high)
    for i in range(1, steps):
        total += function(low + i * width) * (4 if i % 2 else 2)
    return total * width / 3


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimizing false positive + false negative probability mass around the
    threshold, the same criterion as datasketch MinHashLSH (equal weights)."""
    best, choice = float("inf"), (1, num_perm)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            false_positive = _integrate(lambda s, r=rows, b=bands: 1 - (1 - s**r) ** b, 0.0, threshold)
            false_negative = _integrate(lambda s, r=rows, b=bands: (1 - s**r) ** b, threshold, 1.0)
            if false_positive + false_negative < best:
                best, choice = false_positive + false_negative, (bands, rows)
    return choice


def shingle_text(record: Record, key: str = "pair") -> str:
    """The lower-cased text whose word n-grams are the record's shingles under `key`."""
    parts = []
    if key in ("pair", "prompt"):
        parts.extend(message["content"] for message in record.get("conversation", []))
    if key in ("pair", "chosen-rejected"):
        parts.extend(
            value for value in (record.get("chosen"), record.get("rejected")) if isinstance(value, str)
        )
    return "\n".join(parts).lower()


PACK_CHARS = 1 << 22  # texts packed per kernel call: the buffer stays in cache and its memory is reused


def signatures(texts: Sequence[str], params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """(n, num_perm) uint32 signatures and shingle counts (0: no words, never a near duplicate).

    Texts go to the kernel in slices of about PACK_CHARS characters: packing the whole input into
    one fresh buffer costs page faults and cache misses that made it 15-20% slower (measured).
    """
    a, b = kernels.permutations(params.num_perm, params.seed)
    one_permutation, mixed_salt = params.sketch == "oph", np.uint64(kernels.salt(params.seed))
    out = np.empty((len(texts), params.num_perm), dtype=np.uint32)
    counts = np.empty(len(texts), dtype=np.int64)
    start = 0
    while start < len(texts):
        end, size = start + 1, len(texts[start])
        while end < len(texts) and size < PACK_CHARS:
            size += len(texts[end])
            end += 1
        buffer, offsets = pack_texts(texts[start:end])
        counts[start:end] = kernels.sketch_batch(
            buffer, offsets, params.ngram, one_permutation, a, b, mixed_salt, out[start:end]
        )
        start = end
    return out, counts


def _identical_rows(sigs: np.ndarray, parent: np.ndarray) -> None:
    """Union records with identical signatures (verified value by value, not by hash)."""
    full = kernels.band_hashes(sigs, 1, sigs.shape[1])[:, 0]
    order = np.argsort(full, kind="stable").astype(np.int64)
    kernels.confirm_bucket_pairs(order, full, sigs, 1.0, parent, np.empty((0, 2), np.int64), False)


def components(sigs: np.ndarray, params: MinHashParams) -> np.ndarray:
    """For each row of `sigs`, the first row of its near-duplicate component. Reorders `sigs` in
    place (rows of identical signatures are dropped from the front part) to stay within one copy."""
    params = params.resolved()
    parent = np.arange(sigs.shape[0], dtype=np.int64)
    if sigs.shape[0] < 2:
        return parent
    _identical_rows(sigs, parent)
    heads = np.flatnonzero(kernels.roots(parent) == np.arange(sigs.shape[0]))
    kernels.compact_rows(sigs, heads)
    distinct = sigs[: heads.shape[0]]
    local = np.arange(heads.shape[0], dtype=np.int64)
    bands = kernels.band_hashes(distinct, params.bands, params.rows)
    for band in range(params.bands):
        column = np.ascontiguousarray(bands[:, band])
        order = np.argsort(column, kind="stable").astype(np.int64)
        kernels.confirm_bucket_pairs(
            order, column, distinct, params.threshold, local, np.empty((0, 2), np.int64), False
        )
    local_roots = kernels.roots(local)
    parent[heads] = heads[local_roots]
    return kernels.roots(parent)


def candidate_pairs(sigs: np.ndarray, params: MinHashParams) -> set[tuple[int, int]]:
    """Every pair (i < j) that shares an LSH bucket and whose estimated Jaccard >= threshold; for
    checks against a reference (quadratic in bucket sizes, unlike `components`)."""
    params = params.resolved()
    bands = kernels.band_hashes(sigs, params.bands, params.rows)
    found: set[tuple[int, int]] = set()
    for band in range(params.bands):
        column = np.ascontiguousarray(bands[:, band])
        order = np.argsort(column, kind="stable").astype(np.int64)
        capacity = 1 << 16
        while True:
            edges = np.empty((capacity, 2), dtype=np.int64)
            parent = np.arange(sigs.shape[0], dtype=np.int64)
            written = kernels.confirm_bucket_pairs(order, column, sigs, params.threshold, parent, edges, True)
            if written >= 0:
                break
            capacity *= 4
        found.update(map(tuple, edges[:written].tolist()))
    return found
