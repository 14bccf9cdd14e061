"""The finished index of `synpref retrieve`: one folder, written atomically file by file, read back
with everything a query must check.

    DIR/vectors.faiss   the faiss index over the pool's embeddings, rows in pool order
    DIR/ids.npz         the pool ids (utf-8 blob + offsets) and input positions of those rows
    DIR/meta.json       written last, so its presence means the index is whole: the format, the
                        pool's files and SHA-256, the layout options it was read with, the
                        embedding model's name, weights SHA-256, token limit and text format, the
                        index kind and its search settings

The index is exact (`IndexFlatIP`: inner products of L2-normalized vectors, i.e. cosine) up to
FLAT_MAX vectors and a graph (`IndexHNSWFlat`, inner product) above; an inverted file
(`IndexIVFFlat`) is the other choice. docs/retrieve.md has the measurements behind FLAT_MAX and the
search settings.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from synpref.io import AtomicFile, write_atomic
from synpref.io.ids import pack_ids, unpack_id

FORMAT = "synpref-retrieve/1"
KINDS = ("auto", "flat", "hnsw", "ivf")
# Above this many vectors `auto` builds an HNSW index. bench_retrieve.py, 384-d MiniLM vectors of real
# pairs, one core, batches of 256 queries: exact search costs 0.15-0.23 ms a query at 10K vectors,
# 0.65-1.1 ms at 50K, 1.0-2.3 ms at 100K (two runs). Embedding one query costs about 10 ms on two
# cores, so below 50K an
# approximate index saves under a tenth of a query's cost, for a build of seconds and a recall below 1.
FLAT_MAX = 50_000
# HNSW (the default approximate index): recall@8 0.988 at 100K alpacaeval vectors (0.16 ms a query,
# 12.5x exact search) and 0.9975 for the paraphrase queries of the 10K test pool; the IVF below reached
# 1.0 on the first but 0.956 on the second (hand-written paraphrases are far from every pool vector
# but one, and their lists are not always among the probed ones).
HNSW_M = 32  # neighbours per node: 0.971 recall at efSearch 64 with M 32, 0.958 with M 16
HNSW_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 128  # candidates kept while searching: higher is slower and closer to exact
LISTS_PER_SQRT = 4.0  # IVF lists = 4 sqrt(n), faiss's usual guideline
MIN_PER_LIST = 39  # fewer training vectors per list than this and faiss warns that k-means is underfed
DEFAULT_NPROBE = 16  # IVF lists searched: 0.27 ms a query at 100K, recall 1.0 there, 0.956 on paraphrases
TRAIN_PER_LIST = 64  # k-means training sample: 64 vectors per list
# faiss-cpu 1.15 uses BLAS for exact search only from 128,000 queries a call; below that each query
# streams every vector from memory: 19 ms per query at 100K vectors against 1-2 ms with BLAS
# (bench_retrieve.py, batches of 256, one core). 20 was faiss's default before.
BLAS_MIN_QUERIES = 20
META, VECTORS, IDS = "meta.json", "vectors.faiss", "ids.npz"


class IndexMismatch(ValueError):
    """An index, a build folder or a pool that belongs to another pool or another embedding model."""


def require_faiss() -> Any:
    """faiss, set to compute exact inner products of query batches with BLAS (see BLAS_MIN_QUERIES)."""
    try:
        import faiss
    except ImportError:
        raise RuntimeError("synpref retrieve needs faiss-cpu: pip install 'synpref[retrieve]'") from None
    faiss.cvar.distance_compute_blas_threshold = BLAS_MIN_QUERIES
    return faiss


def ivf_lists(count: int) -> int:
    return max(1, min(int(LISTS_PER_SQRT * math.sqrt(count)), count // MIN_PER_LIST))


def vector_index(vectors: np.ndarray, kind: str = "auto", nlist: int | None = None,
                 nprobe: int = DEFAULT_NPROBE, ef_search: int = DEFAULT_EF_SEARCH, seed: int = 0) -> Any:
    """A faiss inner-product index over VECTORS (rows L2-normalized): exact up to FLAT_MAX rows for
    `auto`, else HNSW; or IVF with NLIST lists (default 4 sqrt(n)) trained on a seeded sample."""
    faiss = require_faiss()
    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {', '.join(KINDS)}, not {kind!r}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    if kind == "flat" or (kind == "auto" and count <= FLAT_MAX):
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return index
    if kind in ("auto", "hnsw"):
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = ef_search
        index.add(vectors)
        return index
    lists = min(nlist or ivf_lists(count), count)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    sample = min(count, TRAIN_PER_LIST * lists)
    rows = np.sort(np.random.default_rng(seed).choice(count, sample, replace=False)) if sample < count else None
    index.train(vectors if rows is None else vectors[rows])
    index.add(vectors)
    index.nprobe = min(nprobe, lists)
    return index


def index_settings(index: Any) -> dict[str, Any]:
    """What meta.json says about a faiss index: its kind and search settings."""
    faiss = require_faiss()
    if isinstance(index, faiss.IndexHNSW):
        return {"kind": "hnsw", "m": HNSW_M, "ef_search": int(index.hnsw.efSearch)}
    ivf = faiss.try_extract_index_ivf(index) if not isinstance(index, faiss.IndexFlat) else None
    if ivf is None:
        return {"kind": "flat"}
    return {"kind": "ivf", "nlist": int(ivf.nlist), "nprobe": int(ivf.nprobe)}


def write_index(directory: str, index: Any, ids: list[str], positions: np.ndarray, meta: dict[str, Any]) -> None:
    """Write a finished index; meta.json goes last, so a killed write leaves no index that looks whole."""
    faiss = require_faiss()
    blob, offsets = pack_ids(ids)
    blob = np.frombuffer(blob, dtype=np.uint8)
    with AtomicFile(os.path.join(directory, VECTORS)) as handle:
        faiss.write_index(index, faiss.PyCallbackIOWriter(handle.write))
    with AtomicFile(os.path.join(directory, IDS)) as handle:
        np.savez(handle, id_blob=blob, id_offsets=offsets, positions=np.asarray(positions, dtype=np.int64))
    meta = {"format": FORMAT, **meta, "index": index_settings(index), "count": len(ids)}
    write_atomic(os.path.join(directory, META), json.dumps(meta, indent=1).encode() + b"\n")


def read_meta(directory: str) -> dict[str, Any] | None:
    """meta.json of a finished index, None when DIR holds none; another format is an IndexMismatch."""
    path = os.path.join(directory, META)
    if not os.path.isfile(path):
        return None
    meta = json.loads(open(path, "rb").read())
    if meta.get("format") != FORMAT:
        raise IndexMismatch(f"{path}: not a {FORMAT} index (format {meta.get('format')!r})")
    return meta


def describe_model(model: dict[str, Any]) -> str:
    return (f"{model['name']} (weights sha256 {model['sha256'][:12]}, {model['max_tokens']} tokens, "
            f"text {model['text']})")


@dataclass
class Hit:
    """One retrieved pool pair: its row in the index, id, input position and cosine similarity."""

    row: int
    id: str
    position: int
    similarity: float


class RetrievalIndex:
    """A finished index folder, loaded for queries."""

    def __init__(self, directory: str, nprobe: int | None = None, ef_search: int | None = None):
        faiss = require_faiss()
        meta = read_meta(directory)
        if meta is None:
            building = " (a build in progress has parts/ there: run the build again to finish it)" \
                if os.path.isdir(os.path.join(directory, "parts")) else ""
            raise FileNotFoundError(f"{directory} holds no finished index{building}; build one with "
                                    f"`synpref retrieve --pool POOL --index {directory}`")
        self.directory, self.meta = directory, meta
        self.index = faiss.read_index(os.path.join(directory, VECTORS))
        with np.load(os.path.join(directory, IDS)) as data:
            self.id_blob, self.id_offsets, self.positions = data["id_blob"], data["id_offsets"], data["positions"]
        if nprobe is not None and meta["index"]["kind"] == "ivf":
            faiss.extract_index_ivf(self.index).nprobe = nprobe
        if ef_search is not None and meta["index"]["kind"] == "hnsw":
            self.index.hnsw.efSearch = ef_search

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def check_model(self, identity: dict[str, Any]) -> None:
        """Refuse to compare vectors from two models (or two text formats, or token limits)."""
        built = self.meta["model"]
        if {key: built[key] for key in ("sha256", "max_tokens", "text")} != \
                {key: identity[key] for key in ("sha256", "max_tokens", "text")}:
            raise IndexMismatch(f"{self.directory} was built with {describe_model(built)}; this run embeds "
                                f"with {describe_model(identity)}: pass the index's model with --model, or "
                                "build another index")

    def record_id(self, row: int) -> str:
        return unpack_id(self.id_blob, self.id_offsets, row)

    def search(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """The K most similar pool pairs of each query vector, most similar first."""
        if k <= 0 or not len(vectors):
            return [[] for _ in range(len(vectors))]
        similarity, rows = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        return [[Hit(int(row), self.record_id(int(row)), int(self.positions[row]), float(score))
                 for row, score in zip(row_list, score_list, strict=True) if row >= 0]
                for row_list, score_list in zip(rows, similarity, strict=True)]
