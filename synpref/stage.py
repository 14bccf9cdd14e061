"""Plumbing shared by every stage: sharded reading with error diversion, the kept / removed / errors
outputs, counters printed at the end, and the progress bar.

A stage function takes a `Stage` and calls `emit` / `remove` (or `route` with a `Verdict`); the CLI
builds the Stage from the shared options in `synpref.cli.options`, and `Stage.over(records)` builds
one over records in memory, so every stage is also a plain Python function over records.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from tqdm import tqdm

from synpref.io import DEFAULT_LEVEL, RawLine, RecordWriter, Shard, StreamError, expand_paths, iter_raw
from synpref.records import Expansion, LayoutOptions, Normalizer, Record, RecordError

MEMORY = "<records>"  # the input name of a Stage over records in memory
ON_ERROR = ("fail", "skip", "count")
# A record's position is (input line index) * POSITION_STRIDE + (its index among the records its row
# expanded into): unique, in input order, and the same in every shard and pass.
POSITION_STRIDE = 1 << 16
Check = Callable[[Record], None]  # raises RecordError naming the field a stage cannot use


@dataclass
class StageOptions:
    """What every command accepts (see `synpref.cli.options` for the flags).

    on_error: "fail" raises on the first bad line, "skip" diverts bad lines to `errors`, "count"
    only counts them (for a pass whose sibling pass over the same input writes them).
    diverted: where rows a layout turns into no record (a dropped tie, differing chat histories) are
    written with their reason; without it they are only counted (`diverted_<reason>`).
    layouts: how rows of public layouts become records (`synpref.records.LayoutOptions`).
    """

    inputs: list[str] = field(default_factory=list)
    output: str | None = None
    removed: str | None = None
    errors: str | None = None
    diverted: str | None = None
    on_error: str = "fail"
    shard: Shard | None = None
    progress: bool | None = None
    level: int = DEFAULT_LEVEL
    threads: int = -1
    layouts: LayoutOptions = field(default_factory=LayoutOptions)


class MissingOutput(ValueError):
    """A record had to go to an output (`removed`, `errors`) the run was not given."""

    def __init__(self, kind: str):
        self.kind = kind
        super().__init__(f"this run needs a {kind} output: a record must go there and nothing is dropped")


@dataclass(frozen=True)
class Verdict:
    """A filter's decision about one record: kept or removed, and the rule that decided it."""

    keep: bool
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


class MemoryWriter:
    """An output that collects records in a list (a Stage over records in memory)."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def write(self, record: Any) -> None:
        self.records.append(record)

    def write_line(self, data: bytes) -> None:
        self.records.append(orjson.loads(data))

    def close(self) -> None:
        pass

    abort = finish = close


def _default_id(path: str, line: int) -> str:
    return f"{_stem(path) or 'stdin'}-{line:08d}"


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].split(".", 1)[0]


class Stage:
    """One run of a command: reads its inputs, owns its outputs, counts what happened.

    `position` identifies the record last read across the concatenated input (all shards): its line's
    index times POSITION_STRIDE plus its index among the records that line expanded into (0 for the
    usual one-line-one-record). Sharded passes that must agree on record identity (dedupe's cluster
    mode) key their results by it.
    A stage that reads its input twice opens with `rereadable=True` (stdin is then spooled) and
    calls `reread()` for the second pass.
    """

    def __init__(self, name: str, options: StageOptions, emits: bool = True, rereadable: bool = False):
        if options.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, not {options.on_error!r}")
        if options.on_error == "skip" and not options.errors:
            raise ValueError("on_error 'skip' needs an errors path (nothing is dropped silently)")
        self.name, self.options, self.emits = name, options, emits
        self._normalize = Normalizer(options.layouts).function
        self.counts: Counter[str] = Counter()
        self.position = -1
        self._writers: dict[str, Any] = {}
        self._memory: list[Any] | None = None
        self._spool: str | None = None
        self._rereadable = rereadable
        self._rereading = False

    @classmethod
    def over(cls, name: str, records: Iterable[Any], **options: Any) -> Stage:
        """A Stage whose input is RECORDS and whose outputs are lists (`outputs(kind)`)."""
        stage = cls(name, StageOptions(inputs=[MEMORY], **options))
        stage._memory = list(records)
        for kind in ("output", "removed", "errors", "diverted"):
            stage._writers[kind] = MemoryWriter()
        return stage

    def outputs(self, kind: str = "output") -> list[Any]:
        """What a Stage over records in memory wrote to KIND."""
        return self._writers[kind].records

    # -- input --------------------------------------------------------------------------------------
    def _files(self) -> Iterator[tuple[str, Iterator[RawLine]]]:
        if self._memory is not None:
            yield MEMORY, (RawLine(MEMORY, number, row) for number, row in enumerate(self._memory, 1))
            return
        for path in expand_paths(self.options.inputs):
            if path == "-" and self._spool is not None:
                yield path, iter_raw(self._spool)
            elif path == "-" and self._rereadable:
                yield path, self._spooled_stdin()
            else:
                yield path, iter_raw(path)

    def _spooled_stdin(self) -> Iterator[RawLine]:
        """Stdin's records, copied as read to a temporary zstd file that `reread` reads."""
        handle, spool = tempfile.mkstemp(prefix="synpref-stdin-", suffix=".jsonl.zst")
        os.close(handle)
        self._spool = spool
        with RecordWriter(spool, level=1, threads=0) as copy:
            for raw in iter_raw("-"):
                copy.write_line(raw.data) if type(raw.data) is bytes else copy.write(raw.data)
                yield raw

    def raw_lines(self) -> Iterator[RawLine]:
        """Unparsed input lines of this shard, in input order; unreadable files follow on_error."""
        position = 0
        shard, stride = self.options.shard, POSITION_STRIDE
        for _, lines in self._files():
            try:
                for raw in lines:
                    position += 1
                    if shard is None or shard.owns(position - 1):
                        self.position = (position - 1) * stride
                        yield raw
            except StreamError as error:
                self._divert(error, None)

    def records(
        self, normalized: bool = True, progress: bool = True, check: Check | None = None
    ) -> Iterator[Record]:
        """Parsed (and by default canonical) records; bad ones raise or go to errors.

        `progress=False` leaves the bar to a stage that shows its own (pairs/s, tokens/s)."""
        for record, _ in self.records_with_bytes(normalized, progress, check):
            yield record

    def records_with_bytes(
        self, normalized: bool = True, progress: bool = True, check: Check | None = None
    ) -> Iterator[tuple[Record, bytes | None]]:
        """Records, each with its input line when the record is exactly what was read.

        A stage that passes a record on untouched hands those bytes to `emit`, which writes them
        instead of serializing the record again (the costliest step of a pass-through stage).
        A row that normalizes to several records (or none) is handed to `_expanded`.
        `check` raises RecordError for a record the stage cannot use (a malformed field it reads):
        it is then a bad line like any other (file:line:field, or --errors), located where it was read.
        """
        bar = self.progress_bar(show=progress, unit="rec")
        # this loop runs once per record of every command: what it uses is bound to locals
        tick = None if bar.disable else bar.update
        normalize, expansion, counts, loads, bytes_type = self._normalize, Expansion, self.counts, orjson.loads, bytes
        rereading = self._rereading
        for raw in self.raw_lines():
            data = raw.data
            try:
                row = loads(data) if type(data) is bytes_type else data
                record = normalize(row, data) if normalized else row  # the line, for its duplicate keys
                if check is not None and type(record) is not expansion:
                    check(record)
            except RecordError as error:
                self._divert(StreamError(raw.path, raw.line, str(error), error.field), raw)
                continue
            except orjson.JSONDecodeError:
                try:
                    raw.parse()  # raises the located error
                except StreamError as error:
                    self._divert(error, raw)
                continue
            if type(record) is expansion:
                yield from self._expanded(record, raw, row, bar, check)
                continue
            if not rereading:
                counts["read"] += 1
            if tick is not None:
                tick()
            unchanged = record is row and type(data) is bytes_type
            if normalized and ("id" not in record or "source" not in record):
                # rows without an id or source get stable ones from where they were read
                record.setdefault("id", _default_id(raw.path, raw.line))
                record.setdefault("source", _stem(raw.path))
                unchanged = False
            yield record, data if unchanged else None
        bar.close()

    def _expanded(
        self, expansion: Expansion, raw: RawLine, row: Any, bar: tqdm, check: Check | None = None
    ) -> Iterator[tuple[Record, None]]:
        """The records of one row that a layout expanded: counted as `read` once, `expanded` for each
        record beyond the first, `skipped_<reason>` for each candidate pair the layout's rule did not
        form; a row that gives none is `diverted_<reason>` (and written to --diverted)."""
        if len(expansion) >= POSITION_STRIDE:
            self._divert(StreamError(raw.path, raw.line, f"this {expansion.layout} row expands into "
                                     f"{len(expansion):,} records, more than {POSITION_STRIDE - 1:,}"), raw)
            return
        if not self._rereading:
            self.counts["read"] += 1
            if len(expansion) > 1:
                self.counts["expanded"] += len(expansion) - 1
            for reason, count in expansion.skipped.items():
                self.counts[f"skipped_{reason}"] += count
            if expansion.diverted:
                self._divert_row(expansion, raw, row)
        bar.update(len(expansion))
        base = self.position
        default_id = None
        for index, record in enumerate(expansion):
            self.position = base + index
            if "id" not in record:  # the file-and-line id, and the record's index within its row
                default_id = default_id or _default_id(raw.path, raw.line)
                record = {"id": f"{default_id}:{index}", **record}
            if "source" not in record:
                record["source"] = _stem(raw.path)
            if check is not None:
                try:
                    check(record)
                except RecordError as error:
                    self._divert(StreamError(raw.path, raw.line, f"record {index} of the row: {error}",
                                             error.field), raw)
                    continue
            yield record, None

    def _divert_row(self, expansion: Expansion, raw: RawLine, row: Any) -> None:
        """A row that became no record: counted by reason, and written to --diverted when given."""
        self.counts[f"diverted_{expansion.diverted}"] += 1
        if self.options.diverted or "diverted" in self._writers:
            self.writer("diverted").write({"file": raw.path, "line": raw.line, "layout": expansion.layout,
                                           "reason": expansion.diverted, "row": row})

    def positioned(self) -> Iterator[tuple[int, Record, bytes | None]]:
        """(input position, record, input line or None) of every record of this shard."""
        for record, original in self.records_with_bytes():
            yield self.position, record, original

    def reread(self) -> Iterator[tuple[int, Record, bytes | None]]:
        """`positioned()` again, for a stage's second pass: the first pass reported the bad lines and
        counted the records, so this one only skips the bad lines and counts no reads."""
        self._rereading = True
        try:
            yield from self.positioned()
        finally:
            self._rereading = False

    def _divert(self, error: StreamError, raw: RawLine | None) -> None:
        if self._rereading:
            return
        if self.options.on_error == "fail":
            raise error
        self.counts["errors"] += 1
        if self.options.on_error == "count":
            return
        entry: dict[str, Any] = {"file": error.path, "line": error.line, "field": error.field, "error": error.message}
        if raw is not None:
            data = raw.data
            entry["raw"] = data.decode("utf-8", "replace") if isinstance(data, bytes | bytearray) else data
        try:
            self.writer("errors").write(entry)
        except TypeError:  # a parsed row (.json, parquet) orjson cannot write back: its place still goes out
            self.writer("errors").write({**entry, "raw": None})

    # -- output -------------------------------------------------------------------------------------
    def writer(self, kind: str = "output") -> RecordWriter:
        """The writer for `output` (stdout by default), `removed`, `errors` or `diverted`, opened on first
        use."""
        if kind not in self._writers:
            path = getattr(self.options, kind)
            if kind != "output" and not path:
                raise MissingOutput(kind)
            self._writers[kind] = RecordWriter(path, level=self.options.level, threads=self.options.threads)
        return self._writers[kind]

    def emit(self, record: Record, original: bytes | None = None) -> None:
        """Write a kept record; `original` (from records_with_bytes) is written as is when given."""
        self.counts["kept"] += 1
        if original is None:
            self.writer().write(record)
        else:
            self.writer().write_line(original)

    def remove(self, record: Record, reason: str, **details: Any) -> None:
        """Send a record to `removed` with its reason; without that output the run fails (nothing lost)."""
        self.counts[f"removed_{reason}"] += 1
        self.writer("removed").write({**record, "reason": reason, **details})

    def route(self, record: Record, verdict: Verdict, original: bytes | None = None) -> None:
        """Apply a filter's verdict: a removed record carries its reason; a kept one with a reason is
        also counted by it."""
        if verdict.keep:
            if verdict.reason:
                self.counts[f"kept_{verdict.reason}"] += 1
            self.emit(record, original)
        else:
            self.remove(record, verdict.reason, **verdict.details)

    def progress_bar(self, show: bool = True, **kwargs: Any) -> tqdm:
        """tqdm on stderr: options.progress when set, else only when stderr is a terminal."""
        enabled = self.options.progress if self.options.progress is not None else sys.stderr.isatty()
        return tqdm(disable=not (show and enabled), file=sys.stderr, desc=self.name, dynamic_ncols=True, **kwargs)

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        # The kept output is opened even when nothing was kept, so `-o PATH` always appears on success.
        try:
            if kind is None and self.emits:
                self.writer()
            writers = list(self._writers.values())
            if kind is not None:
                for writer in writers:
                    writer.abort()
                return
            try:  # every output on disk first, then all put in place: a full disk leaves none there
                for writer in writers:
                    writer.finish()
            except BaseException:
                for writer in writers:
                    writer.abort()
                raise
            for writer in writers:
                writer.close()
        finally:
            if self._spool is not None and os.path.exists(self._spool):
                os.unlink(self._spool)

    def summary(self) -> str:
        parts = [f"{key} {value}" for key, value in sorted(self.counts.items())]
        return f"synpref {self.name}: " + (", ".join(parts) if parts else "no records")


def filter_records(
    records: Iterable[Record], decide: Callable[[Record], Verdict], name: str = "filter"
) -> tuple[list[Record], list[Record], Counter[str]]:
    """A filter as a plain function: (kept, removed with `reason`, counts) of canonical RECORDS."""
    with Stage.over(name, records) as stage:
        for record, original in stage.records_with_bytes(progress=False):
            stage.route(record, decide(record), original)
    return stage.outputs(), stage.outputs("removed"), stage.counts
