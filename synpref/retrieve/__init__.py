"""`synpref retrieve`: similar pairs from a pool, by embedding, for the paper's error-driven adaptive
retrieval (Stage 1 step 4) and for the human-verified examples of `annotate judge --examples`.

- `embed`: the text a pair is embedded by (conversation + attributes), the model and its identity;
- `build`: a pool embedded in durable, shardable, resumable chunks, then indexed (`build_index`);
- `index`: the finished index folder (faiss, ids, meta) and its checks (`RetrievalIndex`);
- `query`: adaptive k, `retrieve_records`, and the two outputs (`retrieve_stage`).

Library API::

    from synpref.retrieve import RetrievalIndex, load_embedder, retrieve_records

    index, embedder = RetrievalIndex("pool.index"), load_embedder()
    for query, k, hits in retrieve_records(queries, index, embedder, rm="current"):
        print(query["id"], k, [hit.id for hit in hits])
"""

from synpref.retrieve.build import build_index
from synpref.retrieve.embed import DEFAULT_MAX_TOKENS, Embedder, load_embedder, pair_text
from synpref.retrieve.index import Hit, IndexMismatch, RetrievalIndex, vector_index
from synpref.retrieve.query import DEFAULT_K_MAX, EMITS, adaptive_k, retrieve_records, retrieve_stage

__all__ = [
    "DEFAULT_K_MAX",
    "DEFAULT_MAX_TOKENS",
    "EMITS",
    "Embedder",
    "Hit",
    "IndexMismatch",
    "RetrievalIndex",
    "adaptive_k",
    "build_index",
    "load_embedder",
    "pair_text",
    "retrieve_records",
    "retrieve_stage",
    "vector_index",
]
