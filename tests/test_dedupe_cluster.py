"""Cluster mode (signatures -> clusters -> filter) gives exactly the one-process result, through the
CLI and through bin/dedupe-slurm.sh run locally as SLURM array tasks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from synpref.cli import cli
from synpref.io import read_json_records

REPO = Path(__file__).resolve().parent.parent
FILES = (
    "pandalm-test.jsonl.zst",
    "arena-bench-v1-score-pairs.jsonl.zst",
    "llmbar.jsonl.zst",
    "evalbiasbench.jsonl.zst",
)


def outcome(paths: list[Path]) -> dict[str, tuple]:
    """id -> (reason, what it duplicates or which benchmark) over kept and removed files."""
    result: dict[str, tuple] = {}
    for path in paths:
        if not path.exists():
            continue
        for record in read_json_records(str(path)):
            assert record["id"] not in result, f"{record['id']} written twice"
            result[record["id"]] = (
                record.get("reason", "kept"),
                record.get("duplicate_of"),
                record.get("benchmark_id"),
            )
    return result


@pytest.fixture
def inputs(examples, tmp_path) -> list[str]:
    """Real pairs plus a malformed line in the middle of one file."""
    bad = tmp_path / "with-bad-line.jsonl"
    rows = [orjson.dumps(r).decode() for r in read_json_records(str(examples / "hhh-alignment.jsonl.zst"))]
    rows.insert(17, '{"id": "broken", ')
    bad.write_text("\n".join(rows) + "\n")
    return (
        [str(examples / name) for name in FILES[:2]]
        + [str(bad)]
        + [str(examples / name) for name in FILES[2:]]
    )


def one_process(runner, inputs: list[str], out: Path, flags: list[str]) -> dict[str, tuple]:
    result = runner.invoke(
        cli,
        [
            "dedupe",
            *inputs,
            *flags,
            "--on-error",
            "skip",
            "--errors",
            str(out / "errors.zst"),
            "-o",
            str(out / "kept.zst"),
            "--removed",
            str(out / "removed.zst"),
        ],
    )
    assert result.exit_code == 0, result.output
    return outcome([out / "kept.zst", out / "removed.zst"])


@pytest.mark.parametrize("sketch", ["minhash", "oph"])
def test_sharded_cluster_mode_equals_one_process(runner, examples, inputs, tmp_path, sketch):
    flags = [
        "--sketch",
        sketch,
        "--key",
        "prompt",
        "--keep",
        "longest",
        "--decontaminate",
        str(examples / "arena-hard-questions.jsonl.zst"),
    ]
    expected = one_process(runner, inputs, tmp_path, flags)
    work, shards = tmp_path / "work", 4
    for index in range(shards):
        result = runner.invoke(
            cli,
            [
                "dedupe",
                "signatures",
                "--work",
                str(work),
                "--shard",
                f"{index}/{shards}",
                "--on-error",
                "skip",
                *flags,
                *inputs,
            ],
        )
        assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["dedupe", "clusters", "--work", str(work)])
    assert result.exit_code == 0, result.output
    outputs, errors = [], 0
    for index in range(shards):
        out = tmp_path / f"shard{index}"
        result = runner.invoke(
            cli,
            [
                "dedupe",
                "filter",
                "--work",
                str(work),
                "--shard",
                f"{index}/{shards}",
                "--on-error",
                "skip",
                "--errors",
                str(out / "e.zst"),
                "-o",
                str(out / "k.zst"),
                "--removed",
                str(out / "r.zst"),
                *inputs,
            ],
        )
        assert result.exit_code == 0, result.output
        outputs += [out / "k.zst", out / "r.zst"]
        errors += sum(1 for _ in read_json_records(str(out / "e.zst"))) if (out / "e.zst").exists() else 0
    sharded = outcome(outputs)
    assert sharded == expected
    reasons = {reason for reason, _, _ in expected.values()}
    assert {"kept", "exact_duplicate", "near_duplicate", "contaminated", "empty_rejected"} <= reasons
    # conservation: every input line is kept, removed or an error, in exactly one shard
    lines = sum(
        len(Path(p).read_text().splitlines())
        if p.endswith(".jsonl")
        else sum(1 for _ in read_json_records(p))
        for p in inputs
    )
    assert errors == 1
    assert len(sharded) + errors == lines


def test_clusters_refuses_incomplete_or_mixed_signatures(runner, examples, tmp_path):
    path = str(examples / "evalbiasbench.jsonl.zst")
    work = tmp_path / "work"
    runner.invoke(cli, ["dedupe", "signatures", "--work", str(work), "--shard", "0/2", path])
    result = runner.invoke(cli, ["dedupe", "clusters", "--work", str(work)])
    assert result.exit_code != 0 and "shards [1] of 2 are missing" in result.output
    runner.invoke(
        cli, ["dedupe", "signatures", "--work", str(work), "--shard", "1/2", "--threshold", "0.5", path]
    )
    result = runner.invoke(cli, ["dedupe", "clusters", "--work", str(work)])
    assert result.exit_code != 0 and "other settings" in result.output


@pytest.mark.slow
def test_slurm_script_steps_run_locally(runner, examples, inputs, tmp_path):
    flags = ["--key", "pair", "--decontaminate", str(examples / "arena-hard-questions.jsonl.zst")]
    expected = one_process(runner, inputs, tmp_path, flags)
    script, work, out, count = REPO / "bin/dedupe-slurm.sh", tmp_path / "work", tmp_path / "out", 3
    env = {
        **os.environ,
        "SYNPREF": str(Path(sys.executable).parent / "synpref"),
        "SYNPREF_DEDUPE_FLAGS": " ".join(flags),
    }

    def step(*args: str, task: int | None = None) -> None:
        array = (
            {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": str(count)}
            if task is not None
            else {}
        )
        done = subprocess.run(
            ["bash", str(script), *args], env={**env, **array}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr

    for task in range(count):
        step("signatures", str(work), *inputs, task=task)
    step("clusters", str(work))
    for task in range(count):
        step("filter", str(work), str(out), *inputs, task=task)
    kept_removed = [
        out / f"{kind}-{task:05d}.jsonl.zst" for task in range(count) for kind in ("kept", "removed")
    ]
    assert outcome(kept_removed) == expected
    errors = [out / f"errors-{task:05d}.jsonl.zst" for task in range(count)]
    assert sum(1 for path in errors if path.exists() for _ in read_json_records(str(path))) == 1
