"""Files and streams: everything synpref reads or writes goes through here.

- `streams`: JSON Lines records in and out (zstd / gzip / plain / .json / parquet, sharding).
- `durable`: atomic whole-file writes and resumable append streams.
- `resume`: the resume file of a long stage's `-o` (score, annotate).
- `ids`: many record ids as one utf-8 blob and offsets.
- `errors`: `StreamError`, the located error of bad input.
"""

from synpref.io.durable import PLAIN_SUFFIXES, ZSTD_MAGIC, AppendStream, AtomicFile, write_atomic
from synpref.io.errors import StreamError
from synpref.io.streams import (
    DEFAULT_LEVEL,
    RawLine,
    RecordWriter,
    Shard,
    expand_paths,
    files_sha256,
    iter_raw,
    read_json_records,
    write_records,
)

__all__ = [
    "DEFAULT_LEVEL",
    "PLAIN_SUFFIXES",
    "ZSTD_MAGIC",
    "AppendStream",
    "AtomicFile",
    "RawLine",
    "RecordWriter",
    "Shard",
    "StreamError",
    "expand_paths",
    "files_sha256",
    "iter_raw",
    "read_json_records",
    "write_atomic",
    "write_records",
]
