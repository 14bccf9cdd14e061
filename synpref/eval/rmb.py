"""RMB (Zhou-Zoey/RMB-Reward-Model-Benchmark): pairwise and best-of-N, helpfulness and harmlessness.

Rules: pairwise - chosen > reject strictly, pooled accuracy (eval/scripts/my_run_rm.py, the
reward-bench rule); best-of-N - an item counts only when bon_best scores strictly above every response
in loser_list (the RMB paper's BoN metric). The repository's eval/scripts/my_run_bon.py select_best
scans five model columns keeping the first maximum, so a tie would go to whichever column comes first;
the released BoN_set layout (bon_best + loser_list) has no such order, and the strict rule of the
paper is used. Reported: Helpfulness / Harmlessness x Pairwise / BoN, their mean (Overall), and
each top-level category.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from synpref.eval.bootstrap import RESAMPLES, interval, stratified_means
from synpref.eval.common import BenchmarkError, Example, file_stem, messages, need, rows
from synpref.eval.report import ModelResult, Report, Row

PARTS = ["Helpfulness", "Harmlessness"]
RULE = ("RMB: pairwise chosen > reject (tie = 0); BoN correct iff bon_best > every loser (tie = 0); "
        "Overall = mean of the four pooled accuracies")


def pairwise_result(chosen: float, rejected: float) -> float:
    return float(chosen > rejected)


def bon_result(rewards: Iterable[float]) -> float:
    """rewards[0] is bon_best; it must beat the best loser strictly."""
    values = list(rewards)
    return float(values[0] > max(values[1:]))


def _answer(value: object, where: str, field: str) -> str:
    if not isinstance(value, dict) or not isinstance(value.get("answer"), str):
        raise BenchmarkError(f"{where}: field '{field}' must be an object with a string 'answer'")
    return value["answer"]


def load(paths: Iterable[str]) -> list[Example]:
    """RMB_dataset/{Pairwise_set,BoN_set}/... JSON arrays, or the same rows in any file the stream layer reads
    (a directory is walked); a row's part and scenario come from its category_path, else its file's path."""
    examples = []
    for path, line, row in rows(paths):
        where = f"{path}:{line}"
        category = str(row.get("category_path") or os.path.relpath(path)).replace("\\", "/")
        parts = category.split("/")
        part = next((p for p in parts if p in PARTS), None)
        if part is None:
            raise BenchmarkError(f"{where}: cannot tell Helpfulness from Harmlessness in {category!r}")
        scenario = parts[parts.index(part) + 1] if parts.index(part) + 1 < len(parts) else part
        conversation = messages(need(row, "conversation_input", where), where, "conversation_input")
        if "pair_uid" in row:
            responses = [_answer(need(row, "chosen", where), where, "chosen"),
                         _answer(need(row, "reject", where), where, "reject")]
            kind, uid = "Pairwise", row["pair_uid"]
        elif "bon_uid" in row:
            losers = need(row, "loser_list", where)
            if not isinstance(losers, list) or not losers:
                raise BenchmarkError(f"{where}: field 'loser_list' must be a non-empty list")
            responses = [_answer(need(row, "bon_best", where), where, "bon_best")]
            responses += [_answer(x, where, "loser_list") for x in losers]
            kind, uid = "BoN", row["bon_uid"]
        else:
            raise BenchmarkError(f"{where}: neither 'pair_uid' (Pairwise_set) nor 'bon_uid' (BoN_set)")
        examples.append(Example(f"{kind}-{uid}", f"{part} {kind}", conversation, responses,
                                {"part": part, "kind": kind, "scenario": file_stem(scenario)}))
    return examples


def score(examples: list[Example], rewards: dict[str, list[list[float]]], resamples: int = RESAMPLES,
          seed: int = 0) -> Report:
    report = Report("RMB", RULE)
    for name, values in rewards.items():
        results = np.array([pairwise_result(v[0], v[1]) if e.meta["kind"] == "Pairwise" else bon_result(v)
                            for e, v in zip(examples, values, strict=True)])
        groups = np.array([e.group for e in examples])
        order = [f"{p} {k}" for p in PARTS for k in ("Pairwise", "BoN")]
        strata = {g: results[groups == g] for g in order if np.any(groups == g)}
        boot = stratified_means(strata, resamples, seed)
        overall = np.mean([boot[g] for g in strata], axis=0)
        result_rows = [Row("Overall", float(np.mean([v.mean() for v in strata.values()])), interval(overall),
                           len(examples), 0)]
        for group, members in strata.items():
            result_rows.append(Row(group, float(members.mean()), interval(boot[group]), len(members), 1))
            mask = groups == group
            scenarios = np.array([e.meta["scenario"] for e in examples])[mask]
            sub = {s: members[scenarios == s] for s in sorted(set(scenarios.tolist()))}
            sub_boot = stratified_means(sub, resamples, seed)
            result_rows += [Row(f"{group}: {s}", float(v.mean()), interval(sub_boot[s]), len(v), 2)
                            for s, v in sub.items()]
        report.models[name] = ModelResult(result_rows)
    return report
