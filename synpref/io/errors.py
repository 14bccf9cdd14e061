"""The error every reader raises for bad input: it says where (file, line, field), never a traceback."""

from __future__ import annotations


class StreamError(Exception):
    """A problem in an input stream, located by file, line and (where known) field."""

    def __init__(self, path: str, line: int | None, message: str, field: str | None = None):
        self.path, self.line, self.field, self.message = path, line, field, message
        where = f"{path}:{line}" if line is not None else path
        what = f"field '{field}': {message}" if field else message
        super().__init__(f"{where}: {what}")
