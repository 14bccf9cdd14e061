"""Durable writes, written once for every stage: whole files that appear atomically, and append
streams that survive a kill.

- `AtomicFile`: bytes go to a temp file beside PATH, which is fsynced and renamed over PATH only on
  commit, so a killed job never leaves a complete-looking half file (stream outputs, dedupe's work
  files, eval reports). The temp file is named `.NAME.HOST-PID.RANDOM.partial` after its writer, so
  the next writer of PATH removes the ones a SIGKILL left behind (their process is gone).
- `AppendStream`: a JSON Lines file that grows by frames, each written with one write() call and
  fsynced before `append` returns; reopening it cuts a torn last frame left by a crash (score's
  resume file, label streams). A plain file's frames are lines; a zstd file's frames are zstd frames
  (the stream reader reads concatenated frames), so it stays compressed without being rewritten.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import os
import re
import socket
import sys
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from typing import IO, Any

import zstandard

from synpref.io.errors import StreamError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PLAIN_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARTIAL = ".partial"
_OPEN: dict[str, int] = {}  # temp file of each uncommitted AtomicFile -> the pid that opened it


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def host_name() -> str:
    """This machine's short name as it can appear in a file name (no dots: the name is parsed)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:32] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_partials(path: str) -> list[str]:
    """Delete the temp files of PATH whose writer, on this machine, is no longer running; returns them.

    Only `.NAME.HOST-PID.RANDOM.partial` names are matched (NAME exactly, so `out.zst` never touches
    the partials of `out.zst.1`); a partial from another host (a shared file system) or from a live
    process, even one that reused a dead writer's pid, is left alone.
    """
    directory, name = os.path.split(os.path.abspath(path))
    prefix, host, removed = f".{name}.", host_name(), []
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(PARTIAL)):
            continue
        owner, _, random_part = entry[len(prefix) : -len(PARTIAL)].partition(".")
        writer_host, _, pid = owner.rpartition("-")
        if not random_part or "." in random_part or writer_host != host or not pid.isdigit():
            continue
        if not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):  # another writer of PATH may remove it first
                os.unlink(os.path.join(directory, entry))
                removed.append(entry)
    return removed


def remove_own_partials() -> None:
    """Delete the temp files of the AtomicFiles this process has open, for a process that must end
    at once without unwinding (SIGTERM inside an import, or a cleanup that overran its time)."""
    for temp, pid in list(_OPEN.items()):
        if pid == os.getpid():  # not a forked child's inherited view of its parent's files
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)


class AtomicFile:
    """A binary file that appears at PATH, whole, on `commit()`; `abort()` leaves PATH as it was.

    Opening one removes the partials of PATH that killed writers left (`remove_stale_partials`).
    """

    def __init__(self, path: str):
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        remove_stale_partials(path)
        descriptor, self._temp = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.{host_name()}-{os.getpid()}.", suffix=PARTIAL, dir=directory
        )
        _OPEN[self._temp] = os.getpid()
        self.handle: IO[bytes] = os.fdopen(descriptor, "wb")
        os.chmod(self._temp, 0o666 & ~_current_umask())  # mkstemp makes 0600; match a plain open()

    def sync(self) -> None:
        """Put the written bytes on disk, not yet at PATH: where a full disk fails. Writers that must
        appear together sync all, then commit all; on failure the temp file goes."""
        if self.handle.closed:
            return
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        """Make PATH the written bytes; on any failure (a full disk, SIGTERM) the temp file goes."""
        self.sync()
        try:
            os.replace(self._temp, self.path)
        except BaseException:
            self.abort()
            raise
        _OPEN.pop(self._temp, None)

    def abort(self) -> None:
        self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)
        _OPEN.pop(self._temp, None)

    def __enter__(self) -> IO[bytes]:
        return self.handle

    def __exit__(self, kind, value, traceback) -> None:
        self.commit() if kind is None else self.abort()


def write_atomic(path: str, data: bytes) -> None:
    """Replace PATH with DATA in one step (a report, a small JSON file)."""
    with AtomicFile(path) as handle:
        handle.write(data)


class AppendStream:
    """A JSON Lines file appended to in durable frames, holding an exclusive lock while open.

    An existing file keeps its format whatever its name; a new one is plain when `plain` says so or,
    by default, when its name ends in .jsonl/.json/.ndjson, and zstd otherwise. Only the frames'
    end offsets and line counts are held in memory; `lines()` reads the lines back from disk.
    """

    def __init__(self, path: str, plain: bool | None = None):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            self._open(plain)
        except BaseException:  # a locked or corrupt file, a read error: the descriptor goes too
            os.close(self._fd)
            raise

    def _open(self, plain: bool | None) -> None:
        """Lock the file, learn its format and frames, and cut a torn last frame."""
        try:  # two writers would each resume from a stale view of the file
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{self.path} is being written by another process") from None
        head = os.pread(self._fd, 4, 0)
        if head:
            self.plain = not head.startswith(ZSTD_MAGIC)
        else:
            self.plain = self.path.endswith(PLAIN_SUFFIXES) if plain is None else plain
        self._compressor = zstandard.ZstdCompressor(level=3, write_content_size=True)
        self._ends = array("q")  # byte offset where each complete frame ends
        self._counts = array("q")  # lines in the file up to the end of each frame
        self._scan()
        self.dropped_tail = self._cut_torn_tail()

    def _add_frame(self, end: int, lines: int) -> None:
        self._ends.append(end)
        self._counts.append((self._counts[-1] if self._counts else 0) + lines)

    def _scan(self) -> None:
        """Find the complete frames; a plain file's frames are its lines."""
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size, 0) if size else b""
        if self.plain:
            end = data.find(b"\n")
            while end >= 0:  # the piece after the last newline is torn
                self._add_frame(end + 1, 1)
                end = data.find(b"\n", end + 1)
            return
        decompressor = zstandard.ZstdDecompressor()
        offset = 0
        while offset < len(data):
            frame = decompressor.decompressobj()
            try:
                text = frame.decompress(data[offset:])
            except zstandard.ZstdError as error:
                raise StreamError(self.path, None, f"corrupt zstd frame at byte {offset} ({error})") from None
            if not frame.eof:
                break  # the last frame is cut short
            offset = len(data) - len(frame.unused_data)
            self._add_frame(offset, text.count(b"\n"))

    def _size(self) -> int:
        return self._ends[-1] if self._ends else 0

    def _cut_torn_tail(self) -> int:
        size, good = os.fstat(self._fd).st_size, self._size()
        if good < size:
            self._truncate(good)
            print(f"synpref: {self.path}: dropped an incomplete last entry ({size - good} bytes) "
                  "left by an interrupted write", file=sys.stderr)
        return size - good

    def _truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)

    def __len__(self) -> int:
        """Complete lines in the file."""
        return self._counts[-1] if self._counts else 0

    def lines(self) -> Iterator[bytes]:
        """Every complete line in the file, in order (without newlines), read from disk."""
        with open(self.path, "rb") as handle:
            reader: Any = handle
            if not self.plain:
                reader = zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True)
            carry = b""
            while chunk := reader.read(1 << 20):
                parts = (carry + chunk).split(b"\n")
                carry = parts.pop()
                yield from parts

    def keep_lines(self, count: int) -> None:
        """Cut the file back to its first COUNT lines, which must end a frame."""
        frames = bisect.bisect_right(self._counts, count)
        if count != (self._counts[frames - 1] if frames else 0):
            raise ValueError(f"{self.path}: line {count} does not end a frame")
        del self._ends[frames:], self._counts[frames:]
        self._truncate(self._size())

    def append(self, lines: Sequence[bytes]) -> None:
        """Write LINES (serialized JSON, no newlines) as one frame; durable when this returns."""
        if not lines:
            return
        text = b"".join(line + b"\n" for line in lines)
        data = text if self.plain else self._compressor.compress(text)
        written = os.write(self._fd, data)
        if written != len(data):  # regular files do not write short unless the disk is full
            raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes); is the disk full?")
        os.fsync(self._fd)
        if self.plain:
            offset = self._size()
            for line in lines:
                offset += len(line) + 1
                self._add_frame(offset, 1)
        else:
            self._add_frame(self._size() + len(data), len(lines))

    def close(self, remove_if_empty: bool = False) -> None:
        """Release the file; with `remove_if_empty`, a file that holds nothing is deleted."""
        if remove_if_empty and not self._ends:
            os.unlink(self.path)
        os.close(self._fd)

    def __enter__(self) -> AppendStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
