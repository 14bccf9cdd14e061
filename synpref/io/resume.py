"""The resume file of a long stage's `-o OUTPUT` (score, annotate): finished windows of output
records appended and fsynced beside OUTPUT, so a killed run continues where it stopped and ends
with the records of an uninterrupted one."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any

import orjson

from synpref.io.durable import AppendStream


def resume_path(output: str) -> str:
    """Where a stage writing `-o OUTPUT` keeps finished records until the run completes."""
    return f"{output}.resume.jsonl"


def skip_finished(sidecar: AppendStream, window: int, records: Iterator[dict[str, Any]]) -> int:
    """Cut a resume file back to whole windows (a torn tail is done again) and consume as many
    input records, checking that they are the ones the file holds; returns how many."""
    done = len(sidecar) // window * window
    sidecar.keep_lines(done)
    for position, line in enumerate(islice(sidecar.lines(), done)):
        record = next(records, None)
        previous = orjson.loads(line)
        if record is None or record.get("id") != previous.get("id"):
            raise ValueError(
                f"{sidecar.path}: line {position + 1} holds record {previous.get('id')!r} but the input has "
                f"{None if record is None else record.get('id')!r} there; it was written from other input "
                "(delete it to start over)"
            )
    return done
