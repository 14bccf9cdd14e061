"""The real entry point: cat, stats, shared options, help and man pages."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import orjson
import pytest
import zstandard

from synpref.cli import COMMANDS, cli
from synpref.io import read_json_records
from synpref.manpages import pages
from synpref.records import is_pair

PAIR_FILES = ["hh-harmless-base-test", "llmbar", "pandalm-test", "evalbiasbench", "hhh-alignment",
              "arena-bench-v1-score-pairs", "mtbench-gpt4-pairs", "alpacaeval-pairs"]
PASS_THROUGH_FILES = ["arena-hard-questions", "arena-hard-answers", "mtbench-answers"]


def _records(data: bytes) -> list:
    text = zstandard.ZstdDecompressor().decompressobj().decompress(data) if data[:4] == b"\x28\xb5\x2f\xfd" else data
    return [orjson.loads(line) for line in text.split(b"\n") if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("name", PAIR_FILES + PASS_THROUGH_FILES)
def test_cat_round_trips_shared_files(shared, tmp_path, name):
    source = shared / f"{name}.jsonl.zst"
    out = tmp_path / "out.jsonl.zst"
    result = subprocess.run([sys.executable, "-m", "synpref", "cat", str(source), "-o", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    original = list(read_json_records(str(source)))
    assert list(read_json_records(str(out))) == original
    assert f"kept {len(original)}" in result.stderr and f"read {len(original)}" in result.stderr


def test_cat_converts_layouts_and_keeps_ids(runner, tmp_path, examples):
    records = list(read_json_records(str(examples / "evalbiasbench.jsonl.zst")))[:5]
    rows = [{"prompt": r["conversation"][0]["content"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in records]
    (tmp_path / "flat.json").write_bytes(orjson.dumps(rows))
    result = runner.invoke(cli, ["cat", str(tmp_path / "flat.json"), "-o", str(tmp_path / "out.zst")])
    assert result.exit_code == 0, result.output
    out = list(read_json_records(str(tmp_path / "out.zst")))
    assert [r["id"] for r in out] == [f"flat-{i:08d}" for i in range(1, 6)]
    assert [r["conversation"] for r in out] == [r["conversation"] for r in records]
    assert {r["source"] for r in out} == {"flat"}


def test_cat_head_and_reproducible_sample(runner, tmp_path, examples):
    source = str(examples / "pandalm-test.jsonl.zst")
    everything = [r["id"] for r in read_json_records(source)]
    runner.invoke(cli, ["cat", source, "--head", "7", "-o", str(tmp_path / "h.zst")])
    assert [r["id"] for r in read_json_records(str(tmp_path / "h.zst"))] == everything[:7]
    samples = []
    for seed in (1, 1, 2):
        out = tmp_path / f"s{len(samples)}.zst"
        assert runner.invoke(cli, ["cat", source, "--sample", "50", "--seed", str(seed), "-o", str(out)]).exit_code == 0
        samples.append([r["id"] for r in read_json_records(str(out))])
    assert samples[0] == samples[1] and samples[0] != samples[2]
    assert len(samples[0]) == 50 and len(set(samples[0])) == 50
    assert samples[0] == sorted(samples[0], key=everything.index)  # input order kept


def test_cat_shards_cover_the_input(runner, tmp_path, examples):
    source = str(examples / "hhh-alignment.jsonl.zst")
    parts = []
    for index in range(3):
        out = tmp_path / f"part{index}.zst"
        assert runner.invoke(cli, ["cat", source, "--shard", f"{index}/3", "-o", str(out)]).exit_code == 0
        parts.append([r["id"] for r in read_json_records(str(out))])
    everything = [r["id"] for r in read_json_records(source)]
    assert sorted(sum(parts, [])) == sorted(everything)
    assert sum(len(p) for p in parts) == len(everything) and all(parts)


def test_slurm_array_variables_pick_the_shard(tmp_path, examples):
    source = str(examples / "hhh-alignment.jsonl.zst")
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "0"}
    out = subprocess.run([sys.executable, "-m", "synpref", "cat", source], env=env, capture_output=True, check=True)
    ids = [r["id"] for r in _records(out.stdout)]
    assert ids == [r["id"] for i, r in enumerate(read_json_records(source)) if i % 2 == 1]


def test_bad_input_fails_with_location_or_is_diverted(runner, tmp_path, examples):
    good = list(read_json_records(str(examples / "evalbiasbench.jsonl.zst")))[:3]
    lines = [orjson.dumps(good[0]).decode(), '{"id": "broken", ', '{"question": "no layout"}', orjson.dumps(good[1]).decode()]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    failed = runner.invoke(cli, ["cat", str(path)])
    assert failed.exit_code == 1 and f"{path}:2: malformed JSON" in failed.output
    result = runner.invoke(cli, ["cat", str(path), "--on-error", "skip", "--errors", str(tmp_path / "err.zst"),
                                 "-o", str(tmp_path / "ok.zst")])
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_json_records(str(tmp_path / "ok.zst"))] == [good[0]["id"], good[1]["id"]]
    errors = list(read_json_records(str(tmp_path / "err.zst")))
    assert [(e["line"], e["field"]) for e in errors] == [(2, None), (3, "conversation")]
    assert errors[1]["raw"] == '{"question": "no layout"}' and "errors 2" in result.output
    needs_path = runner.invoke(cli, ["cat", str(path), "--on-error", "skip"])
    assert needs_path.exit_code == 2 and "--errors PATH" in needs_path.output


def test_missing_input_is_a_clear_error(runner, tmp_path):
    result = runner.invoke(cli, ["cat", str(tmp_path / "nope.jsonl.zst")])
    assert result.exit_code == 1 and "nope.jsonl.zst: no such file" in result.output


def test_stats_counts_match_an_independent_count(runner, examples):
    source = str(examples / "pandalm-test.jsonl.zst")
    records = list(read_json_records(source))
    keys = [hashlib.sha1(orjson.dumps([r["conversation"], r["chosen"], r["rejected"]])).digest() for r in records]
    result = runner.invoke(cli, ["stats", "--json", source])
    assert result.exit_code == 0, result.output
    stats = orjson.loads(result.stdout)
    assert stats["records"] == len(records) and stats["kinds"] == {"pair": len(records)}
    assert stats["exact_duplicate_pairs"] == len(keys) - len(set(keys)) > 0
    assert stats["pair_problems"]["empty_rejected"] == sum(1 for r in records if not r["rejected"].strip())
    chosen_lengths = sorted(len(r["chosen"]) for r in records)
    assert stats["chars"]["chosen"]["max"] == chosen_lengths[-1]
    assert stats["chars"]["chosen"]["p50"] == pytest.approx(chosen_lengths[len(records) // 2], rel=0.05)


def test_stats_table_mentions_every_source(runner, examples):
    paths = [str(examples / f"{name}.jsonl.zst") for name in ("llmbar", "arena-hard-questions")]
    result = runner.invoke(cli, ["stats", *paths])
    assert result.exit_code == 0
    sources = {r.get("source") for p in paths for r in read_json_records(p)}
    assert all(source in result.stdout for source in sources)
    assert "prompt 1,250" in result.stdout and "p95" in result.stdout


def test_stats_summarizes_scores_and_labels(runner, tmp_path, examples):
    records = list(read_json_records(str(examples / "hhh-alignment.jsonl.zst")))[:4]
    for i, record in enumerate(records):
        record["scores"] = {"rm": {"chosen": 1.0, "rejected": 0.0, "p": 0.2 + 0.2 * i}}
        record["labels"] = [{"by": "human:ann", "prefers": "chosen" if i else "rejected"}]
    (tmp_path / "scored.json").write_bytes(orjson.dumps(records))
    stats = orjson.loads(runner.invoke(cli, ["stats", "--json", str(tmp_path / "scored.json")]).stdout)
    assert stats["scores"]["rm"] == {"count": 4, "mean_p": 0.5, "agree_fraction": 0.5}
    assert stats["labels"] == {"human:chosen": 3, "human:rejected": 1}


def test_help_lists_every_command_and_version(runner):
    result = runner.invoke(cli, ["--help"])
    assert all(name in result.output for name in COMMANDS)
    version = runner.invoke(cli, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("synpref, version")


def test_man_pages_are_in_sync_with_help():
    """Regenerate with `make man` (python -m synpref.manpages man) when this fails."""
    man = os.path.join(os.path.dirname(__file__), "..", "man")
    expected = pages()
    on_disk = {name for name in os.listdir(man) if name.endswith(".1")}
    assert on_disk == set(expected), "man/ is missing or has stale pages: run `make man`"
    for name, text in expected.items():
        with open(os.path.join(man, name), encoding="utf-8") as handle:
            assert handle.read() == text, f"man/{name} is out of date with --help: run `make man`"
    assert all(f"synpref-{name}.1" in expected for name in COMMANDS)


def test_every_command_documents_its_options_and_shows_a_pipe_in_its_examples():
    for name, text in pages().items():
        assert ".SH DESCRIPTION\n.PP\n" in text and "\\- \n" not in text, name
        examples = text.partition("\n.SH EXAMPLES\n")[2].partition("\n.SH ")[0]
        assert " | " in examples, name  # a pipe
        assert "\n.nf\nExamples" not in text, name  # not left in the description


def test_pair_detection():
    assert is_pair({"chosen": "a", "rejected": "b"}) and not is_pair({"conversation": []})


@pytest.mark.slow
def test_stats_token_lengths_with_a_real_tokenizer(runner, examples, smollm2_rm):
    from transformers import AutoTokenizer

    source = str(examples / "evalbiasbench.jsonl.zst")
    records = list(read_json_records(source))
    result = runner.invoke(cli, ["stats", "--json", "--tokenizer", str(smollm2_rm), source])
    assert result.exit_code == 0, result.output
    tokens = orjson.loads(result.stdout)["tokens"]
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_rm))
    lengths = [len(tokenizer(r["rejected"], add_special_tokens=False)["input_ids"]) for r in records]
    assert tokens["rejected"]["max"] == max(lengths) and tokens["rejected"]["count"] == len(records)
    assert tokens["rejected"]["mean"] == pytest.approx(sum(lengths) / len(lengths), abs=0.05)
    assert tokens["chosen"]["max"] < orjson.loads(result.stdout)["chars"]["chosen"]["max"]


def test_stats_counts_removed_reasons(runner, tmp_path, examples):
    records = list(read_json_records(str(examples / "hhh-alignment.jsonl.zst")))[:5]
    reasons = ["exact_duplicate", "contaminated", "exact_duplicate", "empty_chosen", "exact_duplicate"]
    (tmp_path / "removed.json").write_bytes(orjson.dumps([{**r, "reason": why} for r, why in zip(records, reasons, strict=True)]))
    stats = orjson.loads(runner.invoke(cli, ["stats", "--json", str(tmp_path / "removed.json")]).stdout)
    assert stats["removed_reasons"] == {"exact_duplicate": 3, "contaminated": 1, "empty_chosen": 1}
    assert "removed_reasons" not in orjson.loads(
        runner.invoke(cli, ["stats", "--json", str(examples / "hhh-alignment.jsonl.zst")]).stdout)
