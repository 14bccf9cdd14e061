"""`synpref dedupe`: kernels against their references and datasketch, exact dedup against a dict,
near duplicates against datasketch MinHashLSH, decontamination, conservation, bad input."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from synpref.cli import cli
from synpref.dedupe import kernels
from synpref.dedupe.decontaminate import BenchmarkIndex, user_turns_text
from synpref.dedupe.exact import key_hashes, normalized_key, pack
from synpref.dedupe.minhash import MinHashParams, candidate_pairs, components, shingle_text, signatures
from synpref.io import read_json_records, write_records
from synpref.records import normalize, pair_problems

PAIR_FILES = (
    "pandalm-test.jsonl.zst",
    "llmbar.jsonl.zst",
    "hh-harmless-base-test.jsonl.zst",
    "evalbiasbench.jsonl.zst",
    "arena-bench-v1-score-pairs.jsonl.zst",
    "hhh-alignment.jsonl.zst",
)


def load(paths: list[Path]) -> list[dict]:
    return [normalize(row) for path in paths for row in read_json_records(str(path))]


def run_cli(runner, args: list[str], input: bytes | None = None):
    result = runner.invoke(cli, ["dedupe", *args], input=input)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def by_id(path: Path) -> dict[str, dict]:
    """Records of an output by id; a --removed file only appears once something was removed."""
    return {record["id"]: record for record in read_json_records(str(path))} if path.exists() else {}


# -- kernels ---------------------------------------------------------------------------------------
def test_kernels_match_references_on_real_text(examples):
    records = load([examples / "llmbar.jsonl.zst"])[:120]
    texts = [shingle_text(record, "pair") for record in records]
    params = MinHashParams(num_perm=64, ngram=5)
    sigs, counts = signatures(texts, params)
    a, b = kernels.permutations(64, 1)
    hashes = key_hashes(texts)
    for row, text in enumerate(texts):
        data = text.encode()
        assert np.array_equal(sigs[row], kernels.ref_minhash(data, 5, a, b))
        assert counts[row] == len(kernels.ref_shingles(data, 5))
        assert tuple(int(h) for h in hashes[row]) == kernels.ref_murmur3_128(data)


def test_word_hashes_at_block_edges_and_long_words():
    """Words that cross the kernel's 64-byte blocks, longer than a block, non-ASCII, at the ends."""
    texts = ["a" * n for n in range(0, 150, 7)]
    texts += [" " * n + "b" * m + ".c" for n in range(0, 70, 9) for m in range(1, 140, 13)]
    texts += ["\u00e9t\u00e9 " * 30, "x" * 1000 + " y", "-" * 64 + "z" * 64]
    sigs, counts = signatures(texts, MinHashParams(num_perm=16, ngram=1))
    a, b = kernels.permutations(16, 1)
    for row, text in enumerate(texts):
        assert counts[row] == len(kernels.ref_shingles(text.encode(), 1))
        assert np.array_equal(sigs[row], kernels.ref_minhash(text.encode(), 1, a, b)), text[:40]


def test_one_permutation_kernel_matches_reference(examples):
    """Long and short real texts (a few shingles: most bins densified), no words, bins not a power
    of two, two seeds."""
    records = load([examples / "llmbar.jsonl.zst"])[:60]
    texts = [shingle_text(record, "pair") for record in records]
    texts += [text[:n] for text in texts[:5] for n in (1, 20, 60, 200)] + ["", "... !!!"]
    for bins, seed in ((128, 1), (100, 7)):
        sigs, counts = signatures(texts, MinHashParams(num_perm=bins, sketch="oph", seed=seed))
        for row, text in enumerate(texts):
            expected = kernels.ref_one_permutation(text.encode(), 5, bins, seed)
            assert np.array_equal(sigs[row], expected), (bins, seed, text[:40])
            assert counts[row] == len(kernels.ref_shingles(text.encode(), 5))
    short = signatures(["one two three four five six"], MinHashParams(sketch="oph"))[0][0]
    assert len(set(short.tolist())) == 2  # two shingles fill the densified bins between them


def test_word_and_gram_hashes_on_every_byte_value():
    """The vector word-byte mask classifies all 256 byte values like the reference regex (upper case,
    NUL, punctuation and every byte >= 0x80 included), and the gram passes match the polynomial for
    every n, fewer words than n included."""
    rng = np.random.default_rng(7)
    texts = [bytes(range(256)), bytes(range(255, -1, -1))]
    texts += [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in (1, 63, 64, 65, 500, 3000)]
    texts += [b" ".join(rng.choice([b"ab", b"Z", b"\xff\xfe", b"9", b"q" * 20], 40)) for _ in range(5)]
    buffer, offsets = pack(texts)
    out = np.empty(len(buffer), dtype=np.uint64)
    grams = np.empty(len(buffer), dtype=np.uint64)
    for i, text in enumerate(texts):
        words = kernels.ref_words(text)
        count = kernels.word_hashes(buffer, offsets[i], offsets[i + 1], out)
        assert out[:count].tolist() == [kernels.ref_word_hash(word) for word in words]
        for n in range(1, 7):
            made = kernels.gram_hashes(out, count, n, grams)
            width = min(n, len(words))
            expected = [kernels.ref_gram_hash(words[g : g + width]) for g in range(len(words) - width + 1)]
            assert grams[:made].tolist() == (expected if words else [])


def test_murmur3_is_the_published_function():
    # MurmurHash3_x64_128("hello", seed 0): h1 = cbd8a7b341bd9b02, h2 = 5b1e906a48ae1d19
    h1, h2 = kernels.ref_murmur3_128(b"hello")
    assert f"{h1:016x}{h2:016x}" == "cbd8a7b341bd9b025b1e906a48ae1d19"
    texts = ["".join(chr(97 + i % 26) for i in range(size)) for size in range(40)]  # every tail length
    for text, hashed in zip(texts, key_hashes(texts), strict=True):
        assert tuple(int(h) for h in hashed) == kernels.ref_murmur3_128(text.encode())


def test_signatures_equal_datasketch_with_same_shingles_and_permutations(examples):
    records = load([examples / "pandalm-test.jsonl.zst"])[:50]
    texts = [shingle_text(record, "prompt") for record in records]
    sigs, _ = signatures(texts, MinHashParams(num_perm=128, ngram=3))
    for row, text in enumerate(texts):
        reference = MinHash(num_perm=128, seed=1, hashfunc=kernels.ref_shingle_hash32)
        reference.update_batch(kernels.ref_shingles(text.encode(), 3))
        assert np.array_equal(reference.hashvalues, sigs[row])


# -- exact -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["pair", "prompt", "chosen-rejected"])
def test_exact_dedup_equals_a_dict_of_normalized_keys(runner, examples, tmp_path, key):
    inputs = [str(examples / name) for name in PAIR_FILES]
    run_cli(
        runner,
        [
            *inputs,
            "--key",
            key,
            "--no-near",
            "-o",
            str(tmp_path / "k.zst"),
            "--removed",
            str(tmp_path / "r.zst"),
        ],
    )
    first: dict[str, str] = {}
    expected_removed: dict[str, str] = {}
    for record in load([Path(p) for p in inputs]):
        if pair_problems(record):
            continue
        normalized = normalized_key(record, key)
        if normalized in first:
            expected_removed[record["id"]] = first[normalized]
        else:
            first[normalized] = record["id"]
    kept = list(read_json_records(str(tmp_path / "k.zst")))
    removed = {
        r["id"]: r for r in read_json_records(str(tmp_path / "r.zst")) if r["reason"] == "exact_duplicate"
    }
    assert [r["id"] for r in kept] == list(first.values())
    assert {i: r["duplicate_of"] for i, r in removed.items()} == expected_removed
    assert len(expected_removed) > (50 if key != "pair" else 20)


def test_normalized_key_ignores_case_and_spacing_only():
    record = {"conversation": [{"role": "user", "content": "Hi  There\n"}], "chosen": "A", "rejected": "b"}
    same = {"conversation": [{"role": "user", "content": "hi there"}], "chosen": "a ", "rejected": "B"}
    other = {"conversation": [{"role": "assistant", "content": "hi there"}], "chosen": "a", "rejected": "b"}
    assert normalized_key(record) == normalized_key(same)
    assert normalized_key(record) != normalized_key(other)
    assert normalized_key(record, "chosen-rejected") == normalized_key(other, "chosen-rejected")


# -- near duplicates against datasketch ------------------------------------------------------------
def datasketch_pairs(shingle_sets, rows, params, hashfunc=None) -> set[tuple[int, int]]:
    """The reference: datasketch MinHashLSH with the same bands x rows, candidates confirmed by
    datasketch's estimated Jaccard."""
    lsh = MinHashLSH(threshold=params.threshold, num_perm=params.num_perm, params=(params.bands, params.rows))
    sketches = {}
    for row in rows:
        sketch = MinHash(num_perm=params.num_perm, **({"hashfunc": hashfunc} if hashfunc else {}))
        sketch.update_batch(list(shingle_sets[row]))
        sketches[row] = sketch
        lsh.insert(row, sketch)
    return {
        (min(row, other), max(row, other))
        for row in rows
        for other in lsh.query(sketches[row])
        if other != row and sketches[row].jaccard(sketches[other]) >= params.threshold
    }


@pytest.mark.slow
@pytest.mark.parametrize("key", ["prompt", "pair"])
def test_near_duplicate_pairs_agree_with_datasketch(examples, key):
    records = [r for r in load([examples / name for name in PAIR_FILES]) if not pair_problems(r)]
    texts = [shingle_text(record, key) for record in records]
    params = MinHashParams(num_perm=128, ngram=5, threshold=0.8).resolved()
    sigs, counts = signatures(texts, params)
    rows = np.flatnonzero(counts > 0)
    ours = {(int(rows[i]), int(rows[j])) for i, j in candidate_pairs(sigs[rows], params)}
    shingle_sets = [set(kernels.ref_shingles(text.encode(), 5)) for text in texts]

    def jaccard(pair: tuple[int, int]) -> float:
        a, b = shingle_sets[pair[0]], shingle_sets[pair[1]]
        return len(a & b) / len(a | b)

    # Same shingles, shingle hash and permutations: the LSH, confirmation and pairing must agree.
    same = datasketch_pairs(shingle_sets, rows.tolist(), params, kernels.ref_shingle_hash32)
    # datasketch's own sha1 hashing: an independent estimate; pairs near the threshold may flip.
    independent = datasketch_pairs(shingle_sets, rows.tolist(), params)
    for name, theirs in (("same hash", same), ("sha1", independent)):
        both = len(ours & theirs)
        print(
            f"key={key} vs datasketch ({name}): ours={len(ours)} theirs={len(theirs)} "
            f"recall={both / len(theirs):.4f} precision={both / len(ours):.4f}"
        )
    true_jaccard = np.array([jaccard(pair) for pair in ours])
    print(
        f"  true Jaccard of our pairs: min {true_jaccard.min():.3f}, share >= 0.8 {np.mean(true_jaccard >= 0.8):.4f}"
    )
    both = len(ours & same)
    assert len(same) > 100
    assert both / len(same) >= 0.95 and both / len(ours) >= 0.95
    assert true_jaccard.min() >= 0.65  # 4 standard deviations of a 128-permutation estimate at 0.8
    assert np.mean(true_jaccard >= 0.8) >= 0.9
    if key == "prompt":
        both = len(ours & independent)
        assert both / len(independent) >= 0.95 and both / len(ours) >= 0.95
    # where the independent estimates differ, the true similarity sits at the threshold
    assert all(0.65 <= jaccard(pair) <= 0.95 for pair in ours ^ independent)
    # the clusters are the components of these pairs
    root = components(sigs[rows], params)
    index = {int(row): n for n, row in enumerate(rows)}
    assert all(root[index[i]] == root[index[j]] for i, j in ours)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["prompt", "pair"])
def test_one_permutation_sketch_is_as_accurate_as_minhash(examples, key):
    """--sketch oph against the truth: of the pairs either sketch reports, those whose true Jaccard
    is >= the threshold. Its recall and precision must be those of MinHash (within 0.05)."""
    records = [r for r in load([examples / name for name in PAIR_FILES]) if not pair_problems(r)]
    texts = [shingle_text(record, key) for record in records]
    shingle_sets = [set(kernels.ref_shingles(text.encode(), 5)) for text in texts]
    found = {}
    for sketch in ("minhash", "oph"):
        params = MinHashParams(sketch=sketch).resolved()
        sigs, counts = signatures(texts, params)
        rows = np.flatnonzero(counts > 0)
        found[sketch] = {(int(rows[i]), int(rows[j])) for i, j in candidate_pairs(sigs[rows], params)}

    def jaccard(pair: tuple[int, int]) -> float:
        a, b = shingle_sets[pair[0]], shingle_sets[pair[1]]
        return len(a & b) / len(a | b)

    truth = {pair for pair in found["minhash"] | found["oph"] if jaccard(pair) >= 0.8}
    scores = {
        sketch: (len(pairs & truth) / len(truth), len(pairs & truth) / len(pairs)) for sketch, pairs in found.items()
    }
    print(f"key={key} true pairs {len(truth)}: " + ", ".join(f"{k} recall/precision {v}" for k, v in scores.items()))
    assert len(truth) > 300
    assert scores["oph"][0] >= scores["minhash"][0] - 0.05
    assert scores["oph"][1] >= scores["minhash"][1] - 0.05
    assert min(map(jaccard, found["oph"])) >= 0.65


def test_near_duplicate_clusters_name_their_representative(runner, examples, tmp_path):
    inputs = [
        str(examples / "arena-bench-v1-score-pairs.jsonl.zst"),
        str(examples / "pandalm-test.jsonl.zst"),
    ]
    for keep in ("first", "longest"):
        run_cli(
            runner,
            [
                *inputs,
                "--key",
                "prompt",
                "--no-exact",
                "--keep",
                keep,
                "-o",
                str(tmp_path / "k.zst"),
                "--removed",
                str(tmp_path / "r.zst"),
            ],
        )
        kept = by_id(tmp_path / "k.zst")
        near = [r for r in read_json_records(str(tmp_path / "r.zst")) if r["reason"] == "near_duplicate"]
        assert near
        order = {r["id"]: n for n, r in enumerate(load([Path(p) for p in inputs]))}
        for record in near:
            assert record["duplicate_of"] in kept
            if keep == "first":
                assert order[record["duplicate_of"]] < order[record["id"]]
            else:
                rep = kept[record["duplicate_of"]]
                assert len(shingle_text(rep, "prompt")) >= len(shingle_text(record, "prompt"))


# -- decontamination -------------------------------------------------------------------------------
def ngram_set(text: str, n: int = 13) -> set[tuple[bytes, ...]]:
    grams = set()
    for turn in text.split("\x00"):
        words = kernels.ref_words(turn.encode())
        grams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return grams


def test_decontamination_catches_embedded_benchmark_prompts(runner, examples, tmp_path):
    questions = examples / "arena-hard-questions.jsonl.zst"
    benchmark = [r for r in read_json_records(str(questions))]
    fillers = load([examples / "hh-harmless-base-test.jsonl.zst"])
    pairs = []
    for n, question in enumerate(benchmark[::5]):
        prompt = question["conversation"][0]["content"]
        if len(kernels.ref_words(prompt.lower().encode())) < 13:
            continue
        filler = fillers[n % len(fillers)]
        text = f"{filler['conversation'][0]['content']}\n\nAlso: {prompt}\n\nThanks! {filler['chosen']}"
        pairs.append(
            {
                "id": f"planted-{question['id']}",
                "conversation": [{"role": "user", "content": text}],
                "chosen": filler["chosen"] + " ok",
                "rejected": filler["rejected"] + " no",
            }
        )
    clean = load(
        [
            examples / name
            for name in ("pandalm-test.jsonl.zst", "llmbar.jsonl.zst", "hhh-alignment.jsonl.zst")
        ]
    )
    bench_grams = set().union(*(ngram_set(user_turns_text(q)) for q in benchmark))
    expected_hits = {
        r["id"] for r in clean if ngram_set(user_turns_text(r)) & bench_grams and not pair_problems(r)
    }
    write_records(pairs + clean, str(tmp_path / "in.jsonl.zst"))
    run_cli(
        runner,
        [
            str(tmp_path / "in.jsonl.zst"),
            "--no-exact",
            "--no-near",
            "--decontaminate",
            str(questions),
            "-o",
            str(tmp_path / "k.zst"),
            "--removed",
            str(tmp_path / "r.zst"),
        ],
    )
    removed = {
        r["id"]: r for r in read_json_records(str(tmp_path / "r.zst")) if r["reason"] == "contaminated"
    }
    kept = by_id(tmp_path / "k.zst")
    assert len(pairs) > 150
    assert all(p["id"] in removed for p in pairs)
    for pair in pairs:
        source = next(q for q in benchmark if q["id"] == removed[pair["id"]]["benchmark_id"])
        assert ngram_set(user_turns_text(pair)) & ngram_set(user_turns_text(source))
        assert removed[pair["id"]]["benchmark_file"].endswith("arena-hard-questions.jsonl.zst")
    assert set(removed) - {p["id"] for p in pairs} == expected_hits
    assert all(r["id"] in kept for r in clean if r["id"] not in expected_hits and not pair_problems(r))


def test_short_benchmark_prompts_match_only_whole_turns():
    index = BenchmarkIndex(13)
    index.names.append(("b-1", "bench"))
    index._insert(["what is the capital of france?"])
    found = index.matches(
        ["what is the capital of france", "tell me: what is the capital of france?", "capital of france"]
    )
    assert found.tolist() == [0, -1, -1]


# -- conservation, modes, bad input ----------------------------------------------------------------
def test_stdin_spool_gives_the_same_result_as_files(runner, examples, tmp_path):
    path = examples / "pandalm-test.jsonl.zst"
    run_cli(runner, [str(path), "-o", str(tmp_path / "a.zst"), "--removed", str(tmp_path / "ra.zst")])
    run_cli(
        runner,
        ["-o", str(tmp_path / "b.zst"), "--removed", str(tmp_path / "rb.zst")],
        input=path.read_bytes(),
    )
    assert list(by_id(tmp_path / "a.zst")) == list(by_id(tmp_path / "b.zst"))
    removed_a, removed_b = by_id(tmp_path / "ra.zst"), by_id(tmp_path / "rb.zst")
    strip = lambda r: {k: v for k, v in r.items() if k != "id"}  # noqa: E731
    assert [strip(r) for r in removed_a.values()] == [strip(r) for r in removed_b.values()]


def test_malformed_records_follow_on_error(runner, examples, tmp_path):
    good = load([examples / "evalbiasbench.jsonl.zst"])
    path = tmp_path / "bad.jsonl"
    lines = [line for record in good[:30] for line in [__import__("orjson").dumps(record).decode()]]
    lines.insert(5, '{"id": "broken", "conversation": ')
    lines.insert(12, '{"id": "nochosen", "prompt": "hi", "rejected": "x"}')
    path.write_text("\n".join(lines) + "\n")
    failed = runner.invoke(cli, ["dedupe", str(path), "-o", str(tmp_path / "k.zst")])
    assert failed.exit_code != 0 and f"{path}:6" in failed.output
    run_cli(
        runner,
        [
            str(path),
            "--on-error",
            "skip",
            "--errors",
            str(tmp_path / "e.zst"),
            "-o",
            str(tmp_path / "k.zst"),
            "--removed",
            str(tmp_path / "r.zst"),
        ],
    )
    errors = list(read_json_records(str(tmp_path / "e.zst")))
    assert [e["line"] for e in errors] == [6, 13]
    kept, removed = by_id(tmp_path / "k.zst"), by_id(tmp_path / "r.zst")
    assert len(kept) + len(removed) + len(errors) == len(lines)


def test_one_megabyte_reply_is_linear(runner, examples, tmp_path):
    record = load([examples / "llmbar.jsonl.zst"])[0]
    words = " ".join(r["chosen"] for r in load([examples / "hhh-alignment.jsonl.zst"]))
    big = (words * (1_100_000 // len(words) + 1))[:1_100_000]
    records = [
        record,
        {**record, "id": "big", "chosen": big},
        {**record, "id": "big-copy", "chosen": big + " "},
    ]
    write_records(records, str(tmp_path / "in.zst"))
    start = time.perf_counter()
    run_cli(
        runner,
        [
            str(tmp_path / "in.zst"),
            "--decontaminate",
            str(examples / "arena-hard-questions.jsonl.zst"),
            "-o",
            str(tmp_path / "k.zst"),
            "--removed",
            str(tmp_path / "r.zst"),
        ],
    )
    elapsed = time.perf_counter() - start
    removed = by_id(tmp_path / "r.zst")
    assert removed["big-copy"]["reason"] == "exact_duplicate" and removed["big-copy"]["duplicate_of"] == "big"
    assert set(by_id(tmp_path / "k.zst")) == {record["id"], "big"}
    assert elapsed < 10


def test_counts_conserve_across_keys_and_thresholds(runner, examples, tmp_path):
    inputs = [str(examples / name) for name in PAIR_FILES]
    total = len(load([Path(p) for p in inputs]))
    seen = Counter()
    for key, threshold in itertools.product(["pair", "prompt"], ["0.5", "0.9"]):
        result = run_cli(
            runner,
            [
                *inputs,
                "--key",
                key,
                "--threshold",
                threshold,
                "-o",
                str(tmp_path / "k.zst"),
                "--removed",
                str(tmp_path / "r.zst"),
            ],
        )
        kept, removed = by_id(tmp_path / "k.zst"), list(read_json_records(str(tmp_path / "r.zst")))
        assert len(kept) + len(removed) == total
        assert f"kept {len(kept)}" in result.output
        seen[(key, threshold)] = len(kept)
    assert seen[("prompt", "0.5")] < seen[("prompt", "0.9")] < seen[("pair", "0.9")]
