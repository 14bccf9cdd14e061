"""JudgeBench (ScalerLab/JudgeBench): pairs labelled "A>B" / "B>A", accuracy per response model and category.

Rules, as in the official code:
- a reward model's verdict on one game is "A>B" if score_A > score_B else "B>A" (utils/judges.py, the
  RewardModel judges: an exact tie resolves to "B>A");
- run_judge.py plays both orders unless --single_game is given, and the published reward-model outputs
  (outputs/*judge_name=reward_model*) hold both games: the (B, A) verdict is flipped back, each verdict equal
  to the label counts +1 and each equal to the flipped label -1, and a pair is right iff the count is > 0
  (utils/metrics.py compute_final_metrics, reverse_order True). For an order-free reward model this is
  r(right) > r(wrong): a tie gives one verdict each way and counts wrong. This is the default;
- with `single_game` (run_judge.py --single_game, which the README allows for order-free judges) only the
  (A, B) verdict counts (reverse_order False): a tie decides B>A, so it is right when the label is B>A;
- accuracy = right / pairs, scored per response-model file as run_judge.py does (one --pairs file per run:
  the GPT-4o and Claude-3.5-Sonnet response sets are never pooled), overall and per category by the `source`
  prefix (mmlu-pro Knowledge, livebench-reasoning Reasoning, livebench-math Math, livecodebench Coding).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from synpref.eval.bootstrap import RESAMPLES
from synpref.eval.common import BenchmarkError, Example, file_stem, messages, need, rows
from synpref.eval.pairs import accuracy_rows
from synpref.eval.report import ModelResult, Report, Row

CATEGORIES = {"mmlu-pro": "Knowledge", "livebench-reasoning": "Reasoning", "livebench-math": "Math",
              "livecodebench": "Coding"}
LABELS = ("A>B", "B>A")
RULE_TWO_GAMES = ("JudgeBench (run_judge.py default, both orders): a pair is right iff the verdicts of the (A, B) "
                  "and the flipped (B, A) game agree with the label on balance, i.e. r(right) > r(wrong), a tie "
                  "is wrong; accuracy per response model, pooled over its pairs and per category")
RULE_SINGLE_GAME = ("JudgeBench (run_judge.py --single_game): decision A>B iff score_A > score_B (a tie decides "
                    "B>A); accuracy per response model, pooled over its pairs and per category")


def category(source: str) -> str:
    for prefix, name in CATEGORIES.items():
        if source.startswith(prefix):
            return name
    return source


def decisions(score_a: np.ndarray, score_b: np.ndarray) -> np.ndarray:
    """One game's verdicts (utils/judges.py): A>B iff score_A > score_B, else B>A."""
    return np.where(np.asarray(score_a, dtype=np.float64) > np.asarray(score_b, dtype=np.float64), "A>B", "B>A")


def flip(verdicts: np.ndarray) -> np.ndarray:
    return np.where(verdicts == "A>B", "B>A", "A>B")


def correct(score_a: np.ndarray, score_b: np.ndarray, labels: np.ndarray, single_game: bool = False) -> np.ndarray:
    """1.0 per pair judged right, by compute_final_metrics with reverse_order = not single_game."""
    labels = np.asarray(labels)
    first = decisions(score_a, score_b)
    if single_game:
        return (first == labels).astype(np.float64)
    second = flip(decisions(score_b, score_a))  # the (B, A) game, its verdict flipped back
    counter = sum((verdict == labels).astype(int) - (verdict == flip(labels)).astype(int)
                  for verdict in (first, second))
    return (counter > 0).astype(np.float64)


def response_model(row: dict, path: str) -> str:
    """The model that wrote the responses: the row's `response_model`, else the file name's
    `response_model=NAME` (the published file names), else '' (one unnamed response set)."""
    if row.get("response_model"):
        return str(row["response_model"])
    fields = dict(part.split("=", 1) for part in file_stem(path).split(",") if "=" in part)
    return fields.get("response_model", "")


def load(paths: Iterable[str]) -> list[Example]:
    """data/dataset=judgebench,response_model=*.jsonl rows: pair_id, source, question, response_model,
    response_A/B, label."""
    examples = []
    for path, line, row in rows(paths):
        where = f"{path}:{line}"
        label = need(row, "label", where)
        if label not in LABELS:
            raise BenchmarkError(f"{where}: label must be one of {', '.join(LABELS)}, got {label!r}")
        examples.append(Example(str(need(row, "pair_id", where)), category(str(need(row, "source", where))),
                                messages(need(row, "question", where), where, "question"),
                                [str(need(row, "response_A", where)), str(need(row, "response_B", where))],
                                {"label": label, "response_model": response_model(row, path)}))
    return examples


def score(examples: list[Example], rewards: dict[str, list[list[float]]], resamples: int = RESAMPLES,
          seed: int = 0, single_game: bool = False) -> Report:
    """Rows per response model: its pooled accuracy and its categories (named "MODEL: Category" when
    --data holds several response models, which are never pooled into one number)."""
    report = Report("JudgeBench", RULE_SINGLE_GAME if single_game else RULE_TWO_GAMES)
    labels = np.array([e.meta["label"] for e in examples])
    sets = np.array([e.meta["response_model"] for e in examples])
    names = list(dict.fromkeys(sets.tolist()))
    if len(names) > 1:
        report.notes.append(f"{len(names)} response models ({', '.join(names)}) scored apart, as the official "
                            "run_judge.py scores one response-model file at a time")
    elif names[0]:
        report.notes.append(f"responses by {names[0]}")
    for name, values in rewards.items():
        table = np.asarray(values, dtype=np.float64)
        results = correct(table[:, 0], table[:, 1], labels, single_game)
        result_rows: list[Row] = []
        for responses_by in names:
            mask = sets == responses_by
            groups = [e.group for e, keep in zip(examples, mask, strict=True) if keep]
            prefix = f"{responses_by}: " if len(names) > 1 else ""
            result_rows += [replace(row, name=prefix + row.name)
                            for row in accuracy_rows(groups, results[mask], resamples, seed, overall="Overall")
                            if row.name != "mean over subsets"]
        report.models[name] = ModelResult(result_rows)
    return report
