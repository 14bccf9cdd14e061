"""A closed pipe (`synpref cat big | head -1`) ends every command quietly with the status of SIGPIPE.

Run under `bash -o pipefail`, as a script that must tell a closed pipe from a failure would be: the
status is 141 (what SIGPIPE gives a C tool), or 0 when the command finished writing before the
reader left; never 1, and nothing but a command's usual count line on stderr.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_score import EXAMPLES, _short_pairs

from synpref.io import read_json_records, write_records

SYNPREF = f"{shlex.quote(sys.executable)} -m synpref"
PIPE_CLOSED = 141


def _piped(command: str, reader: str, cwd: Path) -> subprocess.CompletedProcess:
    """`synpref COMMAND | READER` under pipefail; stderr is synpref's alone."""
    script = f"set -o pipefail; {SYNPREF} {command} 2>synpref.err | {reader}"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=cwd, timeout=300)
    result.stderr = (cwd / "synpref.err").read_text()
    return result


SMALL = EXAMPLES / "arena-bench-v1-score-pairs.jsonl.zst"  # 1,013 pairs, ~1 MB zstd: more than a pipe holds


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """6,078 real pairs, so that the writer meets the closed pipe long before it is done."""
    path = tmp_path_factory.mktemp("pipes") / "big.jsonl.zst"
    write_records([record for _ in range(6) for record in read_json_records(str(SMALL))], str(path))
    return path


@pytest.mark.parametrize(
    ("command", "reader"),
    [
        ("cat {big}", "head -1"),
        ("cat {big}", "head -c 1"),
        ("cat {big}", "true"),
        ("cat --raw {big}", "head -1"),
        ("cat {small} --sample 500", "head -1"),
        ("dedupe {small} --removed removed.jsonl.zst", "head -1"),
    ],
)
def test_streaming_commands_end_quietly_with_141(command, reader, big, tmp_path):
    result = _piped(command.format(big=big, small=SMALL), f"{reader} >/dev/null", tmp_path)
    assert result.returncode == PIPE_CLOSED, result.stderr
    assert result.stderr == ""
    assert sorted(os.listdir(tmp_path)) == ["synpref.err"]  # --removed was not left half written


@pytest.mark.parametrize("command", ["stats", "stats --json", "eval pairs --length-baseline"])
def test_report_commands_end_quietly(command, tmp_path):
    """These print their report once, at the end, after their count line."""
    result = _piped(f"{command} {SMALL}", "true", tmp_path)
    assert result.returncode in (0, PIPE_CLOSED), result.stderr
    assert "Traceback" not in result.stderr and "Error" not in result.stderr and "Broken" not in result.stderr


@pytest.mark.parametrize("arguments", ["--help", "--version", "cat --help"])
def test_help_and_version_end_quietly(arguments, tmp_path):
    result = _piped(arguments, "true", tmp_path)
    assert result.returncode in (0, PIPE_CLOSED) and result.stderr == ""


def test_a_reader_that_reads_all_sees_success(big, tmp_path):
    result = _piped(f"cat {big} --head 5", "cat >/dev/null", tmp_path)
    assert result.returncode == 0 and result.stderr == "synpref cat: kept 5, read 5\n"


@pytest.mark.slow
def test_score_ends_quietly(smollm2_rm, examples, tmp_path):
    pairs = tmp_path / "pairs.jsonl.zst"
    write_records(_short_pairs(examples / "hh-harmless-base-test.jsonl.zst", 2, multi_turn=False), str(pairs))
    result = _piped(f"score -m {smollm2_rm} {pairs}", "head -c 1 >/dev/null", tmp_path)
    assert result.returncode in (0, PIPE_CLOSED), result.stderr
    assert "Traceback" not in result.stderr and "Error" not in result.stderr
