"""Numba kernels that only the benchmarks use: the sketches of `synpref dedupe` fed with shingle
hashes computed beforehand, so that synpref and a peer (rensa) get the very same flat uint64 hashes.

They call the library's own row kernels (synpref.dedupe.kernels), so they measure the code that
`synpref dedupe` runs, without its tokenizing and hashing.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from synpref.dedupe.kernels import _minhash_row, _one_permutation_row, gram_hashes, word_hashes


@njit(cache=True)
def shingle_hash_batch(buffer: np.ndarray, offsets: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Every text's 64-bit shingle hashes in one flat array with row offsets (what sketch_batch
    feeds its sketches; for benchmarks that hand the same shingles to a peer)."""
    records = offsets.shape[0] - 1
    flat = np.empty(offsets[records] - offsets[0] + records, dtype=np.uint64)
    rows = np.zeros(records + 1, dtype=np.int64)
    words = np.empty(flat.shape[0], dtype=np.uint64)
    for i in range(records):
        count = word_hashes(buffer, offsets[i], offsets[i + 1], words)
        rows[i + 1] = rows[i] + gram_hashes(words, count, ngram, flat[rows[i] :])
    return flat[: rows[records]], rows


@njit(cache=True)
def minhash_from_hashes(
    flat: np.ndarray, rows: np.ndarray, a: np.ndarray, b: np.ndarray, signatures: np.ndarray
) -> None:
    for i in range(rows.shape[0] - 1):
        _minhash_row(flat[rows[i] : rows[i + 1]], rows[i + 1] - rows[i], a, b, signatures[i])


@njit(cache=True)
def one_permutation_from_hashes(
    flat: np.ndarray, rows: np.ndarray, mixed_salt: np.uint64, signatures: np.ndarray
) -> None:
    scratch = np.empty(max(1, np.max(np.diff(rows))), dtype=np.uint64)
    for i in range(rows.shape[0] - 1):
        _one_permutation_row(flat[rows[i] : rows[i + 1]], rows[i + 1] - rows[i], mixed_salt, signatures[i], scratch)
