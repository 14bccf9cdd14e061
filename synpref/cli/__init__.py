"""The `synpref` command: a click group whose subcommands load lazily, so `synpref cat` starts fast
even though `score` needs torch. Each subcommand lives in its own module of this package."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from synpref import __version__
from synpref.io.durable import remove_own_partials

# name -> "module:attribute" of the click command; add a line here to register a new stage.
COMMANDS: dict[str, str] = {
    "cat": "synpref.cli.cat:cat",
    "stats": "synpref.cli.stats:stats",
    "score": "synpref.cli.score:score",
    "train-rm": "synpref.cli.train_rm:train_rm",
    "rm": "synpref.cli.rm:rm",
    "dedupe": "synpref.cli.dedupe:dedupe",
    "eval": "synpref.cli.eval:eval_group",
    "review": "synpref.cli.review:review",
    "annotate": "synpref.cli.annotate:annotate",
    "filter-consistent": "synpref.cli.filter_consistent:filter_consistent",
    "route": "synpref.cli.route:route",
    "retrieve": "synpref.cli.retrieve:retrieve",
}


class ClosedPipe(Exception):
    """The reader of stdout went away. Raised in place of BrokenPipeError, which click's standalone
    mode would otherwise catch and turn into exit status 1, the status of a real failure."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so the `with` blocks of the run (Stage, RecordWriter,
    AtomicFile, the score resume file) abort and clean up as for Ctrl-C. A BaseException, so that
    no `except Exception` in a library (model loading, say) swallows it."""


TERM_GRACE_S = 5.0  # after SIGTERM, the longest the cleanup may take (or a torch op may hold the
# main thread) before the process ends at once
_terminating = threading.Event()


def _unsafe(frame: FrameType | None) -> bool:
    """Whether an exception raised in FRAME could be lost or fatal: during an import (torch's C
    module imports numpy and drops a failure, leaving numpy half imported; pybind11 callbacks abort
    the process on one) or in a finalizer (the exception is printed and dropped)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib") or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _end_now() -> None:
    """End the process without unwinding, first deleting the temp files of its open -o outputs."""
    remove_own_partials()
    os._exit(128 + signal.SIGTERM)


def _watchdog() -> None:
    """Started with the process (a thread started inside a signal handler could deadlock)."""
    _terminating.wait()
    time.sleep(TERM_GRACE_S)
    _end_now()


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: raise Terminated in the main thread, or end at once where raising is unsafe; the
    watchdog ends the process if the cleanup has not within TERM_GRACE_S."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not interrupt the cleanup
    if _unsafe(frame):
        _end_now()
    _terminating.set()
    raise Terminated


@contextmanager
def _pipe_closing_is_no_failure() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise ClosedPipe from None


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (or help lists it)."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _pipe_closing_is_no_failure():  # --help and --version print while the context is made
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _pipe_closing_is_no_failure():
            return super().invoke(ctx)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="synpref")
def cli() -> None:
    """Curate reward-model preference data.

    Every subcommand reads JSON Lines (zstd, gzip or plain, sniffed by magic bytes; also .json
    arrays, .parquet and directories of shards; no path or '-' is stdin) and writes zstd JSONL to
    stdout or -o PATH, so stages pipe:

    \b
        synpref cat raw/ | synpref stats
        synpref score -m rm/ < pairs.jsonl.zst | synpref eval pairs

    See `man synpref-COMMAND` or `synpref COMMAND --help`.

    \b
    Examples:
        synpref cat hh-rlhf/ skywork/ | synpref dedupe --removed removed.jsonl.zst | synpref stats
        synpref score -m rm/ --name rm < pool.jsonl.zst | synpref route --rm rm --unconfident judge.jsonl.zst > sure.jsonl.zst
        bash examples/two-stage/run.sh      # the whole two-stage curation on examples/data (make demo)
    """


def main() -> None:
    """Console entry point. A closed pipe (`synpref cat x | head`) ends the run quietly with status
    141, as SIGPIPE ends a C tool; SIGTERM cleans up like Ctrl-C and ends with status 143."""
    # transformers draws a bar at every model load ("Loading weights", the GGUF conversion): in a
    # pipe of stages they flood stderr between synpref's own bars; HF_HUB_DISABLE_PROGRESS_BARS=0 keeps them
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    threading.Thread(target=_watchdog, name="synpref-sigterm", daemon=True).start()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        try:
            cli.main(prog_name="synpref", standalone_mode=True)
        finally:
            if sys.stdout is not None:  # None when started with stdout closed (`>&-`)
                sys.stdout.flush()  # what is still buffered fails here, not in the interpreter's exit
    except (ClosedPipe, BrokenPipeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the exit's own flush of stdout then succeeds
        sys.exit(128 + signal.SIGPIPE)
    except Terminated:
        _end_now()  # the run has unwound; exiting the interpreter could wait on a library's threads
