"""Benchmark `synpref dedupe` on every pair file of ../shared/data concatenated (about 135K real pairs).

    python benchmarks/bench_dedupe.py [--data DIR] [--limit N] [--memory 1000000]

Prints, each measured in this run on one core (the process is pinned to one CPU; rensa gets
RAYON_NUM_THREADS=1):
  - MinHash signatures/s (--key pair text, word 5-grams, 128 permutations; and --sketch oph, 128
    bins, whose kind of sketch rensa's RMinHash also is: a bucket sketch). synpref starts from raw
    text (tokenizing and hashing included). datasketch (MinHash.update_batch, the same permutations:
    its affine32 scheme, seed 1) and rensa (RMinHash.digest_matrix_from_token_sets) get the same
    shingles already built; rensa once more with its Python shingling counted; finally synpref and
    rensa (digest_matrix_from_flat_token_hashes) both given the same flat uint64 shingle hashes
  - end-to-end `synpref dedupe` time (subprocess, all checks, --removed)
  - decontamination MB/s (user turns vs arena-hard-questions, 13-grams) vs a Python set of word
    13-grams
  - with --memory N: peak RSS of `synpref dedupe` on N records made by repeating real pairs (the
    20,000 shortest; each copy's replies get a copy number, so exact keys differ), minus the peak on
    1% of them, per record
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


import numpy as np  # noqa: E402
from dedupe_kernels import minhash_from_hashes, one_permutation_from_hashes, shingle_hash_batch  # noqa: E402

from synpref.dedupe import kernels  # noqa: E402
from synpref.dedupe.decontaminate import BenchmarkIndex, user_turns_text  # noqa: E402
from synpref.dedupe.exact import pack_texts  # noqa: E402
from synpref.dedupe.minhash import MinHashParams, shingle_text, signatures  # noqa: E402
from synpref.io import read_json_records, write_records  # noqa: E402
from synpref.records import normalize  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PAIR_FILES = (
    "alpacaeval-pairs.jsonl.zst",
    "arena-bench-v1-score-pairs.jsonl.zst",
    "hh-harmless-base-test.jsonl.zst",
    "llmbar.jsonl.zst",
    "pandalm-test.jsonl.zst",
    "evalbiasbench.jsonl.zst",
    "hhh-alignment.jsonl.zst",
    "mtbench-gpt4-pairs.jsonl.zst",
)


def best_of(runs: int, function) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_signatures(texts: list[str], peer_sample: int) -> None:
    params, oph = MinHashParams(), MinHashParams(sketch="oph")
    signatures(texts[:10], params)  # compile / load the cache
    signatures(texts[:10], oph)
    ours = len(texts) / best_of(3, lambda: signatures(texts, params))
    ours_oph = len(texts) / best_of(3, lambda: signatures(texts, oph))
    shingles = [kernels.ref_shingles(text.encode(), 5) for text in texts]
    sample = shingles[:peer_sample]

    from datasketch import MinHash

    def run_datasketch() -> None:
        for doc in sample:
            MinHash(num_perm=128, seed=1).update_batch(doc)

    datasketch_rate = len(sample) / best_of(1, run_datasketch)
    print("MinHash signatures/s, one core, 128 permutations, word 5-grams of the --key pair text:")
    print(
        f"  from text:  synpref {ours:,.0f}  datasketch (shingles given) {datasketch_rate:,.0f}  "
        f"ratio {ours / datasketch_rate:.1f}x"
    )
    try:
        import rensa
    except ImportError:
        print("  rensa not installed: pip install rensa")
        return
    strings = [[shingle.decode() for shingle in doc] for doc in shingles]
    given = len(texts) / best_of(3, lambda: rensa.RMinHash.digest_matrix_from_token_sets(strings, 128, 1))

    def rensa_from_text() -> None:
        docs = [[shingle.decode() for shingle in kernels.ref_shingles(text.encode(), 5)] for text in texts]
        rensa.RMinHash.digest_matrix_from_token_sets(docs, 128, 1)

    from_text = len(texts) / best_of(1, rensa_from_text)
    print(
        f"  from text:  synpref {ours:,.0f}  rensa (shingles given as str) {given:,.0f}  ratio {ours / given:.2f}x"
    )
    print(
        f"  from text:  synpref --sketch oph {ours_oph:,.0f}  rensa (shingles given as str) {given:,.0f}  "
        f"ratio {ours_oph / given:.2f}x"
    )
    print(
        f"  from text:  synpref {ours:,.0f}  rensa (incl. Python shingling) {from_text:,.0f}  "
        f"ratio {ours / from_text:.2f}x"
    )
    buffer, offsets = pack_texts(texts)
    flat, rows = shingle_hash_batch(buffer, offsets, 5)
    a, b = kernels.permutations(128, 1)
    out = np.empty((len(texts), 128), dtype=np.uint32)
    minhash_from_hashes(flat[: rows[10]], rows[:11], a, b, out)
    core = len(texts) / best_of(3, lambda: minhash_from_hashes(flat, rows, a, b, out))
    rensa_core = len(texts) / best_of(
        3, lambda: rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, rows, 128, 1)
    )
    salt = np.uint64(kernels.salt(1))
    one_permutation_from_hashes(flat[: rows[10]], rows[:11], salt, out)
    core_oph = len(texts) / best_of(3, lambda: one_permutation_from_hashes(flat, rows, salt, out))
    print(
        f"  same uint64 shingle hashes: synpref {core:,.0f}  rensa {rensa_core:,.0f}  ratio {core / rensa_core:.2f}x"
    )
    print(
        f"  same uint64 shingle hashes: synpref --sketch oph {core_oph:,.0f}  rensa {rensa_core:,.0f}  "
        f"ratio {core_oph / rensa_core:.2f}x"
    )


def bench_decontamination(records: list[dict], questions: Path) -> None:
    index = BenchmarkIndex.from_files([str(questions)])
    texts = [user_turns_text(record) for record in records]
    megabytes = sum(len(text.encode()) for text in texts) / 1e6
    index.matches(texts[:10])
    elapsed = best_of(3, lambda: index.matches(texts))
    grams = set()
    for question in read_json_records(str(questions)):
        words = kernels.ref_words(user_turns_text(normalize(question)).encode())
        grams.update(tuple(words[i : i + 13]) for i in range(len(words) - 13 + 1))
    sample = texts[: max(1, len(texts) // 20)]

    def python_sets() -> None:
        for text in sample:
            words = kernels.ref_words(text.encode())
            any(tuple(words[i : i + 13]) in grams for i in range(len(words) - 12))

    python_rate = sum(len(t.encode()) for t in sample) / 1e6 / best_of(1, python_sets)
    rate = megabytes / elapsed
    hits = int((index.matches(texts) >= 0).sum())
    print(
        f"decontamination  synpref {rate:,.1f} MB/s  Python 13-gram set {python_rate:,.1f} MB/s  "
        f"ratio {rate / python_rate:.1f}x  ({megabytes:,.0f} MB of user turns, {hits:,} pairs contaminated)"
    )


def synpref_command() -> list[str]:
    return [str(Path(sys.executable).parent / "synpref"), "dedupe"]


def bench_end_to_end(paths: list[Path], questions: Path, records: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(
            [*synpref_command(), str(paths[-1]), "-o", f"{work}/warm.zst", "--removed", f"{work}/w.zst"],
            check=True,
            capture_output=True,
        )
        for sketch in ("minhash", "oph"):
            command = [
                *synpref_command(),
                *map(str, paths),
                "--sketch",
                sketch,
                "--decontaminate",
                str(questions),
                "-o",
                f"{work}/kept.zst",
                "--removed",
                f"{work}/removed.zst",
                "--threads",
                "0",
            ]
            start = time.perf_counter()
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            print(
                f"end-to-end  synpref dedupe --sketch {sketch}: {records:,} pairs in {elapsed:.1f} s "
                f"({records / elapsed:,.0f} pairs/s)"
            )
            print("   " + done.stderr.strip().splitlines()[-1])


PEAK_RSS = """
import sys
from synpref.cli import cli
try:
    cli.main(sys.argv[1:], prog_name="synpref")
except SystemExit as done:
    if done.code:
        raise
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked (large) parent
high = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("peak-rss-kib", high.split()[1], file=sys.stderr)
"""


def peak_rss(arguments: list[str]) -> float:
    """Peak resident set size in bytes of `synpref ARGUMENTS` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *arguments], check=True, capture_output=True, text=True
    )
    line = next(line for line in done.stderr.splitlines() if line.startswith("peak-rss-kib"))
    return int(line.split()[1]) * 1024.0


def bench_memory(records: list[dict], count: int) -> None:
    """Bytes per record do not depend on text length (no texts are held), so the shortest 20,000
    real pairs are repeated to keep the file small."""
    records = sorted(records, key=lambda r: len(shingle_text(r, "pair")))[:20000]

    def synthetic(total: int):
        for n in range(total):
            record = records[n % len(records)]
            copy = n // len(records)
            yield {
                **record,
                "id": f"{record.get('id')}-copy{copy}",
                "chosen": f"{record['chosen']} {copy}",
                "rejected": f"{record['rejected']} {copy}",
            }

    with tempfile.TemporaryDirectory() as work:
        small, large = f"{work}/small.jsonl.zst", f"{work}/large.jsonl.zst"
        write_records(synthetic(count // 100), small)
        write_records(synthetic(count), large)
        outputs = ["-o", f"{work}/kept.zst", "--removed", f"{work}/removed.zst", "--threads", "0"]
        base = peak_rss(["dedupe", small, *outputs])
        start = time.perf_counter()
        peak = peak_rss(["dedupe", large, *outputs])
        elapsed = time.perf_counter() - start
    per_record = (peak - base) / (count - count // 100)
    print(
        f"memory  {count:,} synthetic-by-repetition pairs: peak RSS {peak / 2**30:.2f} GiB "
        f"({base / 2**20:,.0f} MiB at 1%), {per_record:,.0f} bytes/record, {elapsed:.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N pairs (0: all)")
    parser.add_argument("--peer-sample", type=int, default=3000, help="pairs given to datasketch (slow)")
    parser.add_argument("--memory", type=int, default=0, help="also measure peak memory on N synthetic pairs")
    args = parser.parse_args()
    paths = [args.data / name for name in PAIR_FILES if (args.data / name).exists()]
    questions = args.data / "arena-hard-questions.jsonl.zst"
    start = time.perf_counter()
    records = [normalize(row) for path in paths for row in read_json_records(str(path))]
    if args.limit:
        records = records[: args.limit]
    texts = [shingle_text(record, "pair") for record in records]
    megabytes = sum(len(t) for t in texts) / 1e6
    print(
        f"{len(records):,} pairs from {len(paths)} files ({megabytes:,.0f} MB of pair text), "
        f"loaded in {time.perf_counter() - start:.0f} s; one core"
    )
    bench_signatures(texts, args.peer_sample)
    bench_decontamination(records, questions)
    if not args.limit:
        bench_end_to_end(paths, questions, len(records))
    if args.memory:
        bench_memory(records, args.memory)


if __name__ == "__main__":
    main()
