"""How judge readings become one label: the verdict of one prompt order, of one model, of several.

A `Reading` is one model's answer to one prompt order: in logprob mode P("1") against P("2") read
once; in generate mode the verdicts of its --votes samples ("1", "2", "tie", or None when no verdict
could be read). Positions are turned into sides at once (Candidate 1 is `first`), so that swapping
the candidates swaps the meaning of "1" and nothing else.

Rules (docs/annotate.md):
- majority (default): a reading's verdict is the strict plurality of its decided votes (logprob:
  the likelier candidate); a model's verdict needs its readings to agree, so with --both-orders
  a disagreement is `unsure` (FastChat's rule); across models, the strict plurality of the models
  that decided. Anything short of a strict plurality is `unsure`.
- mean: a model's P(chosen) is the mean over its readings (logprob: the read probability;
  generate: the share of decided votes for chosen, a tie counting half), which averages out a
  position bias with --both-orders; across models, the mean of the models' P(chosen). The label
  is chosen above 0.5, rejected below, a tie at exactly 0.5.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

RULES = ("majority", "mean")
SIDES = ("chosen", "rejected")


def other(side: str) -> str:
    return "rejected" if side == "chosen" else "chosen"


def probability_of_first(logprob_1: float, logprob_2: float) -> float:
    """P(Candidate 1 | one of the two) from the two candidates' log-probabilities, without overflow."""
    gap = logprob_1 - logprob_2
    if gap >= 0:
        return 1.0 / (1.0 + math.exp(-gap))
    small = math.exp(gap)
    return small / (1.0 + small)


@dataclass
class Reading:
    """One model's answer to the pair shown in one order."""

    first: str  # the side shown as Candidate 1: "chosen" or "rejected"
    positions: list[str | None] = field(default_factory=list)  # each vote: "1", "2", "tie" or None
    p1: float | None = None  # logprob mode: P(Candidate 1 is better)

    @classmethod
    def from_probability(cls, first: str, p1: float) -> Reading:
        position = "1" if p1 > 0.5 else "2" if p1 < 0.5 else "tie"
        return cls(first, [position], p1)

    def sides(self) -> list[str | None]:
        """Each vote as the side it prefers ("chosen", "rejected", "tie") or None."""
        mapping = {"1": self.first, "2": other(self.first), "tie": "tie"}
        return [mapping.get(position) if position else None for position in self.positions]

    def p_chosen(self) -> float | None:
        """P(chosen is better): the read probability, or the share of decided votes (a tie half)."""
        if self.p1 is not None:
            return self.p1 if self.first == "chosen" else 1.0 - self.p1
        decided = [side for side in self.sides() if side is not None]
        if not decided:
            return None
        return (decided.count("chosen") + 0.5 * decided.count("tie")) / len(decided)

    def verdict(self) -> str:
        return plurality(side for side in self.sides() if side is not None)

    def support(self, verdict: str) -> float:
        """How strongly this reading backs VERDICT: its probability, or its share of decided votes."""
        if self.p1 is not None:
            p = self.p_chosen() or 0.0
            return {"chosen": p, "rejected": 1.0 - p}.get(verdict, 1.0 - abs(2 * p - 1))
        decided = [side for side in self.sides() if side is not None]
        return decided.count(verdict) / len(decided) if decided else 0.0


@dataclass
class Decision:
    """A label before it is written: what it prefers, how confidently, on which votes."""

    prefers: str
    confidence: float | None
    votes: dict[str, int]
    p_chosen: float | None = None


def plurality(values: Iterable[str]) -> str:
    """The most common value when strictly most common; otherwise (or with no values) `unsure`."""
    ranked = Counter(values).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return "unsure"
    return ranked[0][0]


def from_probability(p: float) -> str:
    return "chosen" if p > 0.5 else "rejected" if p < 0.5 else "tie"


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _mean_rule(rule: str, votes: Counter[str], p: float | None) -> Decision | None:
    """The decision under the mean rule (from the mean P(chosen)); None under majority."""
    if rule == "mean":
        if p is None:
            return Decision("unsure", None, dict(votes))
        return Decision(from_probability(p), max(p, 1.0 - p), dict(votes), p)
    if rule != "majority":
        raise ValueError(f"aggregate must be one of {', '.join(RULES)}, not {rule!r}")
    return None


def combine_readings(readings: Sequence[Reading], rule: str = "majority") -> Decision:
    """One model's label from its readings (one per prompt order), under RULE."""
    votes = Counter(side or "unsure" for reading in readings for side in reading.sides())
    p = _mean([value for reading in readings if (value := reading.p_chosen()) is not None])
    if (by_mean := _mean_rule(rule, votes, p)) is not None:
        return by_mean
    verdicts = {reading.verdict() for reading in readings}
    if len(verdicts) != 1 or "unsure" in verdicts:  # the orders disagree, or no reading decided
        return Decision("unsure", None, dict(votes), p)
    verdict = verdicts.pop()
    return Decision(verdict, _mean([reading.support(verdict) for reading in readings]), dict(votes), p)


def combine_models(decisions: Sequence[Decision], rule: str = "majority") -> Decision:
    """The judges' joint label from each model's label, under RULE."""
    votes = Counter(decision.prefers for decision in decisions)
    p = _mean([d.p_chosen for d in decisions if d.p_chosen is not None])
    if (by_mean := _mean_rule(rule, votes, p)) is not None:
        return by_mean
    decided = [d.prefers for d in decisions if d.prefers != "unsure"]
    verdict = plurality(decided)
    if verdict == "unsure":
        return Decision("unsure", None, dict(votes), p)
    return Decision(verdict, decided.count(verdict) / len(decided), dict(votes), p)
