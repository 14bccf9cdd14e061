"""Ranked and rated reply lists (Nectar's 7-wise GPT-4 rankings, raw UltraFeedback's GPT-4 ratings),
expanded to pairs by one rule (`--pairs`):

- `best-worst`: the best reply against the worst (the first of each when several share the score);
- `adjacent`: each reply against the next one in score order (stable: input order within a score);
- `all`: every two replies.

A candidate pair whose two replies have the same score is a tie: it is not formed, and is counted
as `skipped_tied_pairs`, so for `all` the records plus the skipped pairs are C(n, 2) per prompt. A
row that gives no pair at all (all replies tied, fewer than two) is diverted with its reason. The
score gap of every pair is kept as `extra.margin` (with the two scores), ready for a margin loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from synpref.records.core import (
    Expansion,
    Message,
    Record,
    RecordError,
    check_text,
    diverted,
    label,
    pair_record,
    parse_hh_transcript,
    source_extra,
)

PAIR_RULES = ("best-worst", "adjacent", "all")


def ranked_pairs(scores: list[float], rule: str) -> tuple[list[tuple[int, int]], int]:
    """(better, worse) index pairs of SCORES (higher is better) by RULE, and the number of tied candidate
    pairs left out."""
    count = len(scores)
    if count < 2:
        return [], 0
    if rule == "best-worst":
        best = max(range(count), key=lambda i: (scores[i], -i))
        worst = min(range(count), key=lambda i: (scores[i], i))
        return ([], 1) if scores[best] == scores[worst] else ([(best, worst)], 0)
    order = sorted(range(count), key=lambda i: (-scores[i], i))
    if rule == "adjacent":
        candidates = list(zip(order, order[1:], strict=False))
    elif rule == "all":
        candidates = [(order[a], order[b]) for a in range(count) for b in range(a + 1, count)]
    else:
        raise ValueError(f"pairs must be one of {', '.join(PAIR_RULES)}, got {rule!r}")
    pairs = [(i, j) for i, j in candidates if scores[i] != scores[j]]
    return pairs, len(candidates) - len(pairs)


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordError(f"expected a number, got {value!r}", field)
    return float(value)


def _expand(row: Record, layout: str, conversation: list[Message], replies: list[str], scores: list[float],
            details: list[dict[str, Any]], rule: str, by: str, source: str, consumed: frozenset[str],
            score_name: str) -> Expansion:
    """The pairs RULE forms from REPLIES scored by SCORES; DETAILS are per-reply facts for `extra`."""
    if len(replies) < 2:
        return diverted(layout, "fewer_than_two_replies")
    pairs, tied = ranked_pairs(scores, rule)
    skipped = {"tied_pairs": tied} if tied else {}
    if not pairs:
        result = diverted(layout, "all_tied")
        result.skipped = skipped
        return result
    records = []
    for better, worse in pairs:
        extra = source_extra(row, consumed, layout)
        gap = scores[better] - scores[worse]
        extra.update(pairs=rule, chosen_index=better, rejected_index=worse,
                     margin=int(gap) if gap == int(gap) else round(gap, 6))
        for side, index in (("chosen", better), ("rejected", worse)):
            for key, value in details[index].items():
                extra[f"{side}_{key}"] = value
        meta = {f"chosen_{score_name}": details[better][score_name], f"rejected_{score_name}": details[worse][score_name]}
        records.append(pair_record([dict(m) for m in conversation], replies[better], replies[worse], source=source,
                                   labels=[label(by, **meta)], extra=extra))
    return Expansion(records, layout, skipped)


# -- Nectar ------------------------------------------------------------------------------------------
NECTAR_TEXT = frozenset(("prompt", "answers"))


def nectar_conversation(prompt: Any) -> list[Message]:
    """Nectar's prompt is an HH transcript ending in an empty "\\n\\nAssistant:" turn, which is dropped."""
    messages = parse_hh_transcript(prompt, "prompt")
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages = messages[:-1]
    if not messages or messages[-1]["role"] != "user":
        raise RecordError("the transcript must end with a Human turn (and an empty Assistant turn)", "prompt")
    return messages


def _objects(value: Any, field: str, plural: str, singular: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The objects of a list field, each with where it is; anything else is a RecordError there."""
    if type(value) is not list:
        raise RecordError(f"expected a list of {plural}, got {type(value).__name__}", field)
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise RecordError(f"expected {singular} object, got {type(item).__name__}", where)
        yield where, item


def from_nectar(row: Record, options: Any = None) -> Expansion:
    """berkeley-nest/Nectar: prompt (HH transcript), answers [{answer, model, rank}] ranked by GPT-4
    (rank 1 is best); the margin is the rank difference."""
    conversation = nectar_conversation(row["prompt"])
    replies, scores, details = [], [], []
    for where, answer in _objects(row["answers"], "answers", "answers", "an answer"):
        replies.append(check_text(answer.get("answer"), f"{where}.answer", "a string answer"))
        rank = _number(answer.get("rank"), f"{where}.rank")
        scores.append(-rank)
        details.append({"model": answer.get("model"), "rank": int(rank) if rank == int(rank) else rank})
    return _expand(row, "nectar", conversation, replies, scores, details, getattr(options, "pairs", "best-worst"),
                   "llm:gpt-4", "nectar", NECTAR_TEXT, "rank")


# -- UltraFeedback -----------------------------------------------------------------------------------
ULTRAFEEDBACK_TEXT = frozenset(("instruction", "completions"))
ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")


def ultrafeedback_rating(completion: dict[str, Any], where: str) -> float:
    """The completion's `fine-grained_score` (mean of GPT-4's four aspect ratings, what the binarized
    UltraFeedback sets rank by); without it (missing or null), the mean of the numeric aspect ratings."""
    if completion.get("fine-grained_score") is not None:
        return _number(completion["fine-grained_score"], f"{where}.fine-grained_score")
    annotations = completion.get("annotations")
    ratings = []
    if isinstance(annotations, dict):
        for aspect in ASPECTS:
            value = annotations.get(aspect, {}).get("Rating") if isinstance(annotations.get(aspect), dict) else None
            try:
                ratings.append(float(value))
            except (TypeError, ValueError):
                continue  # "N/A" and missing aspects do not count
    if not ratings:
        raise RecordError("no fine-grained_score and no numeric annotation Rating", f"{where}.fine-grained_score")
    return sum(ratings) / len(ratings)


def from_ultrafeedback(row: Record, options: Any = None) -> Expansion:
    """openbmb/UltraFeedback as published: instruction, completions [{model, response, annotations,
    fine-grained_score, overall_score, ...}] rated by GPT-4; the margin is the rating difference."""
    instruction = check_text(row["instruction"], "instruction", "a string instruction")
    replies, scores, details = [], [], []
    for where, completion in _objects(row["completions"], "completions", "completions", "a completion"):
        replies.append(check_text(completion.get("response"), f"{where}.response", "a string response"))
        rating = ultrafeedback_rating(completion, where)
        scores.append(rating)
        annotations = completion.get("annotations") if isinstance(completion.get("annotations"), dict) else {}
        details.append({
            "model": completion.get("model"), "rating": rating, "overall_score": completion.get("overall_score"),
            "principle": completion.get("principle"),
            "aspect_ratings": {aspect: value.get("Rating") for aspect, value in annotations.items()
                               if isinstance(value, dict)},
        })
    origin = row.get("source")
    source = f"ultrafeedback/{origin}" if isinstance(origin, str) and origin else "ultrafeedback"
    return _expand(row, "ultrafeedback", [{"role": "user", "content": instruction}], replies, scores, details,
                   getattr(options, "pairs", "best-worst"), "llm:gpt-4", source, ULTRAFEEDBACK_TEXT, "rating")
