"""The one stream layer every stage uses: read and write JSONL records, compressed or not.

Reading sniffs the format from magic bytes (zstd, gzip, parquet, plain JSONL or a .json array), so
users can pipe anything in. Writing produces zstd (multithreaded) unless stdout is a terminal, and
`-o PATH` is atomic: a temp file beside PATH renamed into place only after a clean close.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

import orjson
import zstandard

from synpref.io.durable import PLAIN_SUFFIXES, ZSTD_MAGIC, AtomicFile
from synpref.io.errors import StreamError

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
UTF8_BOM = b"\xef\xbb\xbf"
READ_CHUNK = 1 << 20
# 64 KiB of compressed input decompresses into about one 1 MiB output buffer: measured fastest.
COMPRESSED_CHUNK = 1 << 16
# zstd level 1 compresses ~2.4x faster than level 3 for ~12% larger files: streams between stages are
# transient, and on a 2-core node level 3 would cost more CPU than reading and parsing the records.
DEFAULT_LEVEL = 1
# The brackets and commas of JSON text, strings matched whole so that none inside them counts.
_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|[][{},]')
STREAM_SUFFIXES = (".jsonl", ".json", ".zst", ".zstd", ".gz", ".parquet", ".ndjson")


@dataclass(frozen=True)
class Shard:
    """Record i of the concatenated input belongs to shard i % count: disjoint and covering."""

    index: int
    count: int

    def owns(self, position: int) -> bool:
        return position % self.count == self.index

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index_text, count_text = text.split("/")
            shard = cls(int(index_text), int(count_text))
        except ValueError:
            raise ValueError(f"a shard is I/N with integers, got {text!r}") from None
        if shard.count < 1 or not 0 <= shard.index < shard.count:
            raise ValueError(f"shard {text}: need 0 <= I < N")
        return shard

    @classmethod
    def from_slurm(cls, environ: dict[str, str] | None = None) -> Shard | None:
        """SLURM array tasks shard themselves: index = TASK_ID - TASK_MIN, count = TASK_COUNT."""
        env = os.environ if environ is None else environ
        if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
            return None
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return cls(int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"]))


@dataclass
class RawLine:
    """One input record before normalization, with where it came from."""

    path: str
    line: int
    data: bytes | Any  # JSONL bytes, or an already parsed object (.json arrays, parquet rows)

    def parse(self) -> Any:
        if type(self.data) is not bytes:
            return self.data
        try:
            return orjson.loads(self.data)
        except orjson.JSONDecodeError as error:
            raise StreamError(self.path, self.line, f"malformed JSON ({error})") from None


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files to read, in a stable order: directories become their sorted stream files; '-' is stdin."""
    files: list[str] = []
    for path in paths or ["-"]:
        if path != "-" and os.path.isdir(path):
            found = _folder_files(path)
            if not found:
                raise StreamError(path, None, "directory holds no .jsonl/.json/.zst/.gz/.parquet files")
            files.extend(found)
        elif path != "-" and not os.path.exists(path):
            raise StreamError(path, None, "no such file")
        else:
            files.append(path)
    return files


def files_sha256(files: list[str], names: list[str | None] | None = None,
                 skip_unreadable: bool = False) -> str:
    """SHA-256 of FILES' bytes in order, each after its entry of NAMES (when given and not None):
    what an index or a checkpoint records of its inputs. A file that cannot be read is a StreamError
    naming it, or with SKIP_UNREADABLE (--on-error skip, where the reader diverts it too) its name
    and the error stand in for its bytes."""
    digest = hashlib.sha256()
    for path, name in zip(files, names or [None] * len(files), strict=True):
        if name is not None:
            digest.update(name.encode("utf-8", "surrogatepass") + b"\0")
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        except OSError as error:
            if not skip_unreadable:
                raise StreamError(path, None, f"cannot read: {error.strerror or error}") from None
            digest.update(f"unreadable {path}: {error.strerror or error}\0".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _folder_files(folder: str) -> list[str]:
    """The stream files under FOLDER, sorted. Linked sub-folders are read too (a folder of data
    linked in is meant to be read); a folder reached a second time (a link to an ancestor, or two
    links to one folder) is an error naming the link, as its files would be read twice or forever."""
    found: list[str] = []
    reached_as: dict[str, str] = {}  # real path of each folder read -> the path it was read as
    for root, folders, names in os.walk(folder, onerror=_unlistable, followlinks=True):
        real = os.path.realpath(root)
        if real in reached_as:
            raise StreamError(root, None, f"a link to {reached_as[real]}, which is already read (a link cycle, "
                              "or a second link to one folder): remove the link")
        reached_as[real] = root
        folders.sort()  # a deterministic walk: the same link is the one named
        found.extend(os.path.join(root, name) for name in names
                     if name.endswith(STREAM_SUFFIXES) and not name.startswith("."))
    return sorted(found)


def _unlistable(error: OSError) -> None:
    """os.walk would skip a folder it cannot list, and lose its files silently."""
    raise StreamError(error.filename or "?", None, f"cannot list this folder ({error.strerror or error})")


def _open_binary(path: str) -> BinaryIO:
    """The file (or stdin); a file that cannot be opened (a dangling link in a folder of shards, no
    permission, a socket) is a StreamError naming it."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # noqa: SIM115
    except OSError as error:
        raise StreamError(path, None, f"cannot open ({error.strerror or error})") from None


def _frames(
    handle: BinaryIO, path: str, first: bytes, new_decoder: Callable[[], Any], error: type[Exception], kind: str
) -> Iterator[bytes]:
    """Decompress concatenated zstd frames or gzip members. One cut short raises: zstandard's stream
    reader and gzip's reader would end the stream early or with an unlocated error."""
    decoder = new_decoder()
    pending, fed = first, False
    while True:
        raw = pending or handle.read(COMPRESSED_CHUNK)
        pending = b""
        if not raw:
            break
        while raw:
            try:
                out = decoder.decompress(raw)
            except error as problem:
                raise StreamError(path, None, f"corrupt {kind} data ({problem})") from None
            fed = True
            if out:
                yield out
            if decoder.eof:
                raw, decoder, fed = decoder.unused_data, new_decoder(), False
            else:
                raw = b""
    if fed and not decoder.eof:
        raise StreamError(path, None, f"truncated {kind} stream (the last frame is incomplete)")


def _zstd_chunks(handle: BinaryIO, path: str, first: bytes) -> Iterator[bytes]:
    decompressor = zstandard.ZstdDecompressor()
    return _frames(
        handle, path, first, lambda: decompressor.decompressobj(write_size=READ_CHUNK), zstandard.ZstdError, "zstd"
    )


def _gzip_chunks(handle: BinaryIO, path: str, first: bytes) -> Iterator[bytes]:
    return _frames(handle, path, first, lambda: zlib.decompressobj(wbits=31), zlib.error, "gzip")


def _plain_chunks(handle: BinaryIO, path: str, first: bytes) -> Iterator[bytes]:
    if chunk := first + handle.read(READ_CHUNK):  # the sniffed bytes with a whole first chunk
        yield chunk
    while chunk := handle.read(READ_CHUNK):
        yield chunk


def _lines(chunks: Iterator[bytes], path: str) -> Iterator[tuple[int, bytes]]:
    """Split decompressed chunks into (1-based line number, line) pairs, skipping blank lines."""
    carry = b""
    number = 0
    try:
        for chunk in chunks:
            parts = chunk.split(b"\n")
            if carry:  # only the line that straddles two chunks is joined (copied) again
                parts[0] = carry + parts[0]
            carry = parts.pop()
            for part in parts:
                number += 1
                if part and not part.isspace():
                    yield number, part
    except StreamError as error:
        raise StreamError(path, number + 1, f"{error.message}; read {number} complete lines") from None
    if carry and not carry.isspace():
        yield number + 1, carry


def _one_value(data: bytes, path: str) -> Any:
    """DATA as one JSON value (a .json file), or None when it is JSON Lines after all: the value ends
    and more content follows, or the file is no value but its second line is an object of its own
    (JSON Lines whose first line is an array, or a broken one). A .json array spans the file; one
    nested too deep for orjson is read element by element (`_array_elements`)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        lines = [line for line in data.split(b"\n", 2)[:2] if line.strip()]
        if error.msg.startswith("unexpected content after document") or (
                len(lines) == 2 and lines[1].lstrip()[:1] == b"{" and _is_object(lines[1])):
            return None
        if error.msg == "depth limit exceeded":
            return _array_elements(data)
        raise StreamError(path, error.lineno, f"malformed JSON ({error.msg} at column {error.colno})") from None


def _array_elements(data: bytes) -> list[Any]:
    """The elements of the .json array DATA, each parsed alone. orjson reads no document nested
    past 1024 levels, so one element that deep would make the whole file one error and lose its
    valid records: split at the array's own commas, an element that does not parse is left as its
    bytes, which the reader reports at its position (anything after the array is one more)."""
    elements: list[bytes] = []
    depth = start = 0
    for token in _STRUCTURE.finditer(data):
        mark = data[token.start()]
        if mark in b"[{":
            depth += 1
            if depth == 1:
                start = token.end()
        elif mark in b"]}":
            depth -= 1
            if depth == 0:
                elements.append(data[start:token.start()])
                start = token.end()
                break
        elif mark == ord(",") and depth == 1:
            elements.append(data[start:token.start()])
            start = token.end()
    if data[start:].strip():  # an array cut short, or content after it
        elements.append(data[start:])
    return [_parsed_or_bytes(element) for element in elements]


def _parsed_or_bytes(element: bytes) -> Any:
    try:
        return orjson.loads(element)
    except orjson.JSONDecodeError:
        return element  # the reader reports it, as malformed JSON at its position


def _is_object(line: bytes) -> bool:
    try:
        return type(orjson.loads(line)) is dict
    except orjson.JSONDecodeError:
        return False


def _parquet_rows(handle: BinaryIO, path: str, first: bytes) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise StreamError(path, None, "reading parquet needs pyarrow: pip install 'synpref[parquet]'") from None
    import io as _io

    source = path if path != "-" else _io.BytesIO(first + handle.read())
    number = 0
    try:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield number, row
    except (pa.ArrowException, OSError) as error:  # a truncated or corrupt file
        raise StreamError(path, None, f"unreadable parquet after {number} rows ({error})") from None


def iter_raw(path: str) -> Iterator[RawLine]:
    """Every record of one file (or '-'), unparsed where possible so skipped shards cost no JSON work."""
    display = "<stdin>" if path == "-" else path
    handle = _open_binary(path)
    try:
        first = handle.read(4)
        if first.startswith(PARQUET_MAGIC):
            for number, row in _parquet_rows(handle, path, first):
                yield RawLine(display, number, row)
            return
        if first.startswith(ZSTD_MAGIC):
            chunks = _zstd_chunks(handle, display, first)
        elif first.startswith(GZIP_MAGIC):
            chunks = _gzip_chunks(handle, display, first)
        else:
            chunks = _plain_chunks(handle, display, first)
        try:
            peeked = next(chunks, b"")
        except StreamError as error:
            raise StreamError(display, 1, f"{error.message}; read 0 complete lines") from None
        if peeked.startswith(UTF8_BOM):  # written by some Windows tools; no JSON reader takes it
            peeked = peeked[len(UTF8_BOM):]
        if peeked.lstrip()[:1] == b"[" and not _first_line_then_more(peeked):
            data = peeked + b"".join(chunks)
            rows = _one_value(data, display)
            if rows is not None:
                for number, row in enumerate(rows if isinstance(rows, list) else [rows], 1):
                    yield RawLine(display, number, row)
                return
            peeked, chunks = data, iter(())
        for number, line in _lines(_chain(peeked, chunks), display):
            yield RawLine(display, number, line)
    except OSError as error:  # a read failing under us (EIO, a file that is a folder)
        raise StreamError(display, None, f"cannot read ({error.strerror or error})") from None
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def _first_line_then_more(data: bytes) -> bool:
    """Whether DATA starts with a line that is a whole JSON value and goes on after it: JSON Lines
    whose first line is an array, not a .json array (which spans the file)."""
    end = data.find(b"\n")
    if end < 0 or not data[end:].strip():
        return False
    try:
        orjson.loads(data[:end])
    except orjson.JSONDecodeError:
        return False
    return True


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


class RecordWriter:
    """Writes records as JSON lines to a file or stdout.

    Format: zstd unless the target is a terminal (plain) or PATH ends in .jsonl/.json (plain) or .gz
    (gzip). With a PATH the bytes go to a temp file in the same directory that replaces PATH only on
    a clean close, so a killed job never leaves a complete-looking half file.
    """

    def __init__(self, path: str | None = None, level: int = DEFAULT_LEVEL, threads: int = -1):
        self.path = None if path in (None, "-") else path
        self.count = 0
        self._file: AtomicFile | None = None
        if self.path is None:
            target: IO[bytes] = sys.stdout.buffer
            plain = sys.stdout.isatty()
            gzipped = False
        else:
            self._file = AtomicFile(self.path)
            target = self._file.handle
            plain = self.path.endswith(PLAIN_SUFFIXES)
            gzipped = self.path.endswith(".gz")
        self._target = target
        if plain:
            self._sink: IO[bytes] = target
        elif gzipped:
            self._sink = gzip.GzipFile(fileobj=target, mode="wb", compresslevel=min(max(level, 1), 9))
        else:
            compressor = zstandard.ZstdCompressor(level=level, threads=threads)
            self._sink = compressor.stream_writer(target, closefd=False)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._finished = False

    def write(self, record: Any) -> None:
        self.write_line(orjson.dumps(record))

    def write_line(self, data: bytes) -> None:
        """Write one already serialized JSON line (no trailing newline)."""
        self._buffer.append(data)
        self._buffered += len(data) + 1
        self.count += 1
        if self._buffered >= READ_CHUNK:
            self.flush()

    def write_many(self, records: Iterable[Any]) -> None:
        for record in records:
            self.write(record)

    def flush(self) -> None:
        if self._buffer:
            self._buffer.append(b"")
            self._sink.write(b"\n".join(self._buffer))
            self._buffer.clear()
            self._buffered = 0

    def finish(self) -> None:
        """End the stream and put it on disk (stdout: flushed), PATH not yet replaced: the step that
        can fail on a full disk. A failure on the way (a closed pipe, SIGTERM too) aborts."""
        if self._finished:
            return
        try:
            self.flush()
            if self._sink is not self._target:
                self._sink.close()  # ends the gzip member / zstd frame; the target stays open
            self._target.flush()
            if self._file is not None:
                self._file.sync()
        except BaseException:
            self.abort()
            raise
        self._finished = True

    def close(self) -> None:
        """Finish the stream; only now does PATH appear. A failure on the way aborts, so no temp file
        is left behind."""
        self.finish()
        if self._file is not None:
            self._file.commit()
            self._file = None

    def abort(self) -> None:
        """Drop a half-written output: the temp file goes, PATH is left as it was."""
        if self._file is not None:
            self._file.abort()
            self._file = None

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_records(records: Iterable[Any], path: str | None = None, **writer_options: Any) -> int:
    """Write all records to PATH (or stdout); returns how many were written."""
    with RecordWriter(path, **writer_options) as writer:
        writer.write_many(records)
    return writer.count


def read_json_records(path: str) -> Iterator[Any]:
    """Parse every record of one file as it is, without normalization (for side files such as labels)."""
    for raw in iter_raw(path):
        yield raw.parse()
