"""The stream layer: format sniffing, error locations, atomic writes, pipes, sharding."""

from __future__ import annotations

import gzip
import json
import os
import pty
import signal
import subprocess
import sys
import time

import orjson
import pytest
import zstandard

from synpref.io import (
    AppendStream,
    RecordWriter,
    Shard,
    StreamError,
    expand_paths,
    iter_raw,
    read_json_records,
    write_records,
)

SYNPREF = [sys.executable, "-m", "synpref"]


@pytest.fixture
def pairs(examples):
    return list(read_json_records(str(examples / "evalbiasbench.jsonl.zst")))


def _read_all(path):
    return [raw.parse() for raw in iter_raw(str(path))]


def test_every_format_reads_the_same_records(tmp_path, pairs):
    lines = b"".join(orjson.dumps(record) + b"\n" for record in pairs)
    (tmp_path / "a.jsonl").write_bytes(lines)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    (tmp_path / "a.json").write_text(json.dumps(pairs, indent=1))
    (tmp_path / "mislabelled.txt").write_bytes(gzip.compress(lines))  # sniffed by magic, not by name
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = [{"id": r["id"], "prompt": r["conversation"][0]["content"], "chosen": r["chosen"]} for r in pairs]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "a.json", "mislabelled.txt"):
        assert _read_all(tmp_path / name) == pairs, name
    assert _read_all(tmp_path / "a.parquet") == flat


def test_stdin_is_read_when_no_path(tmp_path, examples):
    data = (examples / "evalbiasbench.jsonl.zst").read_bytes()
    out = subprocess.run([*SYNPREF, "cat", "--raw"], input=data, capture_output=True, check=True).stdout
    records = [orjson.loads(line) for line in zstandard.ZstdDecompressor().decompressobj().decompress(out).split(b"\n") if line]
    assert records == list(read_json_records(str(examples / "evalbiasbench.jsonl.zst")))


def test_directory_of_shards_reads_in_sorted_order(tmp_path, pairs):
    shards = tmp_path / "shards"
    write_records(pairs[40:], str(shards / "part-001.jsonl.zst"))
    write_records(pairs[:40], str(shards / "part-000.jsonl.zst"))
    (shards / "README.txt").write_text("not a stream")
    assert expand_paths([str(shards)]) == [str(shards / "part-000.jsonl.zst"), str(shards / "part-001.jsonl.zst")]
    assert [r for path in expand_paths([str(shards)]) for r in _read_all(path)] == pairs


def test_concatenated_zstd_frames_are_one_stream(tmp_path, pairs):
    compressor = zstandard.ZstdCompressor()
    frames = b"".join(compressor.compress(orjson.dumps(r) + b"\n") for r in pairs)
    (tmp_path / "multi.zst").write_bytes(frames)
    assert _read_all(tmp_path / "multi.zst") == pairs


def test_truncated_zstd_names_file_and_line(tmp_path, pairs):
    lines = b"".join(orjson.dumps(record) + b"\n" for record in pairs)
    whole = zstandard.ZstdCompressor().compress(lines)
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(StreamError) as caught:
        _read_all(path)
    assert caught.value.path == str(path) and "truncated" in str(caught.value)
    assert caught.value.line is not None and 1 <= caught.value.line <= len(pairs)


def test_truncated_gzip_is_an_error(tmp_path, pairs):
    data = gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in pairs))
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(StreamError, match="truncated gzip"):
        _read_all(tmp_path / "cut.gz")


def test_malformed_line_is_located(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2,\n{"id": 3}\n')
    raws = list(iter_raw(str(path)))
    assert [raw.line for raw in raws] == [1, 3, 4]  # blank line 2 is skipped but still counted
    with pytest.raises(StreamError, match=r"bad.jsonl:3: malformed JSON"):
        raws[1].parse()


def test_writer_formats_follow_the_path(tmp_path, pairs):
    for name, magic in (("o.jsonl.zst", b"\x28\xb5\x2f\xfd"), ("o.jsonl.gz", b"\x1f\x8b"), ("o.jsonl", b"{")):
        write_records(pairs, str(tmp_path / name))
        assert (tmp_path / name).read_bytes()[:len(magic)] == magic
        assert _read_all(tmp_path / name) == pairs


def test_failed_write_leaves_previous_file(tmp_path, pairs):
    path = tmp_path / "out.jsonl.zst"
    write_records(pairs[:3], str(path))
    with pytest.raises(RuntimeError), RecordWriter(str(path)) as writer:
        writer.write_many(pairs)
        raise RuntimeError("stage crashed")
    assert _read_all(path) == pairs[:3]
    assert os.listdir(tmp_path) == ["out.jsonl.zst"]  # the temp file is gone too


def test_killed_writer_leaves_no_file(tmp_path):
    path = tmp_path / "out.jsonl.zst"
    script = (
        "import sys, time\n"
        "from synpref.io import RecordWriter\n"
        "with RecordWriter(sys.argv[1]) as w:\n"
        "    for i in range(10**9):\n"
        "        w.write({'id': i, 'text': 'x' * 1000})\n"
        "        if i == 20000: print('writing', flush=True)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"writing"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not path.exists()
    partial = [name for name in os.listdir(tmp_path) if name.endswith(".partial")]
    assert partial and os.path.getsize(tmp_path / partial[0]) > 0  # it was really writing


def test_broken_pipe_exits_quietly(examples):
    command = f"{sys.executable} -m synpref cat {examples / 'hh-harmless-base-test.jsonl.zst'} | head -c 100 >/dev/null"
    result = subprocess.run(["bash", "-c", "set -o pipefail; " + command], capture_output=True, text=True)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    assert result.returncode in (0, 1, 141)


def test_terminal_gets_plain_json(examples):
    leader, follower = pty.openpty()
    process = subprocess.Popen([*SYNPREF, "cat", "--head", "2", str(examples / "hhh-alignment.jsonl.zst")],
                               stdout=follower, stderr=subprocess.DEVNULL)
    os.close(follower)
    output = b""
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    process.wait()
    lines = [line for line in output.replace(b"\r\n", b"\n").split(b"\n") if line.strip()]
    assert len(lines) == 2 and orjson.loads(lines[0])["id"] == "hhh-alignment-harmless-000"


@pytest.mark.parametrize("count", [1, 3, 7])
def test_shards_are_disjoint_and_cover(count):
    owners = [[shard for shard in range(count) if Shard(shard, count).owns(position)] for position in range(100)]
    assert all(len(owner) == 1 for owner in owners)


def test_shard_parsing_and_slurm():
    assert Shard.parse("2/5") == Shard(2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            Shard.parse(bad)
    env = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert Shard.from_slurm(env) == Shard(3, 4)
    assert Shard.from_slurm({}) is None


# ---- hardening (issue 12): what a .json array is, unreadable files, byte order marks ------------
def test_json_arrays_span_the_file_and_jsonl_may_start_with_a_bad_array(tmp_path, pairs):
    one_line = tmp_path / "one-line.json"
    one_line.write_bytes(orjson.dumps(pairs[:3]) + b"\n")
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(pairs[:3], indent=2))
    for path in (one_line, pretty):
        assert _read_all(path) == pairs[:3]
    lines = b"".join(orjson.dumps(record) + b"\n" for record in pairs[:3])
    for first in (b"[1, 2]", b"[1, 2", b'[{"id": "x"}]'):
        jsonl = tmp_path / "starts-with-array.jsonl"
        jsonl.write_bytes(first + b"\n" + lines)
        raws = list(iter_raw(str(jsonl)))
        assert [raw.line for raw in raws] == [1, 2, 3, 4] and raws[0].data == first
        assert [raw.parse() for raw in raws[1:]] == pairs[:3]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(pairs[:3], indent=2)[:-40])
    with pytest.raises(StreamError) as caught:
        _read_all(broken)
    assert caught.value.line == json.dumps(pairs[:3], indent=2)[:-40].count("\n") + 1


def test_unopenable_and_truncated_files_are_stream_errors(tmp_path, pairs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "gone.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    with pytest.raises(StreamError, match="cannot open") as caught:
        list(iter_raw(expand_paths([str(folder)])[0]))
    assert caught.value.path == str(folder / "gone.jsonl")
    table = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": r["id"], "chosen": r["chosen"]} for r in pairs]), table)
    table.write_bytes(table.read_bytes()[:-30])
    with pytest.raises(StreamError, match="unreadable parquet") as caught:
        _read_all(table)
    assert caught.value.path == str(table)


def test_a_byte_order_mark_is_skipped(tmp_path, pairs):
    lines = b"".join(orjson.dumps(record) + b"\n" for record in pairs[:2])
    for name, data in (("bom.jsonl", b"\xef\xbb\xbf" + lines),
                       ("bom.jsonl.zst", zstandard.ZstdCompressor().compress(b"\xef\xbb\xbf" + lines)),
                       ("bom.json", b"\xef\xbb\xbf" + orjson.dumps(pairs[:2]))):
        (tmp_path / name).write_bytes(data)
        assert _read_all(tmp_path / name) == pairs[:2], name


def test_a_json_array_too_deep_for_orjson_is_read_element_by_element(tmp_path, pairs):
    """orjson reads at most 1024 levels: the deep element alone is bad, the others are read."""
    deep = "[" * 1100 + "1" + "]" * 1100
    tricky = {**pairs[0], "chosen": 'a "quoted" [reply], {with} \\ brackets,'}  # no bracket in a string counts
    text = f"[\n {json.dumps(tricky)},\n {deep},\n {json.dumps(pairs[1], indent=2)}\n]\n"
    path = tmp_path / "deep.json"
    path.write_text(text)
    raws = list(iter_raw(str(path)))
    assert [raw.line for raw in raws] == [1, 2, 3] and [raws[0].data, raws[2].data] == [tricky, pairs[1]]
    with pytest.raises(StreamError, match="depth limit exceeded") as caught:
        raws[1].parse()
    assert (caught.value.path, caught.value.line) == (str(path), 2)
    path.write_text(text[: text.rindex("}") - 5])  # cut inside the last element
    raws = list(iter_raw(str(path)))
    assert raws[0].data == tricky and [raw.line for raw in raws] == [1, 2, 3] and type(raws[2].data) is bytes
    path.write_text(text + '{"id": "after the array"}\n')
    assert [raw.line for raw in iter_raw(str(path))] == [1, 2, 3, 4]
    jsonl = tmp_path / "deep-first-line.jsonl"  # JSON Lines whose first line is that deep: still lines
    jsonl.write_bytes(deep.encode() + b"\n" + b"".join(orjson.dumps(record) + b"\n" for record in pairs[:2]))
    raws = list(iter_raw(str(jsonl)))
    assert [raw.line for raw in raws] == [1, 2, 3] and [raw.parse() for raw in raws[1:]] == pairs[:2]


def test_linked_folders_are_read_and_a_link_back_is_an_error(tmp_path, pairs):
    shards, elsewhere = tmp_path / "shards", tmp_path / "elsewhere"
    write_records(pairs[:40], str(shards / "part-000.jsonl.zst"))
    write_records(pairs[40:], str(elsewhere / "data.jsonl.zst"))
    (shards / "part-001").symlink_to(elsewhere, target_is_directory=True)  # a folder of data linked in
    assert expand_paths([str(shards)]) == [str(shards / "part-000.jsonl.zst"), str(shards / "part-001" / "data.jsonl.zst")]
    assert [r for path in expand_paths([str(shards)]) for r in _read_all(path)] == pairs
    (elsewhere / "up").symlink_to(shards, target_is_directory=True)  # a cycle: its files, forever
    with pytest.raises(StreamError, match=f"a link to {shards}, which is already read") as caught:
        expand_paths([str(shards)])
    assert caught.value.path == str(shards / "part-001" / "up")
    (elsewhere / "up").unlink()
    (shards / "again").symlink_to(elsewhere, target_is_directory=True)  # one folder twice: its pairs twice
    with pytest.raises(StreamError, match=f"a link to {shards / 'again'}, which is already read"):
        expand_paths([str(shards)])


def _open_descriptors() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


def test_an_append_stream_that_cannot_open_closes_its_file(tmp_path):
    frame = zstandard.ZstdCompressor().compress(b'{"id": "a"}\n')
    corrupt = tmp_path / "labels.jsonl.zst"
    corrupt.write_bytes(frame + b"no zstd frame" + frame)
    before = _open_descriptors()
    for _ in range(3):
        with pytest.raises(StreamError, match=f"corrupt zstd frame at byte {len(frame)}"):
            AppendStream(str(corrupt))
    assert _open_descriptors() == before
    assert corrupt.read_bytes() == frame + b"no zstd frame" + frame  # nothing cut from a file it could not read
    with AppendStream(str(tmp_path / "held.jsonl")):
        before = _open_descriptors()
        with pytest.raises(ValueError, match="being written by another process"):
            AppendStream(str(tmp_path / "held.jsonl"))
        assert _open_descriptors() == before
