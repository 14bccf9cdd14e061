"""The `synpref` command: a click group whose subcommands load lazily, so `synpref cat` starts fast
even though `score` needs torch. Each subcommand lives in its own module of this package."""

from __future__ import annotations

import importlib
import os
import sys

import click

from synpref import __version__

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
}


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (or help lists it)."""

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
    """


def main() -> None:
    """Console entry point: a closed pipe (`synpref cat x | head`) ends the run quietly."""
    try:
        cli.main(prog_name="synpref", standalone_mode=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
