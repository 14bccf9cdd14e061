"""Retrieval: embedding pairs/s, and the approximate index against exact search on 100K real pairs.

1. Embedding: `synpref retrieve`'s build path (pair_text, each distinct text once, token-budget
   batches) on --embed-pairs real alpacaeval pairs: pairs/s and distinct texts/s.
2. Index: --index-pairs real pool pairs of alpacaeval-pairs (CC BY-NC, read from ../shared, never
   copied into the repository), queried with the next --queries pairs of the file (not in the
   index). The pool's 112K pairs share 805 prompts, so the prompt alone gives 805 distinct vectors
   and ties decide any top 8; this part therefore embeds each pair's prompt *and chosen reply*
   (all real text, truncated to --cache-tokens), so the 100K vectors are distinct. They are cached
   in --cache (an ignored folder) in chunks, resumable, and reused by later runs.
   Peers: numpy brute force (queries @ vectors.T, argpartition) and faiss IndexFlatIP (exact, with
   faiss's defaults and with BLAS for batches, as synpref sets it), against synpref's approximate
   indexes (`synpref.retrieve.vector_index`: HNSW over efSearch, IVF over lists and probes).
   recall@8 is tie-aware (see `recall`); latency is per query in batches of --batch (and one query
   at a time). The last lines size FLAT_MAX: exact search time as the pool grows.

    python benchmarks/bench_retrieve.py                      # ~10 min on 2 cores once the cache exists
    python benchmarks/bench_retrieve.py --index-pairs 20000  # quicker
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "alpacaeval-pairs.jsonl.zst"
CACHE_CHUNK = 2000


def _records(path: str, count: int, start: int = 0) -> list[dict]:
    from synpref.io import read_json_records

    return list(itertools.islice(read_json_records(path), start, start + count))


def bench_embedding(args: argparse.Namespace) -> None:
    from synpref.retrieve import load_embedder, pair_text

    # a stride through the file: pairs of many models, as a pool mixes them
    records = _records(args.data, args.embed_pairs * 7)[:: 7]
    embedder = load_embedder(max_tokens=args.max_tokens)
    texts = [pair_text(record) for record in records]
    embedder.embed(texts[:16])  # warm up
    start = time.perf_counter()
    _, distinct = embedder.embed_distinct(texts)
    seconds = time.perf_counter() - start
    each = time.perf_counter()
    embedder.embed(sorted(set(texts))[:200])
    print(f"embedding, {len(texts):,} alpacaeval pairs ({distinct:,} distinct prompts), {args.max_tokens} tokens: "
          f"{len(texts) / seconds:,.0f} pairs/s, {distinct / seconds:,.1f} distinct texts/s "
          f"({200 / (time.perf_counter() - each):,.1f} texts/s on 200 of them alone)")


def cached_vectors(args: argparse.Namespace, count: int) -> np.ndarray:
    """Embeddings of (prompt + chosen reply) of the file's first COUNT pairs, from the cache or computed."""
    from synpref.io import AtomicFile, read_json_records
    from synpref.records import prompt_text
    from synpref.retrieve import load_embedder

    folder = Path(args.cache) / f"tokens-{args.cache_tokens}"
    folder.mkdir(parents=True, exist_ok=True)
    chunks = math.ceil(count / CACHE_CHUNK)
    missing = [number for number in range(chunks) if not (folder / f"{number:05d}.npy").exists()]
    if missing:
        embedder = load_embedder(max_tokens=args.cache_tokens)
        print(f"embedding {len(missing)} missing chunks of {CACHE_CHUNK} pairs into {folder} (resumable)", flush=True)
        records = read_json_records(args.data)
        for number in range(chunks):
            batch = list(itertools.islice(records, CACHE_CHUNK))
            if number not in missing:
                continue
            started = time.perf_counter()
            vectors, _ = embedder.embed_distinct([f"{prompt_text(r)}\n{r['chosen']}" for r in batch])
            with AtomicFile(str(folder / f"{number:05d}.npy")) as handle:
                np.save(handle, vectors)
            print(f"  chunk {number}: {len(batch) / (time.perf_counter() - started):,.1f} texts/s", flush=True)
    vectors = np.concatenate([np.load(folder / f"{number:05d}.npy") for number in range(chunks)])
    return np.ascontiguousarray(vectors[:count])


def top_k_numpy(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ vectors.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def timed_search(search, queries: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    """All results and milliseconds per query, in batches of BATCH."""
    results = []
    start = time.perf_counter()
    for offset in range(0, len(queries), batch):
        results.append(search(queries[offset : offset + batch]))
    return np.concatenate(results), (time.perf_counter() - start) * 1000 / len(queries)


def recall(found: np.ndarray, queries: np.ndarray, vectors: np.ndarray, kth: np.ndarray) -> float:
    """Tie-aware recall@k (as ann-benchmarks counts it): the share of the k returned vectors at least
    as similar as the exact k-th neighbour (less 1e-5); ids alone would punish picking another of
    several identical vectors, and the pool repeats texts (one reply under several annotators)."""
    k = found.shape[1]
    similarity = np.einsum("qd,qkd->qk", queries, vectors[np.maximum(found, 0)])
    good = (similarity >= kth[:, None] - 1e-5) & (found >= 0)
    return float(good.sum() / (len(found) * k))


def bench_index(args: argparse.Namespace) -> None:
    from synpref.retrieve import vector_index
    from synpref.retrieve.index import (
        BLAS_MIN_QUERIES,
        DEFAULT_EF_SEARCH,
        DEFAULT_NPROBE,
        ivf_lists,
        require_faiss,
    )

    faiss = require_faiss()
    both = cached_vectors(args, args.index_pairs + args.queries)
    vectors, queries = both[: args.index_pairs], both[args.index_pairs :]
    k, n = 8, len(vectors)
    distinct = len(np.unique(vectors, axis=0))
    print(f"\nindex: {n:,} real pool vectors ({distinct:,} distinct; alpacaeval prompt + chosen reply, "
          f"{args.cache_tokens} tokens), {len(queries):,} queries (the next pairs of the file), k = {k}, "
          f"{faiss.omp_get_max_threads()} threads, batches of {args.batch}")
    exact_numpy, numpy_ms = timed_search(lambda q: top_k_numpy(q, vectors, k), queries, args.batch)
    kth = np.einsum("qd,qd->q", queries, vectors[exact_numpy[:, -1]])

    def score(found: np.ndarray, part: np.ndarray = vectors, part_kth: np.ndarray = kth) -> float:
        return recall(found, queries, part, part_kth)

    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    faiss.cvar.distance_compute_blas_threshold = 128_000  # faiss-cpu 1.15's default
    _, default_ms = timed_search(lambda q: flat.search(q, k)[1], queries, args.batch)
    faiss.cvar.distance_compute_blas_threshold = BLAS_MIN_QUERIES
    exact, flat_ms = timed_search(lambda q: flat.search(q, k)[1], queries, args.batch)
    _, flat_one_ms = timed_search(lambda q: flat.search(q, k)[1], queries[:200], 1)
    print(f"  numpy brute force            {numpy_ms:8.3f} ms/query   recall@8 1 (the reference)")
    print(f"  faiss IndexFlatIP, defaults  {default_ms:8.3f} ms/query")
    print(f"  faiss IndexFlatIP, BLAS      {flat_ms:8.3f} ms/query   recall@8 {score(exact):.4f}   one at a time "
          f"{flat_one_ms:.3f} ms   (synpref's flat index)")
    default = (0.0, 0.0, 0.0)
    start = time.perf_counter()
    graph = vector_index(vectors, "hnsw")
    built = time.perf_counter() - start
    for ef_search in (32, 64, 128, 256):
        graph.hnsw.efSearch = ef_search
        found, ms = timed_search(lambda q: graph.search(q, k)[1], queries, args.batch)
        _, one_ms = timed_search(lambda q: graph.search(q, k)[1], queries[:200], 1)
        if ef_search == DEFAULT_EF_SEARCH:
            default = (ms, one_ms, score(found))
        print(f"  hnsw M 32 efSearch {ef_search:4d} {ms:8.3f} ms/query   recall@8 {score(found):.4f}   one at a time "
              f"{one_ms:.3f} ms   (built in {built:.1f} s){'   <- default' if ef_search == DEFAULT_EF_SEARCH else ''}")
    for lists in sorted({int(math.sqrt(n)), ivf_lists(n)}):
        start = time.perf_counter()
        index = vector_index(vectors, "ivf", nlist=lists)
        built = time.perf_counter() - start
        ivf = faiss.extract_index_ivf(index)
        for nprobe in (4, 16, 64):
            ivf.nprobe = nprobe
            found, ms = timed_search(lambda q, index=index: index.search(q, k)[1], queries, args.batch)
            _, one_ms = timed_search(lambda q, index=index: index.search(q, k)[1], queries[:200], 1)
            print(f"  ivf nlist {lists:5d} nprobe {nprobe:3d} {ms:8.3f} ms/query   recall@8 {score(found):.4f}   one at "
                  f"a time {one_ms:.3f} ms   (built in {built:.1f} s)"
                  f"{'   <- ivf default' if lists == ivf_lists(n) and nprobe == DEFAULT_NPROBE else ''}")
    print(f"  default (hnsw): recall@8 {default[2]:.4f}; {flat_ms / default[0]:.1f}x faiss IndexFlatIP (BLAS), "
          f"{default_ms / default[0]:.1f}x IndexFlatIP (defaults), {numpy_ms / default[0]:.1f}x numpy brute "
          f"force (batches); one at a time {flat_one_ms / default[1]:.1f}x IndexFlatIP")
    print("\nexact and hnsw search as the pool grows (FLAT_MAX):")
    for size in (10_000, 25_000, 50_000, 100_000):
        if size > n:
            break
        part = vectors[:size]
        exact_part = top_k_numpy(queries, part, k)
        part_kth = np.einsum("qd,qd->q", queries, part[exact_part[:, -1]])
        index = vector_index(part, "flat")
        _, ms = timed_search(lambda q, index=index: index.search(q, k)[1], queries, args.batch)
        start = time.perf_counter()
        index = vector_index(part, "hnsw")
        built = time.perf_counter() - start
        found, graph_ms = timed_search(lambda q, index=index: index.search(q, k)[1], queries, args.batch)
        print(f"  {size:7,d} vectors: flat {ms:.3f} ms/query; hnsw {graph_ms:.3f} ms/query, "
              f"recall@8 {score(found, part, part_kth):.4f}, built in {built:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--embed-pairs", type=int, default=2000, help="pairs for the embedding speed (0: skip)")
    parser.add_argument("--max-tokens", type=int, default=128, help="token limit of the embedding-speed part")
    parser.add_argument("--index-pairs", type=int, default=100_000, help="pool vectors for the index part (0: skip)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256, help="queries per search call")
    parser.add_argument("--cache", default=str(REPO / ".cache" / "bench-retrieve"))
    parser.add_argument("--cache-tokens", type=int, default=64, help="token limit of the cached index vectors")
    parser.add_argument("--embed-only", action="store_true", help="only fill the vector cache")
    args = parser.parse_args()
    if not os.path.exists(args.data):
        raise SystemExit(f"{args.data} is not there: the shared data set is needed")
    if args.embed_only:
        cached_vectors(args, args.index_pairs + args.queries)
        return
    if args.embed_pairs:
        bench_embedding(args)
    if args.index_pairs:
        bench_index(args)


if __name__ == "__main__":
    main()
