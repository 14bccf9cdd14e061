"""Generate man pages (groff `man` macros) from the click definitions, so `--help` and `man` never
disagree: `python -m synpref.manpages man/` rewrites them, and a test fails when they are stale.

One page for `synpref` and one per subcommand (nested groups give `synpref-dedupe-filter.1`).
"""

from __future__ import annotations

import inspect
import os
import sys
import textwrap

import click

from synpref import __version__
from synpref.cli import cli


def _escape(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _sections(help_text: str) -> tuple[list[str], list[str]]:
    """Click's help paragraphs as DESCRIPTION and EXAMPLES lines. A paragraph after a lone \\b keeps its
    line breaks; one whose first line starts with "Examples" is the EXAMPLES section (that line, less
    the word, introduces it when it says more)."""
    description: list[str] = []
    examples: list[str] = []
    for paragraph in inspect.cleandoc(help_text).split("\n\n"):
        if not paragraph.startswith("\b\n"):
            description += [".PP", _escape(" ".join(paragraph.split()))]
            continue
        body = textwrap.dedent(paragraph[2:]).strip("\n")
        heading, _, rest = body.partition("\n")
        if heading.startswith("Examples"):
            intro = heading.removeprefix("Examples").strip(" :").strip("()")
            examples += [".PP", _escape(intro[:1].upper() + intro[1:] + ":")] if intro else []
            examples += [".PP", ".nf", _escape(textwrap.dedent(rest).strip("\n")), ".fi"]
        else:
            description += [".PP", ".nf", _escape(body), ".fi"]
    return description, examples


def _option(param: click.Parameter, ctx: click.Context) -> list[str]:
    record = param.get_help_record(ctx)
    if record is None:
        return []
    names, help_text = record
    flags = ", ".join(f"\\fB{_escape(name.split(' ')[0])}\\fR" + (
        " " + _escape(name.split(" ", 1)[1]) if " " in name else "") for name in names.split(", "))
    return [".TP", flags, _escape(help_text)]


def render(command: click.Command, path: list[str], ctx: click.Context) -> str:
    """The man page of one command; `path` is its words, e.g. ['synpref', 'dedupe', 'filter']."""
    title = "-".join(path)
    description, examples = _sections(command.help or "")
    lines = [
        f'.TH {title.upper()} 1 "" "synpref {__version__}" "synpref manual"',
        ".SH NAME",
        f"{_escape(title)} \\- {_escape(command.get_short_help_str(limit=300))}",
        ".SH SYNOPSIS",
        f".B {_escape(' '.join(path))}",
        _escape(" ".join(command.collect_usage_pieces(ctx))),
        ".SH DESCRIPTION",
        *description,
    ]
    options = [
        line for param in command.get_params(ctx) if isinstance(param, click.Option) for line in _option(param, ctx)
    ]
    if options:
        lines += [".SH OPTIONS", *options]
    if examples:
        lines += [".SH EXAMPLES", *examples]
    if isinstance(command, click.Group):
        lines.append(".SH COMMANDS")
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            lines += [".TP", f"\\fB{name}\\fR", _escape(sub.get_short_help_str(limit=300))]
    see_also = ["synpref(1)"] if len(path) > 1 else []
    if isinstance(command, click.Group):
        see_also += [f"{'-'.join(path)}-{name}(1)" for name in command.list_commands(ctx)]
    if see_also:
        lines += [".SH SEE ALSO", ", ".join(f"\\fB{_escape(ref)}\\fR" for ref in see_also)]
    return "\n".join(lines) + "\n"


def pages(
    command: click.Command = cli, path: list[str] | None = None, parent: click.Context | None = None
) -> dict[str, str]:
    """File name -> page text for the command and every subcommand below it.

    Contexts are built as click builds them (the command's context_settings, inherited from the
    parent), so the pages show exactly what `--help` shows, e.g. `-h, --help`."""
    path = path or ["synpref"]
    ctx = click.Context(command, info_name=path[-1], parent=parent, **command.context_settings)
    result = {"-".join(path) + ".1": render(command, path, ctx)}
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            result.update(pages(command.get_command(ctx, name), [*path, name], ctx))
    return result


def write_pages(directory: str) -> list[str]:
    """Write all pages and delete stale synpref*.1 files; returns the names written."""
    os.makedirs(directory, exist_ok=True)
    generated = pages()
    for stale in set(os.listdir(directory)) - set(generated):
        if stale.startswith("synpref") and stale.endswith(".1"):
            os.unlink(os.path.join(directory, stale))
    for name, text in generated.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    return sorted(generated)


if __name__ == "__main__":
    written = write_pages(sys.argv[1] if len(sys.argv) > 1 else "man")
    print(f"wrote {len(written)} man pages", file=sys.stderr)
