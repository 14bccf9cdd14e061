"""`synpref retrieve` on real pairs and the real all-MiniLM-L6-v2: adaptive k, build and query,
refusals, resumable and sharded builds, expansion, and the Bar: paraphrased prompts find their
originals among 10K real pool pairs."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
import zstandard

from synpref.cli import cli
from synpref.io import read_json_records, write_records
from synpref.records import RecordError
from synpref.retrieve import RetrievalIndex, adaptive_k, build_index, load_embedder, pair_text, vector_index
from synpref.retrieve.query import query_p
from synpref.stage import Stage, StageOptions

FIXTURES = Path(__file__).parent / "fixtures" / "retrieve"
EXAMPLES = Path(__file__).parent.parent / "examples" / "data"
POOL = "evalbiasbench.jsonl.zst"  # 80 real pairs, 79 distinct prompts: a pool that embeds in a second


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An index of the real evalbiasbench pool, built once through the CLI."""
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("retrieve")
    pool = root / POOL
    shutil.copy(EXAMPLES / POOL, pool)
    result = CliRunner().invoke(cli, ["retrieve", "--pool", str(pool), "--index", str(root / "idx")])
    assert result.exit_code == 0, result.output
    return pool, root / "idx", result.output


def _queries(path: Path, records: list[dict]) -> str:
    write_records(records, str(path))
    return str(path)


# -- adaptive k ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("p", "k"), [(0, 8), (0.5, 8), (0.51, 4), (0.99, 1), (1, 0), (0.75, 2), (None, 8)])
def test_adaptive_k_at_the_papers_points(p, k):
    assert adaptive_k(p, 8) == k


def test_adaptive_k_is_not_fooled_by_binary_fractions():
    assert 10 * (1 - 0.7) > 3  # 3.0000000000000004: a plain ceil would give 4
    assert adaptive_k(0.7, 10) == 3 and adaptive_k(0.7000001, 10) == 3 and adaptive_k(0.69, 10) == 4
    assert [adaptive_k(p / 100, 8) for p in range(50, 101, 10)] == [8, 4, 3, 2, 1, 0]


def test_query_p_names_the_missing_field():
    assert query_p({"scores": {"rm": {"p": 0.25}}}, "rm") == 0.25 and query_p({}, None) is None
    with pytest.raises(RecordError, match="missing: score the queries first") as caught:
        query_p({"id": "q", "scores": {"other": {"p": 0.3}}}, "rm")
    assert caught.value.field == "scores.rm.p"
    with pytest.raises(RecordError, match="not a probability"):
        query_p({"id": "q", "scores": {"rm": {"p": 1.5}}}, "rm")


def test_pair_text_is_the_conversation_led_by_the_attributes():
    record = {"id": "a", "conversation": [{"role": "user", "content": "Sort a list in C."},
                                          {"role": "assistant", "content": "Which sort?"},
                                          {"role": "user", "content": "Quicksort."}]}
    assert pair_text(record) == "Sort a list in C.\nWhich sort?\nQuicksort."
    record["attributes"] = {"task_category": "coding", "objectivity": "objective", "controversiality": "low",
                            "desired_attributes": ["correct", "concise"], "guideline": "Check the code runs."}
    assert pair_text(record) == ("[coding | objective | low controversiality | correct, concise]\n"
                                 "Sort a list in C.\nWhich sort?\nQuicksort.\nGuideline: Check the code runs.")
    with pytest.raises(RecordError, match="embedded by its conversation") as caught:
        pair_text({"id": "b", "prompt": "x"})
    assert caught.value.field == "conversation"


def test_cutting_long_texts_before_tokenizing_changes_no_embedding(embedder, monkeypatch):
    replies = [record["chosen"] for record in read_json_records(str(EXAMPLES / "llmbar.jsonl.zst"))]
    long_texts = ["\n".join(replies[start : start + 60]) for start in (0, 60)]  # real text, tens of KB
    engine = embedder.engine
    assert all(len(text) > 4 * engine.max_length * 16 for text in long_texts)
    assert all(len(engine._head(text)) < len(text) for text in long_texts)
    cut = embedder.embed(long_texts)
    monkeypatch.setattr(engine, "_head", lambda text: text)
    np.testing.assert_array_equal(cut, embedder.embed(long_texts))


# -- build and query -----------------------------------------------------------------------------
def test_build_and_query_round_trip_on_real_pairs(runner, tmp_path, built, embedder):
    pool_path, index_dir, output = built
    pool = list(read_json_records(str(pool_path)))
    meta = json.loads((index_dir / "meta.json").read_text())
    assert meta["count"] == len(pool) and meta["index"] == {"kind": "flat"}
    assert meta["pool"]["sha256"] == hashlib.sha256(pool_path.read_bytes()).hexdigest()
    assert meta["model"]["name"] == "all-MiniLM-L6-v2" and meta["model"]["max_tokens"] == 128
    assert f"{len(pool)} pairs (flat)" in output and not (index_dir / "parts").exists()

    ps = [0, 0.3, 0.5, 0.51, 0.6, 0.75, 0.9, 0.99, 1.0, 0.2]
    queries = [{**record, "id": f"q{n}", "scores": {"rm": {"chosen": 0, "rejected": 0, "p": p}}}
               for n, (record, p) in enumerate(zip(pool[::8], ps, strict=True))]
    queries.append(pool[3])  # a pool pair as a query: never its own example
    out = tmp_path / "out.jsonl"
    result = runner.invoke(cli, ["retrieve", "--index", str(index_dir), "--queries",
                                 _queries(tmp_path / "q.jsonl", queries[:-1]), "--rm", "rm", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "read 10" in result.output and "k_8 4" in result.output and "k_0 1" in result.output
    results = list(read_json_records(str(out)))
    vectors = embedder.embed([pair_text(record) for record in pool])
    by_id = {record["id"]: record for record in pool}
    for query, result_record in zip(queries[:-1], results, strict=True):
        k = adaptive_k(query["scores"]["rm"]["p"])
        examples, similarity = result_record["extra"]["examples"], result_record["extra"]["retrieval"]["similarity"]
        assert len(examples) == k == result_record["extra"]["retrieval"]["k"]
        assert {key: value for key, value in result_record.items() if key != "extra"} == \
            {key: value for key, value in query.items() if key != "extra"}
        exact = np.sort(vectors @ embedder.embed([pair_text(query)])[0])[::-1][:k]  # numpy brute force
        np.testing.assert_allclose(similarity, exact, atol=1e-4)
        if k:  # the pool pair the query was copied from is its nearest
            assert by_id[examples[0]]["conversation"] == query["conversation"] and similarity[0] > 0.999

    alone = runner.invoke(cli, ["retrieve", "--index", str(index_dir), "--queries",
                                _queries(tmp_path / "own.jsonl", [queries[-1]]), "-o", str(tmp_path / "own.out.jsonl")])
    assert alone.exit_code == 0, alone.output
    (own,) = read_json_records(str(tmp_path / "own.out.jsonl"))
    assert len(own["extra"]["examples"]) == 8 and pool[3]["id"] not in own["extra"]["examples"]


def test_approximate_indexes_searching_everything_answer_as_the_exact_one(runner, tmp_path, built, examples):
    pool_path, flat_dir, _ = built
    result = runner.invoke(cli, ["retrieve", "--pool", str(pool_path), "--index", str(tmp_path / "ivf"),
                                 "--index-type", "ivf", "--nlist", "4", "--nprobe", "4"])
    assert result.exit_code == 0 and "80 pairs (ivf, nlist 4, nprobe 4)" in result.output
    graph = runner.invoke(cli, ["retrieve", "--pool", str(pool_path), "--index", str(tmp_path / "hnsw"),
                                "--index-type", "hnsw"])
    assert graph.exit_code == 0 and "80 pairs (hnsw, m 32, ef_search 128)" in graph.output
    queries = _queries(tmp_path / "q.jsonl", list(read_json_records(str(examples / "hhh-alignment.jsonl.zst")))[::25])
    found = {}
    for name, directory, probes in (("flat", flat_dir, []), ("ivf", tmp_path / "ivf", []),
                                    ("hnsw", tmp_path / "hnsw", []), ("one", tmp_path / "ivf", ["--nprobe", "1"])):
        out = tmp_path / f"{name}.jsonl"
        assert runner.invoke(cli, ["retrieve", "--index", str(directory), "--queries", queries, *probes,
                                   "-o", str(out)]).exit_code == 0
        found[name] = [record["extra"]["retrieval"]["similarity"] for record in read_json_records(str(out))]
    np.testing.assert_allclose(found["ivf"], found["flat"], atol=1e-5)
    np.testing.assert_allclose(found["hnsw"], found["flat"], atol=1e-5)  # efSearch 128 > 80 pairs
    assert found["one"] != found["flat"]  # one list of four misses some of the exact neighbours


def test_queries_without_the_rm_score_fail_naming_the_field(runner, tmp_path, built):
    _, index_dir, _ = built
    path = _queries(tmp_path / "q.jsonl", [{"id": "q1", "conversation": [{"role": "user", "content": "Hi"}]}])
    result = runner.invoke(cli, ["retrieve", "--index", str(index_dir), "--queries", path, "--rm", "gold"])
    assert result.exit_code == 1 and f"{path}:1: field 'scores.gold.p': missing" in result.output
    positional = runner.invoke(cli, ["retrieve", "--index", str(index_dir), path, "--rm", "gold", "--on-error", "skip",
                                     "--errors", str(tmp_path / "errors.jsonl"), "-o", str(tmp_path / "out.jsonl")])
    assert positional.exit_code == 0 and "errors 1" in positional.output
    assert [(e["line"], e["field"]) for e in read_json_records(str(tmp_path / "errors.jsonl"))] == [(1, "scores.gold.p")]
    stdin = runner.invoke(cli, ["retrieve", "--index", str(index_dir), "--k-max", "2"], input=open(path, "rb").read())
    (record,) = [orjson.loads(line) for line in zstandard.ZstdDecompressor().decompressobj()
                 .decompress(stdin.stdout_bytes).splitlines()]  # stdout is zstd when not a terminal
    assert stdin.exit_code == 0 and len(record["extra"]["examples"]) == 2


def test_a_malformed_pool_line_is_located_or_diverted(runner, tmp_path, examples):
    good = list(read_json_records(str(examples / POOL)))[:3]
    path = tmp_path / "pool.jsonl"
    path.write_text(f"{orjson.dumps(good[0]).decode()}\n{{\"id\": \"broken\", \n{orjson.dumps(good[1]).decode()}\n")
    failed = runner.invoke(cli, ["retrieve", "--pool", str(path), "--index", str(tmp_path / "idx")])
    assert failed.exit_code == 1 and f"{path}:2: malformed JSON" in failed.output
    skipped = runner.invoke(cli, ["retrieve", "--pool", str(path), "--index", str(tmp_path / "idx"), "--on-error",
                                  "skip", "--errors", str(tmp_path / "errors.jsonl")])
    assert skipped.exit_code == 0 and "errors 1" in skipped.output and "2 pairs (flat)" in skipped.output
    assert [error["line"] for error in read_json_records(str(tmp_path / "errors.jsonl"))] == [2]


def test_index_refuses_another_pool_and_another_model(runner, tmp_path, built, examples):
    pool_path, index_dir, _ = built
    other = runner.invoke(cli, ["retrieve", "--pool", str(examples / "hhh-alignment.jsonl.zst"), "--index",
                                str(index_dir)])
    assert other.exit_code == 1 and "holds an index of another pool" in other.output
    again = runner.invoke(cli, ["retrieve", "--pool", str(pool_path), "--index", str(index_dir)])
    assert again.exit_code == 0 and "up_to_date 80" in again.output

    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    queries = _queries(tmp_path / "q.jsonl", list(read_json_records(str(examples / "hhh-alignment.jsonl.zst")))[:2])
    changed = tmp_path / "changed.jsonl"
    changed.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in list(read_json_records(str(pool_path)))[:79]))
    given = runner.invoke(cli, ["retrieve", "--index", str(copy), "--queries", queries, "--emit", "pool",
                                "--pool", str(changed)])
    assert given.exit_code == 1 and "holds an index of another pool" in given.output
    meta = json.loads((copy / "meta.json").read_text())
    meta["pool"]["files"] = [str(changed)]  # the pool file changed where it lies since the build
    (copy / "meta.json").write_text(json.dumps(meta))
    edited = runner.invoke(cli, ["retrieve", "--index", str(copy), "--queries", queries, "--emit", "pool"])
    assert edited.exit_code == 1 and "is not the one" in edited.output and "kept" not in edited.output
    assert attached_still_works(runner, copy, queries)

    meta["model"]["sha256"] = "0" * 64  # an index built with another model
    (copy / "meta.json").write_text(json.dumps(meta))
    refused = runner.invoke(cli, ["retrieve", "--index", str(copy), "--queries", queries])
    assert refused.exit_code == 1 and "was built with all-MiniLM-L6-v2 (weights sha256 000000000000" in refused.output


def attached_still_works(runner, index_dir: Path, queries: str) -> bool:
    """Attaching ids needs only the index, not the pool's records."""
    return runner.invoke(cli, ["retrieve", "--index", str(index_dir), "--queries", queries]).exit_code == 0


# -- resume and shards ---------------------------------------------------------------------------
class Killed(BaseException):
    """Stands for SIGKILL in the middle of a build (nothing below the build catches it)."""


class DyingEmbedder:
    """The real embedder, killed on its Nth call."""

    def __init__(self, embedder, calls: int):
        self.inner, self.calls, self.identity = embedder, calls, embedder.identity

    def embed_distinct(self, texts, progress=None):
        self.calls -= 1
        if self.calls < 0:
            raise Killed
        return self.inner.embed_distinct(texts, progress)


def _build(pool: str, directory: Path, embedder, **options) -> Stage:
    shard = options.pop("shard", None)
    with Stage("retrieve", StageOptions(inputs=[pool], shard=shard), emits=False) as stage:
        build_index(stage, str(directory), embedder, chunk=16, **options)
    return stage


def _contents(directory: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    index = RetrievalIndex(str(directory))
    vectors = index.index.reconstruct_n(0, len(index))
    return vectors, [index.record_id(row) for row in range(len(index))], index.positions


def test_a_killed_build_resumes_to_the_same_index(tmp_path, examples, embedder):
    pool = str(examples / POOL)
    _build(pool, tmp_path / "whole", embedder)
    with pytest.raises(Killed):
        _build(pool, tmp_path / "killed", DyingEmbedder(embedder, calls=2))
    part = tmp_path / "killed" / "parts" / "00000-of-00001"
    assert sorted(path.name for path in part.glob("chunk-*.npz")) == ["chunk-000000.npz", "chunk-000001.npz"]
    assert not (tmp_path / "killed" / "meta.json").exists()
    with pytest.raises(FileNotFoundError, match="no finished index .*parts/"):
        RetrievalIndex(str(tmp_path / "killed"))
    resumed = _build(pool, tmp_path / "killed", embedder)
    assert resumed.counts["resumed"] == 32 and resumed.counts["embedded"] == 48
    assert (tmp_path / "killed" / "vectors.faiss").read_bytes() == (tmp_path / "whole" / "vectors.faiss").read_bytes()
    whole, again = _contents(tmp_path / "whole"), _contents(tmp_path / "killed")
    assert whole[1] == again[1] == [r["id"] for r in read_json_records(pool)]
    np.testing.assert_array_equal(whole[2], again[2])


def test_sharded_build_gives_the_one_process_index(runner, tmp_path, examples, built, embedder):
    from synpref.io import Shard

    pool = str(built[0])
    _build(pool, tmp_path / "sharded", embedder, shard=Shard(0, 2))
    early = runner.invoke(cli, ["retrieve", "--pool", pool, "--index", str(tmp_path / "sharded")])
    assert early.exit_code == 1 and "1 of 2 parts are not finished (--shard 1/2)" in early.output
    result = runner.invoke(cli, ["retrieve", "--pool", pool, "--index", str(tmp_path / "sharded"), "--shard", "1/2"])
    assert result.exit_code == 0 and "part 1/2" in result.output and "read 40" in result.output
    final = runner.invoke(cli, ["retrieve", "--pool", pool, "--index", str(tmp_path / "sharded")])
    assert final.exit_code == 0 and "80 pairs (flat)" in final.output
    one, sharded = _contents(built[1]), _contents(tmp_path / "sharded")
    assert one[1] == sharded[1] and np.array_equal(one[2], sharded[2])
    np.testing.assert_allclose(one[0], sharded[0], atol=1e-5)  # other batches, the same vectors
    other = runner.invoke(cli, ["retrieve", "--pool", str(examples / "mtbench-gpt4-pairs.jsonl.zst"), "--index",
                                str(tmp_path / "other"), "--shard", "0/2"])
    assert other.exit_code == 0
    mixed = runner.invoke(cli, ["retrieve", "--pool", pool, "--index", str(tmp_path / "other"), "--shard", "1/2"])
    assert mixed.exit_code == 1 and "holds an unfinished build of another pool" in mixed.output


# -- expand --------------------------------------------------------------------------------------
def test_expand_emits_each_pool_pair_once_with_the_queries_that_pulled_it(runner, tmp_path, built, examples):
    pool_path, index_dir, _ = built
    hhh = list(read_json_records(str(examples / "hhh-alignment.jsonl.zst")))
    queries = [{**record, "scores": {"rm": {"chosen": 0, "rejected": 0, "p": p}}}
               for record, p in zip(hhh[::20], [0.1, 0.9, 0.4, 1.0, 0.3, 0.6, 0.2, 0.45, 0.8, 0.5, 0.05, 0.7],
                                    strict=True)]
    path = _queries(tmp_path / "q.jsonl", queries)
    common = ["retrieve", "--index", str(index_dir), "--queries", path, "--rm", "rm", "--k-max", "6"]
    assert runner.invoke(cli, [*common, "-o", str(tmp_path / "attached.jsonl")]).exit_code == 0
    expanded = runner.invoke(cli, [*common, "--emit", "pool", "-o", str(tmp_path / "pool.jsonl")])
    assert expanded.exit_code == 0, expanded.output
    pulled: dict[str, dict[str, float]] = {}
    for query in read_json_records(str(tmp_path / "attached.jsonl")):
        for pool_id, similarity in zip(query["extra"]["examples"], query["extra"]["retrieval"]["similarity"],
                                       strict=True):
            pulled.setdefault(pool_id, {})[query["id"]] = similarity
    links = sum(len(by) for by in pulled.values())
    assert links > len(pulled)  # some pool pairs were retrieved by several queries
    records = list(read_json_records(str(tmp_path / "pool.jsonl")))
    ids = [record["id"] for record in records]
    pool = {record["id"]: record for record in read_json_records(str(pool_path))}
    assert sorted(ids) == sorted(pulled) and len(set(ids)) == len(ids)
    assert ids == [pool_id for pool_id in pool if pool_id in pulled]  # pool order
    for record in records:
        by = record["extra"].pop("retrieved_by")
        assert {link["id"]: link["similarity"] for link in by} == pulled[record["id"]]
        assert [link["similarity"] for link in by] == sorted((link["similarity"] for link in by), reverse=True)
        assert record == pool[record["id"]]
    assert f"kept {len(pulled)}" in expanded.output and f"retrieved {links}" in expanded.output


# -- the Bar: retrieval finds the topic ----------------------------------------------------------
PERMISSIVE_PAIRS = ["hh-harmless-base-test", "llmbar", "pandalm-test", "evalbiasbench", "hhh-alignment",
                    "mtbench-gpt4-pairs"]
POOL_SIZE = 10_000


def ten_thousand_pairs(shared: Path) -> list[dict]:
    """Every pair of the small permissive files (4,740) and an even spread of arena-bench-v1 pairs
    (all 299 of its prompts) up to 10,000 real pairs: 3,987 distinct prompts."""
    pairs = [record for name in PERMISSIVE_PAIRS for record in read_json_records(str(shared / f"{name}.jsonl.zst"))]
    arena = list(read_json_records(str(shared / "arena-bench-v1-score-pairs.jsonl.zst")))
    need = POOL_SIZE - len(pairs)
    return pairs + [arena[i * len(arena) // need] for i in range(need)]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


@pytest.mark.slow
def test_a_paraphrased_prompt_finds_its_original_among_10k_real_pairs(runner, tmp_path, shared):
    """100 hand-written paraphrases of single-turn prompts drawn at random (seed 15) from the pool's
    15-600 character ones; a hit is a top-8 pool pair with the original's conversation (a pool
    holds several pairs per prompt). Embedded at 64 tokens to keep the 3,987 texts cheap on CPU
    (measured: the same 98% at 128)."""
    pairs = ten_thousand_pairs(shared)
    assert len(pairs) == POOL_SIZE == len({record["id"] for record in pairs})
    pool = tmp_path / "pool.jsonl.zst"
    write_records(pairs, str(pool))
    paraphrases = [orjson.loads(line) for line in (FIXTURES / "paraphrases.jsonl").read_bytes().splitlines()]
    by_id = {record["id"]: record for record in pairs}
    originals = [by_id[row["id"]]["conversation"] for row in paraphrases]
    assert len(paraphrases) == 100 and all(len(conversation) == 1 for conversation in originals)
    overlap = [len(_words(row["paraphrase"]) & _words(original[0]["content"]))
               / len(_words(row["paraphrase"]) | _words(original[0]["content"]))
               for row, original in zip(paraphrases, originals, strict=True)]
    assert all(row["paraphrase"] != original[0]["content"] for row, original in zip(paraphrases, originals, strict=True))
    assert np.mean(overlap) < 0.4  # re-worded, not copied (measured 0.31 word Jaccard)

    queries = _queries(tmp_path / "q.jsonl", [{"id": f"paraphrase-{n}", "conversation": [
        {"role": "user", "content": row["paraphrase"]}]} for n, row in enumerate(paraphrases)])
    out = tmp_path / "out.jsonl"
    result = runner.invoke(cli, ["retrieve", "--pool", str(pool), "--index", str(tmp_path / "idx"), "--max-tokens",
                                 "64", "--chunk", "10000", "--queries", queries, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "distinct_texts 3987" in result.output and "10000 pairs (flat)" in result.output
    hits = [any(by_id[pool_id]["conversation"] == original for pool_id in query["extra"]["examples"])
            for query, original in zip(read_json_records(str(out)), originals, strict=True)]
    print(f"paraphrase hit rate @8 on {POOL_SIZE} real pairs: {sum(hits) / len(hits):.2f}")
    assert sum(hits) / len(hits) >= 0.9

    # the HNSW that `auto` builds above 50K pairs, on these 3,987 diverse prompts: tie-aware recall@8
    exact = RetrievalIndex(str(tmp_path / "idx"))
    vectors = exact.index.reconstruct_n(0, len(exact))
    approximate = vector_index(vectors, "hnsw")
    asked = load_embedder(max_tokens=64).embed([row["paraphrase"] for row in paraphrases])
    kth = exact.index.search(asked, 8)[0][:, -1]
    found = approximate.search(asked, 8)[1]
    recall = float(np.mean(np.einsum("qd,qkd->qk", asked, vectors[found]) >= kth[:, None] - 1e-5))
    print(f"hnsw (efSearch {approximate.hnsw.efSearch}) recall@8: {recall:.4f}")
    assert recall >= 0.95
