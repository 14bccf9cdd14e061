"""`-o` writers under SIGTERM and SIGKILL at random (seeded) points.

SIGTERM cleans up as Ctrl-C does: no `.partial` file is left and the exit status is 143. SIGKILL
cannot be caught: its partial stays until the next writer of the same PATH removes it (the writer's
pid is in the name). `score -o`, killed any number of times and run again, ends with exactly the
output of an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import zstandard
from test_score import EXAMPLES, _short_pairs

from synpref.cli import TERM_GRACE_S
from synpref.io import read_json_records, write_records
from synpref.io.durable import remove_stale_partials
from synpref.io.resume import resume_path

SYNPREF = [sys.executable, "-m", "synpref"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # every score run alike: thread counts can move floats
TERMINATED = (0, 143, -signal.SIGTERM)  # finished first / cleaned up / killed before the handler was set


def _partials(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".partial"))


def _writer_pid(partial: str) -> int:
    """The pid in `.NAME.HOST-PID.RANDOM.partial`."""
    return int(partial.rsplit(".", 3)[1].rsplit("-", 1)[1])


def _content(path: Path) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(path.read_bytes(), read_across_frames=True).read()


def _interrupt(command: list[str], sig: int, wait: float | None = None, until=None) -> subprocess.Popen:
    """Run COMMAND, send SIG after WAIT seconds (or once UNTIL() holds, then WAIT), return it ended."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while until is not None and not until() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(wait or 0)
    sent = time.monotonic()
    process.send_signal(sig)
    process.stderr_text = process.communicate(timeout=60)[1].decode()
    process.latency = time.monotonic() - sent
    return process


def _check_terminated(process: subprocess.Popen, directory: Path) -> None:
    assert process.returncode in TERMINATED, process.stderr_text
    assert "Traceback" not in process.stderr_text
    assert process.latency < TERM_GRACE_S + 5
    assert process.pid not in map(_writer_pid, _partials(directory))


def test_stale_partials_are_only_those_of_dead_writers_of_the_same_path_on_this_host(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname().split(".")[0]
    names = {
        f".out.zst.{host}-{dead.pid}.abc123.partial": True,  # its writer is gone
        f".out.zst.{host}-{os.getpid()}.abc123.partial": False,  # alive (this process)
        f".out.zst.elsewhere-{dead.pid}.abc123.partial": False,  # another host on a shared file system
        f".out.zst.1.{host}-{dead.pid}.abc123.partial": False,  # another PATH: out.zst.1
        ".out.zst.abc123.partial": False,  # an older synpref's name: no owner to check
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_partials(str(tmp_path / "out.zst")) == [name for name, stale in names.items() if stale]
    assert sorted(os.listdir(tmp_path)) == sorted(name for name, stale in names.items() if not stale)


def test_cat_output_under_sigterm_and_sigkill_at_random_points(tmp_path):
    source = str(EXAMPLES / "arena-bench-v1-score-pairs.jsonl.zst")
    big = tmp_path / "big.jsonl.zst"
    write_records([record for _ in range(6) for record in read_json_records(source)], str(big))
    reference = tmp_path / "reference.jsonl.zst"
    start = time.monotonic()
    subprocess.run([*SYNPREF, "cat", str(big), "-o", str(reference)], check=True, capture_output=True)
    duration = time.monotonic() - start
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "cat.jsonl.zst"
    rng = random.Random(12)
    for point in range(12):
        sig = (signal.SIGTERM, signal.SIGKILL)[point % 2]
        before = _partials(out_dir)
        process = _interrupt([*SYNPREF, "cat", str(big), "-o", str(out)], sig, rng.uniform(0, 0.8 * duration))
        after = _partials(out_dir)
        own = [name for name in after if _writer_pid(name) == process.pid]
        if sig == signal.SIGTERM:
            _check_terminated(process, out_dir)
        else:
            assert process.returncode in (0, -signal.SIGKILL) and len(own) <= 1
        if own or process.returncode == 0:  # it opened its output, so it removed the earlier runs' partials
            assert after == own
        else:  # killed before it opened its output
            assert set(after) <= set(before)
        assert not out.exists() or _content(out) == _content(reference)
    subprocess.run([*SYNPREF, "cat", str(big), "-o", str(out)], check=True, capture_output=True)
    assert _partials(out_dir) == [] and _content(out) == _content(reference)


@pytest.mark.slow
def test_score_output_under_sigterm_and_sigkill_resumes_to_the_uninterrupted_result(smollm2_rm, tmp_path):
    """Half the points fall in start-up and model loading, half while windows are scored or the output
    is written; after each, the resume file holds a prefix of the uninterrupted run's records."""
    pairs = tmp_path / "pairs.jsonl.zst"
    write_records(_short_pairs(EXAMPLES / "hh-harmless-base-test.jsonl.zst", 6, multi_turn=False), str(pairs))
    command = [*SYNPREF, "score", "-m", str(smollm2_rm), str(pairs), "--window", "2", "-o"]
    reference = tmp_path / "reference.jsonl.zst"
    subprocess.run([*command, str(reference)], check=True, capture_output=True, env=ENV)
    expected = [orjson.loads(line) for line in _content(reference).splitlines()]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "scored.jsonl.zst"
    sidecar = Path(resume_path(str(out)))

    def saved() -> list[bytes]:
        return sidecar.read_bytes().split(b"\n")[:-1] if sidecar.exists() else []  # without a torn tail

    rng = random.Random(7)
    for point in range(10):
        sig = (signal.SIGTERM, signal.SIGKILL)[point % 2]
        if point % 4 < 2:  # start-up: imports, model loading
            process = _interrupt([*command, str(out)], sig, rng.uniform(0.1, 10))
        else:  # once 1-2 more windows are saved (or all are: then while the output is written)
            goal = min(len(saved()) + 2 * rng.randint(1, 2), len(expected))
            process = _interrupt([*command, str(out)], sig, rng.uniform(0, 0.5), lambda g=goal: len(saved()) >= g)
        if sig == signal.SIGTERM:
            _check_terminated(process, out_dir)
            assert not sidecar.exists() or sidecar.stat().st_size > 0  # an empty resume file is removed
        assert [orjson.loads(line) for line in saved()] == expected[: len(saved())]
        assert not out.exists() or _content(out) == _content(reference)
    result = subprocess.run([*command, str(out)], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    assert _content(out) == _content(reference)
    assert _partials(out_dir) == [] and not sidecar.exists()
