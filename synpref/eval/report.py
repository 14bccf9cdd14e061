"""Reports: one benchmark, several models side by side, every score with its bootstrap interval.

A `Report` is plain data (JSON round-trips, so SLURM array tasks write one report per checkpoint and
`merge` joins them); the terminal table and the markdown file are two renderings of it.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from synpref.io import write_atomic


@dataclass
class Row:
    """One score: `depth` 0 is the headline, 1 a section/domain, 2 a subset inside a section."""

    name: str
    score: float
    ci: tuple[float, float] | None = None
    n: int = 0
    depth: int = 1


@dataclass
class ModelResult:
    rows: list[Row]
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. RM-Bench matrix, best-of-K curves


@dataclass
class Report:
    benchmark: str
    rule: str  # which official formula, and where it comes from
    models: dict[str, ModelResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "rule": self.rule,
            "notes": self.notes,
            "models": {name: {"rows": [_row_dict(r) for r in result.rows], "extra": result.extra}
                       for name, result in self.models.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        models = {
            name: ModelResult(
                rows=[Row(r["name"], r["score"], tuple(r["ci"]) if r.get("ci") else None, r.get("n", 0),
                          r.get("depth", 1)) for r in result["rows"]],
                extra=result.get("extra", {}),
            )
            for name, result in data["models"].items()
        }
        return cls(data["benchmark"], data["rule"], models, list(data.get("notes", [])))


def report_json(report: Report) -> bytes:
    """The report as indented JSON (what report.json holds and `--json` prints)."""
    return orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def read_report(path: str) -> Report:
    """A report.json written by `save_report`."""
    with open(path, "rb") as handle:
        return Report.from_dict(orjson.loads(handle.read()))


def save_report(report: Report, directory: str) -> list[str]:
    """Write report.json, report.md and the PNG plots into DIRECTORY, each file atomically; returns
    the names written (the plots need matplotlib, the optional `eval` extra)."""
    from synpref.eval.plots import write_plots

    os.makedirs(directory, exist_ok=True)
    images = write_plots(report, directory)
    write_atomic(os.path.join(directory, "report.json"), report_json(report))
    write_atomic(os.path.join(directory, "report.md"), format_markdown(report, images).encode())
    return ["report.json", "report.md", *images]


def _row_dict(row: Row) -> dict[str, Any]:
    data = asdict(row)
    data["ci"] = list(row.ci) if row.ci else None
    return data


def merge(reports: list[Report]) -> Report:
    """Join reports of one benchmark computed for different models (e.g. one per SLURM task)."""
    if not reports:
        raise ValueError("nothing to merge")
    first = reports[0]
    merged = Report(first.benchmark, first.rule, {}, list(first.notes))
    for report in reports:
        if report.benchmark != first.benchmark:
            raise ValueError(f"cannot merge a {report.benchmark} report into a {first.benchmark} report")
        for name, result in report.models.items():
            if name in merged.models:
                raise ValueError(f"model {name!r} appears in two reports")
            merged.models[name] = result
        merged.notes += [note for note in report.notes if note not in merged.notes]
    return merged


def row_names(report: Report) -> list[tuple[str, int]]:
    """Row names in first-seen order across models, with their depth."""
    seen: dict[str, int] = {}
    for result in report.models.values():
        for row in result.rows:
            seen.setdefault(row.name, row.depth)
    return list(seen.items())


def _cell(row: Row | None) -> str:
    if row is None or math.isnan(row.score):
        return "-"
    if row.ci is None or math.isnan(row.ci[0]):
        return f"{100 * row.score:.1f}"
    return f"{100 * row.score:.1f} [{100 * row.ci[0]:.1f}, {100 * row.ci[1]:.1f}]"


def _grid(report: Report) -> tuple[list[str], list[list[str]]]:
    models = list(report.models)
    header = ["", "n", *models]
    lookup = {name: {row.name: row for row in result.rows} for name, result in report.models.items()}
    body = []
    for name, depth in row_names(report):
        rows = [lookup[m].get(name) for m in models]
        count = next((r.n for r in rows if r is not None), 0)
        body.append(["  " * depth + name, f"{count:,}" if count else "", *(_cell(r) for r in rows)])
    return header, body


def format_table(report: Report) -> str:
    """Fixed-width table for a terminal: scores in percent with 95% bootstrap intervals."""
    header, body = _grid(report)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [f"{report.benchmark} - {report.rule}", ""]
    lines.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths,
                                                                                                  strict=True))))
    for line in body:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths,
                                                                                                   strict=True))))
    lines += [f"note: {note}" for note in report.notes]
    lines.append("scores in %, [95% bootstrap interval]")
    return "\n".join(lines)


def format_markdown(report: Report, images: list[str] | None = None) -> str:
    header, body = _grid(report)
    lines = [f"# {report.benchmark}", "", f"Rule: {report.rule}", ""]
    lines.append("| " + " | ".join(header[:1] + header[1:]) + " |")
    lines.append("|" + "---|" + "---:|" * (len(header) - 1))
    for line in body:
        name = line[0].strip()
        depth = len(line[0]) - len(line[0].lstrip(" "))
        label = f"**{name}**" if depth == 0 else ("&nbsp;" * 2 * (depth // 2)) + name
        lines.append("| " + " | ".join([label, *line[1:]]) + " |")
    lines += ["", "Scores in %, with 95% percentile-bootstrap intervals (seeded, resampled within subsets)."]
    lines += [f"- {note}" for note in report.notes]
    for image in images or []:
        lines += ["", f"![{image}]({image})"]
    return "\n".join(lines) + "\n"
