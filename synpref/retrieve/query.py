"""Queries against an index: the paper's adaptive k, and the two ways the results leave.

- `queries` (attach examples): each query record gets `extra.examples`, the ids of its retrieved pool
  pairs, most similar first, and `extra.retrieval = {k, similarity}`; `annotate judge --examples`
  then shows those (human-verified) pairs in the judge's prompt.
- `pool` (expand, Stage 1 step 4): the retrieved pool records themselves, each once however many
  queries pulled it in, in pool order, with `extra.retrieved_by = [{id, similarity}, ...]` naming
  those queries, most similar first. The pool is read again from its files, whose SHA-256 must be
  the one the index was built from.

A query never retrieves a pool pair with its own id (a pair is not its own example).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from synpref.io import files_sha256
from synpref.records import LayoutOptions, Record, RecordError
from synpref.retrieve.build import pool_files
from synpref.retrieve.embed import Embedder, pair_text
from synpref.retrieve.index import Hit, IndexMismatch, RetrievalIndex
from synpref.stage import Stage, StageOptions

DEFAULT_K_MAX = 8
EMITS = ("queries", "pool")
WINDOW = 256  # queries embedded and searched together
K_TOLERANCE = 1e-9  # k_max * (1 - p) within this of an integer is that integer (0.7 is not 0.7 in binary)


def adaptive_k(p: float | None, k_max: int = DEFAULT_K_MAX) -> int:
    """The paper's k: k_max when the RM is wrong or unsure (p <= 0.5, or no RM), else
    ceil(k_max * (1 - p)): the more confidently right the RM is, the fewer pairs to retrieve."""
    if p is None or p <= 0.5:
        return k_max
    return max(0, math.ceil(k_max * (1 - p) - K_TOLERANCE))


def query_p(record: Record, rm: str | None) -> float | None:
    """scores.RM.p of a query (None without an RM); without it, RecordError naming the field."""
    if rm is None:
        return None
    scores = record.get("scores")
    entry = scores.get(rm) if isinstance(scores, dict) else None
    p = entry.get("p") if isinstance(entry, dict) else None
    if p is None:
        raise RecordError(f"missing: score the queries first (synpref score -m RM --name {rm})", f"scores.{rm}.p")
    if type(p) not in (int, float) or not 0 <= p <= 1:
        raise RecordError(f"{p!r} is not a probability", f"scores.{rm}.p")
    return float(p)


def check_query(record: Record, rm: str | None) -> None:
    """A Stage `check`: a query needs a conversation, and scores.RM.p with an RM."""
    pair_text(record)
    query_p(record, rm)


def retrieve_records(
    records: Iterable[Record], index: RetrievalIndex, embedder: Embedder, rm: str | None = None,
    k_max: int = DEFAULT_K_MAX, window: int = WINDOW,
) -> Iterator[tuple[Record, int, list[Hit]]]:
    """(query, k, its k most similar pool pairs) of every query, in input order."""
    index.check_model(embedder.identity)
    iterator = iter(records)
    while batch := list(islice(iterator, window)):
        ks = [adaptive_k(query_p(record, rm), k_max) for record in batch]
        vectors = embedder.embed([pair_text(record) for record in batch])
        found = index.search(vectors, max(ks) + 1)  # one more, in case the query itself is in the pool
        for record, k, hits in zip(batch, ks, found, strict=True):
            own = record.get("id")
            yield record, k, [hit for hit in hits if hit.id != own][:k]


def with_examples(record: Record, k: int, hits: list[Hit]) -> Record:
    """The query with its retrieved pool ids in `extra.examples`."""
    extra = dict(record.get("extra") or {})
    extra["examples"] = [hit.id for hit in hits]
    extra["retrieval"] = {"k": k, "similarity": [round(hit.similarity, 6) for hit in hits]}
    return {**record, "extra": extra}


def checked_pool(index: RetrievalIndex, paths: list[str] | None = None) -> list[str]:
    """The index's pool files (or PATHS, where the pool now lives), refused unless their SHA-256 is
    the one the index was built from."""
    built = index.meta["pool"]
    files = pool_files(paths) if paths else built["files"]
    if not paths and not all(map(os.path.isfile, files)):
        raise FileNotFoundError(f"{index.directory} was built from {', '.join(files)}, which is no longer "
                                "there: give the pool's new place with --pool")
    digest = files_sha256(files, skip_unreadable=True)  # as the query reads it: an unreadable file is counted
    if digest != built["sha256"]:
        raise IndexMismatch(f"the pool {', '.join(files)} (sha256 {digest[:12]}) is not the one {index.directory} "
                            f"was built from (sha256 {built['sha256'][:12]}, {', '.join(built['files'])})")
    return files


def expanded_pool(
    links: dict[int, list[dict[str, Any]]], files: list[str], layouts: dict[str, Any], progress: bool | None = None,
) -> Iterator[Record]:
    """The pool records at the positions in LINKS, in pool order, with `extra.retrieved_by`; the
    pool is read up to the last of them."""
    if not links:
        return
    options = StageOptions(inputs=files, on_error="count", layouts=LayoutOptions(**layouts), progress=progress)
    remaining = len(links)
    with Stage("retrieve (pool)", options, emits=False) as pool:
        for record in pool.records():
            by = links.get(pool.position)
            if by is None:
                continue
            extra = dict(record.get("extra") or {})
            extra["retrieved_by"] = sorted(by, key=lambda link: -link["similarity"])
            yield {**record, "extra": extra}
            remaining -= 1
            if not remaining:
                break
    if remaining:
        raise IndexMismatch(f"{remaining} retrieved pairs were not found in the pool: it reads differently "
                            "from when the index was built")


def retrieve_stage(
    stage: Stage, index: RetrievalIndex, embedder: Embedder, rm: str | None = None, k_max: int = DEFAULT_K_MAX,
    emit: str = "queries", pool: list[str] | None = None,
) -> None:
    """Query the index with the Stage's records and emit the queries with examples or the pool records
    they retrieved. Counts: retrieved (query -> pool links), k_<k> per adaptive k."""
    if emit not in EMITS:
        raise ValueError(f"emit must be one of {', '.join(EMITS)}, not {emit!r}")
    files = checked_pool(index, pool) if emit == "pool" else None
    bar = stage.progress_bar(unit="query")
    links: dict[int, list[dict[str, Any]]] = {}
    queries = stage.records(progress=False, check=lambda record: check_query(record, rm))
    for record, k, hits in retrieve_records(queries, index, embedder, rm, k_max):
        bar.update()
        stage.counts[f"k_{k}"] += 1
        stage.counts["retrieved"] += len(hits)
        if emit == "queries":
            stage.emit(with_examples(record, k, hits))
            continue
        for hit in hits:
            links.setdefault(hit.position, []).append({"id": record.get("id"), "similarity": round(hit.similarity, 6)})
    bar.close()
    if files is not None:
        for record in expanded_pool(links, files, index.meta["layouts"], stage.options.progress):
            stage.emit(record)
