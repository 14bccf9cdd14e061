"""`synpref stats`: what is in a stream, before spending GPU hours on it.

Counts per source, layout (`extra.layout`, the public layout a record was converted from; "canonical"
for records that came as such) and kind, turn counts, length percentiles of prompt / chosen / rejected (characters,
and tokens with a tokenizer), exact duplicates, content problems, label / score summaries, and annotator agreement (Cohen's kappa).
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import orjson

from synpref.labels import AgreementCounter
from synpref.records import Record, is_pair, pair_problems, prompt_text

PERCENTILES = (5, 25, 50, 75, 95, 99)
FIELDS = ("prompt", "chosen", "rejected")


def _kind(record: Record) -> str:
    if is_pair(record):
        return "pair"
    if "response" in record:
        return "answer"
    return "prompt" if "conversation" in record else "other"


def _layout(record: Record) -> str:
    extra = record.get("extra")
    layout = extra.get("layout") if type(extra) is dict else None
    return layout if isinstance(layout, str) else "canonical"


def _summary(values: array) -> dict[str, float]:
    if not values:
        return {}
    data = np.frombuffer(values, dtype=np.int64)
    points = np.percentile(data, PERCENTILES)
    return {
        "count": int(data.size),
        "mean": round(float(data.mean()), 1),
        "min": int(data.min()),
        **{f"p{p}": round(float(v), 1) for p, v in zip(PERCENTILES, points, strict=True)},
        "max": int(data.max()),
    }


def collect_stats(records: Iterable[Record], count_tokens: Callable[[list[str]], list[int]] | None = None,
                  token_batch: int = 256) -> dict[str, Any]:
    """One pass over the records; memory is a few integers per record plus a 16-byte hash per pair."""
    sources: Counter[str] = Counter()
    layouts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    turns: Counter[int] = Counter()
    problems: Counter[str] = Counter()
    reasons: Counter[str] = Counter()  # filters' --removed streams say why each record went
    chars = {name: array("q") for name in FIELDS}
    tokens = {name: array("q") for name in FIELDS}
    pending: dict[str, list[str]] = {name: [] for name in FIELDS}
    seen: set[bytes] = set()
    duplicates = 0
    labels: Counter[tuple[str, str]] = Counter()
    scores: dict[str, list[float]] = defaultdict(list)
    agreement = AgreementCounter()

    def flush_tokens() -> None:
        for name, texts in pending.items():
            if texts:
                tokens[name].extend(count_tokens(texts))
                texts.clear()

    for record in records:
        kinds[_kind(record)] += 1
        if "reason" in record:
            reasons[str(record["reason"])] += 1
        sources[str(record.get("source", "?"))] += 1
        layouts[_layout(record)] += 1
        conversation = record.get("conversation", [])
        turns[sum(1 for m in conversation if m.get("role") == "user")] += 1
        texts = {"prompt": prompt_text(record)} if conversation else {}
        if is_pair(record):
            texts.update(chosen=record["chosen"], rejected=record["rejected"])
            problems.update(pair_problems(record))
            key = hashlib.blake2b(orjson.dumps([conversation, record["chosen"], record["rejected"]]),
                                  digest_size=16).digest()
            if key in seen:
                duplicates += 1
            else:
                seen.add(key)
        for name, text in texts.items():
            chars[name].append(len(text))
            if count_tokens is not None:
                pending[name].append(text)
        if count_tokens is not None and len(pending["prompt"]) >= token_batch:
            flush_tokens()
        for label in record.get("labels") or []:
            labels[(str(label.get("by", "?")).split(":")[0], str(label.get("prefers", "?")))] += 1
        if record.get("labels"):
            agreement.add(record)
        for name, score in (record.get("scores") or {}).items():
            scores[name].append(float(score["p"]))
    if count_tokens is not None:
        flush_tokens()

    result: dict[str, Any] = {
        "records": sum(kinds.values()),
        "kinds": dict(kinds),
        "sources": dict(sources.most_common()),
        "layouts": dict(layouts.most_common()),
        "user_turns": {str(k): v for k, v in sorted(turns.items())},
        "exact_duplicate_pairs": duplicates,
        "pair_problems": dict(problems),
        **({"removed_reasons": dict(reasons.most_common())} if reasons else {}),
        "chars": {name: _summary(values) for name, values in chars.items() if values},
    }
    if count_tokens is not None:
        result["tokens"] = {name: _summary(values) for name, values in tokens.items() if values}
    if labels:
        result["labels"] = {f"{by}:{prefers}": n for (by, prefers), n in sorted(labels.items())}
    if agreement_report := agreement.report():
        result["agreement"] = agreement_report
    if scores:
        result["scores"] = {
            name: {
                "count": len(ps),
                "mean_p": round(float(np.mean(ps)), 4),
                "agree_fraction": round(float(np.mean(np.asarray(ps) > 0.5)), 4),
            }
            for name, ps in scores.items()
        }
    return result


def _columns(rows: list[tuple[Any, ...]], formats: tuple[str, ...]) -> list[str]:
    """Rows as aligned columns, each as wide as its widest cell: the first (a name) left-aligned and never
    cut, so two long names that differ only at the end still print apart; the rest right-aligned with
    FORMATS (format specs such as ',' or '.3f', applied to numbers)."""
    cells = [[str(row[0])] + [value if isinstance(value, str) else format(value, spec)
                              for value, spec in zip(row[1:], formats, strict=True)] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))] if cells else []
    return [row[0].ljust(widths[0]) + "".join(f"  {cell:>{width}}" for cell, width in zip(row[1:], widths[1:],
                                                                                         strict=True))
            for row in cells]


def format_table(stats: dict[str, Any]) -> str:
    """A plain-text report for a terminal."""
    lines = [f"records  {stats['records']:,}   " + "  ".join(f"{k} {v:,}" for k, v in stats["kinds"].items())]
    lines.append(f"exact duplicate pairs  {stats['exact_duplicate_pairs']:,}")
    if "removed_reasons" in stats:
        lines.append("removed by reason  " + "  ".join(f"{k} {v:,}" for k, v in stats["removed_reasons"].items()))
    if stats["pair_problems"]:
        lines.append("pair problems  " + "  ".join(f"{k} {v:,}" for k, v in stats["pair_problems"].items()))
    lines.append("")
    shown = list(stats["sources"].items())[:30]
    lines += _columns([("source", "records"), *shown], (",",))
    if len(stats["sources"]) > 30:
        lines.append(f"... and {len(stats['sources']) - 30} more sources (see --json)")
    if stats.get("layouts"):
        lines.append("")
        lines += _columns([("layout", "records"), *stats["layouts"].items()], (",",))
    lines.append("")
    lines.append("user turns  " + "  ".join(f"{k}: {v:,}" for k, v in stats["user_turns"].items()))
    for unit in ("chars", "tokens"):
        if unit not in stats:
            continue
        lines.append("")
        header = ["mean", "min", *(f"p{p}" for p in PERCENTILES), "max"]
        lines.append(f"{unit:<10}" + "".join(f"{h:>10}" for h in header))
        for name, summary in stats[unit].items():
            lines.append(f"{name:<10}" + "".join(f"{summary[h]:>10,.0f}" for h in header))
    if "labels" in stats:
        lines.append("")
        lines.append("labels  " + "  ".join(f"{k} {v:,}" for k, v in stats["labels"].items()))
    if "agreement" in stats:
        lines.append("")
        rows: list[tuple[Any, ...]] = [("agreement", "pairs", "agree", "kappa")]
        for group in ("inter_annotator", "human_vs_llm", "human_vs_current_label"):
            for name, row in stats["agreement"].get(group, {}).items():
                label = name if group != "human_vs_current_label" else f"{name} vs current label"
                kappa = "-" if row.get("kappa") is None else f"{row['kappa']:.3f}"
                rows.append((label, row["pairs"], row["agreement"], kappa))
        lines += _columns(rows, (",", ".3f", ""))
    if "scores" in stats:
        lines.append("")
        lines += _columns([("scores", "count", "mean p", "p > 0.5"),
                           *((name, summary["count"], summary["mean_p"], summary["agree_fraction"])
                             for name, summary in stats["scores"].items())], (",", ".3f", ".3f"))
    return "\n".join(lines)
