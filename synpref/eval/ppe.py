"""PPE (lmarena/PPE): human-preference pairwise accuracy and correctness best-of-K curves.

The PPE scoring code was not available to check (its repository is not in the code index we read),
so these rules follow the PPE paper (arXiv 2410.14872) and are marked as such in the man page:
- human preference (Chatbot Arena pairs, `winner` model_a / model_b): accuracy over the pairs with a
  winner, r(winner) > r(loser) right, an exact reward tie 1/2; rows whose winner is a tie are left
  out (and counted in the report);
- correctness sets (MMLU-Pro, MATH, GPQA, MBPP-Plus, IFEval; per prompt response_1..response_K and a
  `scores` list of booleans): best-of-K = mean over prompts of the correctness of the top-reward
  response among the first K (a tie at the top counts the mean correctness of the tied responses, the
  expectation of a random tie-break), for K = 1, 2, 4, ... up to K; pairwise accuracy = per prompt the
  fraction of (correct, incorrect) pairs ordered right (tie 1/2), averaged over prompts that have both;
  ROC-AUC = P(reward of a correct response > an incorrect one) pooled over all responses (ties 1/2).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from synpref.eval.bootstrap import RESAMPLES, interval, stratified_means
from synpref.eval.common import BenchmarkError, Example, file_stem, messages, need, rows
from synpref.eval.pairs import pair_results
from synpref.eval.report import ModelResult, Report, Row

RULE = ("PPE (paper rules; official code not verified): human preference accuracy (reward tie = 1/2, label ties "
        "excluded); correctness: best-of-K (first K responses), within-prompt pairwise accuracy, ROC-AUC")
HUMAN = "Human preference"


def _responses(row: dict) -> list[str]:
    keys = sorted((int(k.split("_", 1)[1]), k) for k in row if k.startswith("response_") and k[9:].isdigit())
    return [str(row[k]) for _, k in keys]


def best_of_k(rewards: np.ndarray, correct: np.ndarray, k: int) -> float:
    """Correctness of the top-reward response among the first k (ties: mean correctness of the tied)."""
    head, right = np.asarray(rewards[:k], dtype=np.float64), np.asarray(correct[:k], dtype=np.float64)
    return float(right[head == head.max()].mean())


def within_prompt_pairs(rewards: np.ndarray, correct: np.ndarray) -> float:
    """Fraction of (correct, incorrect) pairs where the correct one has the higher reward (tie 1/2)."""
    rewards, correct = np.asarray(rewards, dtype=np.float64), np.asarray(correct, dtype=bool)
    good, bad = rewards[correct], rewards[~correct]
    if good.size == 0 or bad.size == 0:
        return float("nan")
    return float(pair_results(good[:, None], bad[None, :]).mean())


def roc_auc(rewards: np.ndarray, correct: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    rewards, correct = np.asarray(rewards, dtype=np.float64), np.asarray(correct, dtype=bool)
    positives, negatives = int(correct.sum()), int((~correct).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(rewards, kind="mergesort")
    ranks = np.empty(len(rewards))
    sorted_values = rewards[order]
    start = 0
    while start < len(sorted_values):
        stop = start
        while stop + 1 < len(sorted_values) and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[order[start:stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return float((ranks[correct].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def ks(count: int) -> list[int]:
    out, k = [], 1
    while k < count:
        out.append(k)
        k *= 2
    return [*out, count]


def load(paths: Iterable[str], notes: list[str] | None = None) -> list[Example]:
    """Human-preference rows (prompt, response_1, response_2, winner) and correctness rows (prompt,
    response_1..response_K, scores); the set name of a correctness row is its `benchmark` field or file stem."""
    examples, ties = [], 0
    for path, line, row in rows(paths):
        where = f"{path}:{line}"
        conversation = messages(need(row, "prompt", where), where, "prompt")
        responses = _responses(row)
        ident = str(row.get("question_id", f"{file_stem(path)}-{line}"))
        if "winner" in row:
            winner = row["winner"]
            if winner not in ("model_a", "model_b"):
                ties += 1
                continue
            if len(responses) != 2:
                raise BenchmarkError(f"{where}: a human-preference row needs response_1 and response_2")
            examples.append(Example(f"{ident}-{line}", HUMAN, conversation, responses, {"winner": winner}))
        else:
            correct = need(row, "scores", where)
            if not isinstance(correct, list) or len(correct) != len(responses) or not responses:
                raise BenchmarkError(f"{where}: 'scores' must list one boolean per response_N "
                                     f"({len(responses)} responses)")
            name = str(row.get("benchmark") or file_stem(path).split(".")[0].split("-0000")[0])
            examples.append(Example(f"{name}-{ident}-{row.get('model_name', '')}-{line}", name, conversation,
                                    responses, {"correct": [bool(c) for c in correct]}))
    if ties and notes is not None:
        notes.append(f"{ties:,} human-preference rows judged a tie were left out")
    return examples


def score(examples: list[Example], rewards: dict[str, list[list[float]]], resamples: int = RESAMPLES,
          seed: int = 0, notes: list[str] | None = None) -> Report:
    report = Report("PPE", RULE, notes=list(notes or []))
    sets = sorted({e.group for e in examples} - {HUMAN})
    for name, values in rewards.items():
        result_rows, curves = [], {}
        human = [(e, v) for e, v in zip(examples, values, strict=True) if e.group == HUMAN]
        if human:
            results = np.array([pair_results(*(v if e.meta["winner"] == "model_a" else v[::-1])) for e, v in human])
            boot = stratified_means({HUMAN: results}, resamples, seed)[HUMAN]
            result_rows.append(Row(f"{HUMAN} accuracy", float(results.mean()), interval(boot), len(results), 0))
        for benchmark in sets:
            members = [(np.asarray(v, dtype=float), np.asarray(e.meta["correct"])) for e, v in
                       zip(examples, values, strict=True) if e.group == benchmark]
            size = min(len(r) for r, _ in members)
            curve = {}
            for k in ks(size):
                per_prompt = np.array([best_of_k(r, c, k) for r, c in members])
                curve[k] = per_prompt
            pairwise = np.array([within_prompt_pairs(r, c) for r, c in members])
            pairwise = pairwise[~np.isnan(pairwise)]
            strata = {f"bo{k}": v for k, v in curve.items()} | {"pairwise": pairwise}
            boot = stratified_means(strata, resamples, seed)
            all_rewards = np.concatenate([r for r, _ in members])
            all_correct = np.concatenate([c for _, c in members])
            result_rows.append(Row(f"{benchmark} best-of-{size}", float(curve[size].mean()),
                                   interval(boot[f"bo{size}"]), len(members), 0))
            result_rows.append(Row(f"{benchmark} pairwise accuracy", float(pairwise.mean()) if pairwise.size else
                                   float("nan"), interval(boot["pairwise"]), int(pairwise.size), 1))
            result_rows.append(Row(f"{benchmark} ROC-AUC", roc_auc(all_rewards, all_correct), None,
                                   int(all_rewards.size), 1))
            curves[benchmark] = {"k": list(curve), "score": [float(v.mean()) for v in curve.values()],
                                 "ci": [list(interval(boot[f"bo{k}"])) for k in curve]}
        report.models[name] = ModelResult(result_rows, {"best_of_k": curves} if curves else {})
    return report
