"""PNG plots of a report (matplotlib, the optional `eval` extra): per-subset bars with intervals for
every benchmark, the RM-Bench 3x3 style heatmaps, and PPE best-of-K curves."""

from __future__ import annotations

import math
import os
import re

from synpref.eval.report import Report, row_names
from synpref.io import AtomicFile


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install 'synpref[eval]' (or matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str) -> None:
    """PNG to PATH through an atomic file: a killed run leaves no half-written image."""
    try:
        with AtomicFile(path) as handle:
            fig.savefig(handle, format="png", dpi=120)
    finally:
        plt.close(fig)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def subset_bars(report: Report, path: str) -> str:
    """Horizontal bars: one row per section/subset, one bar per model, 95% intervals as error bars."""
    plt = _pyplot()
    names = [n for n, _ in row_names(report)]
    models = list(report.models)
    height = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.32 * len(names) * max(1, len(models)) ** 0.5))
    for m, model in enumerate(models):
        lookup = {row.name: row for row in report.models[model].rows}
        ys, xs, low, high = [], [], [], []
        for i, name in enumerate(names):
            row = lookup.get(name)
            if row is None or math.isnan(row.score):
                continue
            ys.append(i + (m - (len(models) - 1) / 2) * height)
            xs.append(100 * row.score)
            ci = row.ci if row.ci and not math.isnan(row.ci[0]) else (row.score, row.score)
            low.append(100 * (row.score - ci[0]))
            high.append(100 * (ci[1] - row.score))
        ax.barh(ys, xs, height=height, xerr=[low, high], capsize=2, label=model, error_kw={"elinewidth": 0.8})
    depths = dict(row_names(report))
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([("    " * depths[n]) + n for n in names], fontsize=8)
    for tick, name in zip(ax.get_yticklabels(), names, strict=True):
        tick.set_fontweight("bold" if depths[name] == 0 else "normal")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.axvline(50, color="grey", linewidth=0.6, linestyle=":")
    ax.set_xlabel("score (%), 95% bootstrap interval")
    ax.set_title(f"{report.benchmark}", fontsize=11)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _save(plt, fig, path)
    return path


def rmbench_heatmaps(report: Report, path: str) -> str:
    """One 3x3 matrix per model: rows chosen style, columns rejected style; upper triangle = hard."""
    plt = _pyplot()
    models = [m for m in report.models if "matrix" in report.models[m].extra]
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        extra = report.models[model].extra
        matrix, styles = extra["matrix"], extra["styles"]
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="RdYlGn")
        for i in range(3):
            for j in range(3):
                ax.text(j, i, f"{100 * matrix[i][j]:.1f}", ha="center", va="center", fontsize=10)
        ax.set_xticks(range(3), styles, fontsize=8)
        ax.set_yticks(range(3), styles, fontsize=8)
        ax.set_xlabel("rejected response style")
        ax.set_ylabel("chosen response style")
        ax.set_title(f"{model}\n(upper right = hard, diagonal = normal)", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    _save(plt, fig, path)
    return path


def best_of_k_curves(report: Report, path: str) -> str:
    """Best-of-K accuracy against K (log2 axis), one panel per correctness set, shaded intervals."""
    plt = _pyplot()
    sets = sorted({b for r in report.models.values() for b in r.extra.get("best_of_k", {})})
    fig, axes = plt.subplots(1, len(sets), figsize=(4.5 * len(sets), 3.8), squeeze=False)
    for ax, benchmark in zip(axes[0], sets, strict=True):
        for model, result in report.models.items():
            curve = result.extra.get("best_of_k", {}).get(benchmark)
            if not curve:
                continue
            ks = curve["k"]
            ax.plot(ks, [100 * s for s in curve["score"]], marker="o", label=model)
            ax.fill_between(ks, [100 * c[0] for c in curve["ci"]], [100 * c[1] for c in curve["ci"]], alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("K (responses per prompt)")
        ax.set_ylabel("best-of-K accuracy (%)")
        ax.set_title(benchmark, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(plt, fig, path)
    return path


def write_plots(report: Report, directory: str) -> list[str]:
    """Every plot that fits the report, as PNG files in `directory`; returns their file names."""
    os.makedirs(directory, exist_ok=True)
    stem = _slug(report.benchmark)
    written = [subset_bars(report, os.path.join(directory, f"{stem}-subsets.png"))]
    if any("matrix" in r.extra for r in report.models.values()):
        written.append(rmbench_heatmaps(report, os.path.join(directory, f"{stem}-style-matrix.png")))
    if any(r.extra.get("best_of_k") for r in report.models.values()):
        written.append(best_of_k_curves(report, os.path.join(directory, f"{stem}-best-of-k.png")))
    return [os.path.basename(p) for p in written]
