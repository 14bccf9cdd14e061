"""Pairwise accuracy of reward models on any pair stream, per source/subset, with bootstrap intervals.

A reward model scores each (conversation, reply) on its own, so there is no position to swap: the
chosen reply wins when r(chosen) > r(rejected); an exact tie counts as half a win (the expected
accuracy of breaking the tie by a coin), never as a win.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from synpref.engines.reward import Group, GroupReward
from synpref.eval.bootstrap import RESAMPLES, interval, stratified_means
from synpref.eval.report import ModelResult, Report, Row
from synpref.records import Record, is_pair
from synpref.score import pair_group, score_entry

RewardFn = Callable[[list[Group]], list[GroupReward]]  # (conversation, replies) groups -> their rewards
LENGTH_BASELINE = "length-baseline"
RULE = "pairwise accuracy: chosen > rejected wins, tie = 1/2; pooled over pairs, plus the mean over subsets"


class MissingScores(ValueError):
    """A record lacks scores.NAME and no model was given to compute them."""


def pair_results(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """1 where chosen scores higher, 1/2 on an exact tie, 0 otherwise."""
    chosen, rejected = np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)
    return (chosen > rejected).astype(np.float64) + 0.5 * (chosen == rejected)


def field_value(record: Record, path: str) -> str:
    """A dotted field (`source`, `extra.bias`, `attributes.task_category`) as a group label."""
    value: Any = record
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "?" if value is None else str(value)


def accuracy_rows(groups: list[str], results: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                  overall: str = "overall (pooled)") -> list[Row]:
    """Pooled accuracy, the unweighted mean over groups, and each group, all with bootstrap intervals."""
    results = np.asarray(results, dtype=np.float64)
    labels = np.asarray(groups)
    strata = {g: results[labels == g] for g in sorted(set(groups))}
    boot = stratified_means(strata, resamples, seed)
    sizes = {g: len(v) for g, v in strata.items()}
    total = sum(sizes.values())
    pooled = sum(boot[g] * sizes[g] for g in strata) / total
    macro = np.mean([boot[g] for g in strata], axis=0)
    rows = [Row(overall, float(results.mean()), interval(pooled), total, 0)]
    if len(strata) > 1:
        rows.append(Row("mean over subsets", float(np.mean([v.mean() for v in strata.values()])), interval(macro),
                        total, 0))
    rows += [Row(g, float(v.mean()), interval(boot[g]), len(v), 1) for g, v in strata.items()]
    return rows


def _stored(record: Record, name: str) -> tuple[float, float] | None:
    entry = (record.get("scores") or {}).get(name)
    if isinstance(entry, dict) and isinstance(entry.get("chosen"), int | float) \
            and isinstance(entry.get("rejected"), int | float):
        return float(entry["chosen"]), float(entry["rejected"])
    return None


def evaluate_pairs(records: Iterable[Record], models: dict[str, RewardFn | None], by: str = "source",
                   length_baseline: bool = False, resamples: int = RESAMPLES, seed: int = 0,
                   counts: Counter | None = None, scored: Callable[[Record], None] | None = None) -> Report:
    """Score what is missing with each model's reward function, reuse scores already in the records.

    `models` maps a name to its reward function, or to None to use only `scores.NAME` of the input
    (with no models at all, every score name found in the input is evaluated). Records that are not
    pairs are counted as `skipped_not_pair`. `scored` receives each record with the new scores added.
    """
    counts = Counter() if counts is None else counts
    pairs: list[Record] = []
    for record in records:
        if is_pair(record) and isinstance(record["chosen"], str) and isinstance(record["rejected"], str):
            pairs.append(record)
        else:
            counts["skipped_not_pair"] += 1
    names = list(models) or sorted({n for r in pairs for n in (r.get("scores") or {})})
    if not names and not length_baseline:
        raise MissingScores("no scores.NAME in the input and no -m MODEL to score with")
    values: dict[str, np.ndarray] = {}
    for name in names:
        table = np.full((len(pairs), 2), np.nan)
        todo = []
        for i, record in enumerate(pairs):
            stored = _stored(record, name)
            if stored is not None:
                table[i] = stored
                counts[f"reused_{name}"] += 1
            elif models.get(name) is None:
                raise MissingScores(f"record {record.get('id', i)!r} has no scores.{name}.chosen/rejected and no "
                                    f"model was given to compute them (-m {name}=DIR)")
            else:
                todo.append(i)
        if todo:
            results = models[name]([pair_group(pairs[i]) for i in todo])  # type: ignore[misc]
            for i, result in zip(todo, results, strict=True):
                entry = score_entry(result)
                table[i] = (entry["chosen"], entry["rejected"])
                pairs[i].setdefault("scores", {})[name] = entry
            counts[f"scored_{name}"] += len(todo)
        values[name] = table
    if length_baseline:
        values[LENGTH_BASELINE] = np.array([[len(r["chosen"]), len(r["rejected"])] for r in pairs], dtype=float)
    if scored is not None:
        for record in pairs:
            scored(record)
    groups = [field_value(r, by) for r in pairs]
    report = Report("pairs", RULE)
    for name, table in values.items():
        report.models[name] = ModelResult(accuracy_rows(groups, pair_results(table[:, 0], table[:, 1]),
                                                        resamples, seed))
    report.notes.append(f"subsets by '{by}'; {len(pairs):,} pairs")
    if counts.get("skipped_not_pair"):
        report.notes.append(f"{counts['skipped_not_pair']:,} records were not pairs and were skipped")
    if length_baseline:
        report.notes.append(f"{LENGTH_BASELINE}: prefers the longer reply (characters), a sanity row")
    return report
