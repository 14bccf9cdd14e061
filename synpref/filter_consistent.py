"""`synpref filter-consistent`: the Stage-2 consistency rule of the paper (SPEC section 4), with recycling.

A pair is kept when its current label (chosen preferred over rejected) agrees with the gold RM and
with either the LLM judges or the current RM. Each signal is read in one of a few states
(`agrees`, `disagrees`, `tie`, `unsure` for judges, `missing`), and `rule` maps every combination
of states to an outcome and a reason: docs/curation.md prints that table, and the tests check the
code against it. With `recycle`, a pair that every available signal says is reversed (the gold RM
and at least one more) is flipped and kept; after the flip it passes the keep rule, so a second
run changes nothing.

Library API::

    from synpref.filter_consistent import ConsistencyConfig, filter_consistent_records

    kept, removed, counts = filter_consistent_records(records, ConsistencyConfig(gold="gold", rm="rm"))
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from synpref.records import Record, RecordError, check_scores, is_pair
from synpref.records import check_labels as records_check_labels
from synpref.stage import Stage, Verdict

THRESHOLD = 0.5
JUDGE_PREFIX = "llm:"  # labels whose `by` starts with this are the LLM judges (`annotate judge`)
STAGE_NAME = "filter-consistent"

AGREES, DISAGREES, TIE, UNSURE, MISSING = "agrees", "disagrees", "tie", "unsure", "missing"
GOLD_STATES = (AGREES, DISAGREES, TIE, MISSING)
JUDGE_STATES = (AGREES, DISAGREES, TIE, UNSURE, MISSING)
RM_STATES = (AGREES, DISAGREES, TIE, MISSING)
STATE_OF_PREFERENCE = {"chosen": AGREES, "rejected": DISAGREES, "tie": TIE, "unsure": UNSURE}
MISSING_GOLD = ("error", "remove")  # a pair without the gold score: a bad record, or removed as gold_missing

# Every reason `rule` gives, and what it means (docs, --help and the tests use this).
REASONS: dict[str, str] = {
    "agree_gold_judges_rm": "kept: the gold RM, the judges and the current RM all agree with the label",
    "agree_gold_judges": "kept: the gold RM and the judges agree (the current RM does not, or is missing)",
    "agree_gold_rm": "kept: the gold RM and the current RM agree (the judges do not, or are missing)",
    "reversed_gold_judges_rm": "the gold RM, the judges and the current RM all prefer `rejected`: "
    "recycled (flipped, kept) with --recycle, else removed",
    "reversed_gold_judges": "the gold RM and the judges prefer `rejected`, no current-RM score: "
    "recycled with --recycle, else removed",
    "reversed_gold_rm": "the gold RM and the current RM prefer `rejected`, no judge labels: "
    "recycled with --recycle, else removed",
    "gold_missing": "removed (only with --missing-gold remove): the pair has no gold score",
    "gold_tie": "removed: the gold RM is not confident either way (1 - threshold <= p <= threshold)",
    "gold_disagrees": "removed: the gold RM prefers `rejected` and the other signals do not all agree "
    "with it (some tie, are unsure, agree with the label, or both are missing)",
    "gold_only": "removed: the gold RM agrees, but there are neither judge labels nor a current-RM "
    "score to confirm it",
    "unconfirmed": "removed: the gold RM agrees, but neither the judges nor the current RM agree",
}


@dataclass(frozen=True)
class Rule:
    """The outcome of one combination of signal states: kept or not, the reason, and whether every
    available signal says the label is reversed (then `recycle` flips and keeps the pair)."""

    keep: bool
    reason: str
    reversed: bool = False


def rule(gold: str, judges: str, rm: str) -> Rule:
    """The decision table: the paper's rule (gold agrees, and the judges or the current RM agree),
    and for the rest the reason a pair is removed or may be recycled."""
    if gold not in GOLD_STATES or judges not in JUDGE_STATES or rm not in RM_STATES:
        raise ValueError(f"no such signal states: gold {gold!r}, judges {judges!r}, rm {rm!r}")
    if gold == MISSING:
        return Rule(False, "gold_missing")
    if gold == TIE:
        return Rule(False, "gold_tie")
    if gold == AGREES:
        if judges == AGREES and rm == AGREES:
            return Rule(True, "agree_gold_judges_rm")
        if judges == AGREES:
            return Rule(True, "agree_gold_judges")
        if rm == AGREES:
            return Rule(True, "agree_gold_rm")
        if judges == MISSING and rm == MISSING:
            return Rule(False, "gold_only")
        return Rule(False, "unconfirmed")
    # the gold RM disagrees: reversed when every other available signal disagrees too, and at least
    # one is available (a flipped pair must pass the keep rule, so recycling twice is a no-op)
    if judges in (DISAGREES, MISSING) and rm in (DISAGREES, MISSING) and (judges, rm) != (MISSING, MISSING):
        return Rule(False, "reversed_gold" + "_judges" * (judges == DISAGREES) + "_rm" * (rm == DISAGREES),
                    reversed=True)
    return Rule(False, "gold_disagrees")


def decision_table() -> list[tuple[str, str, str, Rule]]:
    """Every (gold, judges, rm) combination of states with its rule, in table order."""
    return [(g, j, r, rule(g, j, r)) for g in GOLD_STATES for j in JUDGE_STATES for r in RM_STATES]


# -- reading the signals --------------------------------------------------------------------------

def model_state(p: float | None, threshold: float = THRESHOLD) -> str:
    """An RM's state from p (the probability that the current label is right): agrees when
    p > threshold, disagrees when 1 - p > threshold (the flipped pair's p, so a flip swaps the two
    states exactly), a tie in between (at 0.5: equal rewards)."""
    if p is None:
        return MISSING
    if p > threshold:
        return AGREES
    if 1 - p > threshold:
        return DISAGREES
    return TIE


def plurality(votes: Iterable[str]) -> str | None:
    """The strictly most frequent vote; 'unsure' when the top is shared (a split, as in `annotate
    judge`'s majority rule); None without votes."""
    ranked = Counter(votes).most_common(2)
    if not ranked:
        return None
    if len(ranked) == 2 and ranked[0][1] == ranked[1][1]:
        return "unsure"
    return ranked[0][0]


def joint_members(label: Mapping[str, Any]) -> list[str]:
    """The judges a joint label stands for: `annotate judge` with several judges writes
    `llm:A+B` (meta.judges lists them) beside the labels of llm:A and llm:B; [] for one judge's label."""
    meta = label.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("judges"), list):
        return [str(member) for member in meta["judges"]]
    kind, _, names = label["by"].partition(":")
    return [f"{kind}:{name}" for name in names.split("+")] if "+" in names else []


def judge_votes(labels: Iterable[Mapping[str, Any]], prefixes: tuple[str, ...] = (JUDGE_PREFIX,)) -> dict[str, str]:
    """Each judge's vote (`by` -> chosen/rejected/tie/unsure): the plurality of its decided labels
    (self-consistency samples; a split is unsure), 'unsure' when it decided none. A joint label
    (`llm:A+B`) is one vote in place of the labels of the judges it combines, which are not counted
    again (it already aggregates them under annotate's --aggregate rule)."""
    selected = [label for label in labels if label["by"].startswith(prefixes)]
    covered = {member for label in selected for member in joint_members(label)}
    per_judge: dict[str, list[str]] = defaultdict(list)
    for label in selected:
        if label["by"] not in covered:
            per_judge[label["by"]].append(label["prefers"])
    return {by: plurality(p for p in prefers if p != "unsure") or "unsure" for by, prefers in per_judge.items()}


def judges_state(votes: Mapping[str, str]) -> str:
    """The judges' aggregated state: the plurality of the judges that decided (a split is unsure);
    unsure when no judge decided; missing without judge labels."""
    if not votes:
        return MISSING
    decided = plurality(vote for vote in votes.values() if vote != "unsure")
    return STATE_OF_PREFERENCE[decided or "unsure"]


def check_score(record: Record, name: str) -> float | None:
    """p of `scores.NAME`, None when absent; a malformed `scores` raises RecordError naming the field
    (the record validator's check, for records that did not come through a Stage)."""
    scores = record.get("scores")
    return None if scores is None or name not in check_scores(scores) else scores[name]["p"]


def check_labels(record: Record) -> list[dict[str, Any]]:
    """The record's labels, checked by the record validator (a bad one raises RecordError naming the field)."""
    return records_check_labels(record["labels"]) if "labels" in record else []


# -- the stage -------------------------------------------------------------------------------------

@dataclass
class ConsistencyConfig:
    """What filter-consistent decides with.

    gold / rm: names under `scores` (rm None: the one score in the input besides the gold's, taken
    from the first record that has one; no such score means the current RM is missing).
    judges: `by` prefixes of the labels that count as LLM judges.
    threshold: an RM agrees when p > threshold and disagrees when 1 - p > threshold (0.5 <= t < 1).
    missing_gold: "error" (a record without the gold score is a bad record) or "remove" (gold_missing).
    """

    gold: str
    rm: str | None = None
    judges: tuple[str, ...] = (JUDGE_PREFIX,)
    threshold: float = THRESHOLD
    recycle: bool = False
    missing_gold: str = "error"

    def __post_init__(self) -> None:
        if not 0.5 <= self.threshold < 1:
            raise ValueError(f"threshold must be in [0.5, 1), not {self.threshold}")
        if self.missing_gold not in MISSING_GOLD:
            raise ValueError(f"missing_gold must be one of {', '.join(MISSING_GOLD)}, not {self.missing_gold!r}")
        if self.rm is not None and self.rm == self.gold:
            raise ValueError(f"the gold and the current RM are the same signal (scores.{self.gold})")
        self.judges = tuple(self.judges)
        if not self.judges or not all(self.judges):
            raise ValueError("judges needs at least one non-empty `by` prefix")


@dataclass
class Signals:
    """One pair's signals: each RM's p (None: missing), each judge's vote, and their states."""

    gold_p: float | None
    rm_p: float | None
    votes: dict[str, str]
    threshold: float
    rm_name: str | None = None
    gold_name: str = ""

    @property
    def states(self) -> tuple[str, str, str]:
        return (model_state(self.gold_p, self.threshold), judges_state(self.votes),
                model_state(self.rm_p, self.threshold))

    def describe(self) -> dict[str, Any]:
        """The `signals` field of a removed or recycled record: what each signal said."""
        gold, judges, rm = self.states
        return {"gold": {"name": self.gold_name, "state": gold, "p": self.gold_p},
                "judges": {"state": judges, "votes": self.votes},
                "rm": {"name": self.rm_name, "state": rm, "p": self.rm_p}}


@dataclass
class Consistency:
    """Decides pairs one at a time under a config, and counts outcomes per source and reason."""

    config: ConsistencyConfig
    computed: tuple[str, ...] = ()  # score names this run computes itself (not checked on input)
    by_source: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (source, outcome, reason)

    def __post_init__(self) -> None:
        self.rm_name = self.config.rm

    def _resolve_rm(self, record: Record) -> None:
        """--rm not given: the first record with a score besides the gold's names the current RM."""
        scores = record.get("scores")
        if self.rm_name is not None or not isinstance(scores, dict):
            return
        others = sorted(name for name in scores if name != self.config.gold)
        if len(others) > 1:
            raise RecordError(f"holds several scores besides the gold's ({', '.join(others)}): "
                              "name the current RM with --rm", "scores")
        if others:
            self.rm_name = others[0]

    def check(self, record: Record) -> None:
        """The checks of an input record (a Stage `check`): a pair, with well-formed signals, and the
        gold score unless this run computes it or missing_gold is 'remove'."""
        if not is_pair(record):
            raise RecordError("not a pair: filter-consistent needs chosen and rejected", "chosen")
        config = self.config
        scores = record.get("scores")
        if scores is not None and not isinstance(scores, dict):
            raise RecordError(f"expected an object of score entries, got {type(scores).__name__}", "scores")
        check_labels(record)
        if config.gold not in self.computed:
            if check_score(record, config.gold) is None and config.missing_gold == "error":
                raise RecordError("missing: every pair needs the gold RM's score (`synpref score --name "
                                  f"{config.gold}`, or --gold DIR), or use --missing-gold remove",
                                  f"scores.{config.gold}")
        self._resolve_rm(record)
        if self.rm_name is not None and self.rm_name not in self.computed:
            check_score(record, self.rm_name)
        if config.recycle:  # a flip rewrites every score entry
            for name in record.get("scores") or {}:
                check_score(record, name)

    def signals(self, record: Record) -> Signals:
        """The signals of a record that passed `check` (and was scored, when this run scores)."""
        config = self.config
        return Signals(check_score(record, config.gold),
                       None if self.rm_name is None else check_score(record, self.rm_name),
                       judge_votes(check_labels(record), config.judges),
                       config.threshold, self.rm_name, config.gold)

    def decide(self, record: Record) -> tuple[Record, Verdict]:
        """The record to write (flipped when recycled) and its verdict."""
        signals = self.signals(record)
        decided = rule(*signals.states)
        source = str(record.get("source"))
        if decided.reversed and self.config.recycle:
            self.by_source[(source, "recycled", decided.reason)] += 1
            return flip(record, decided.reason, signals.describe()), Verdict(True, decided.reason)
        self.by_source[(source, "kept" if decided.keep else "removed", decided.reason)] += 1
        if decided.keep:
            return record, Verdict(True, decided.reason)
        return record, Verdict(False, decided.reason, {"signals": signals.describe()})


def flip(record: Record, reason: str, signals: Mapping[str, Any]) -> Record:
    """The pair with chosen and rejected swapped and everything that refers to them made consistent:
    `flipped` toggled, each score entry's chosen/rejected swapped and p -> 1 - p, each label's
    chosen/rejected preference swapped, and a `recycled` entry appended with the reason, the prior
    label (it preferred the reply now in `rejected`), the prior `flipped` and the signals."""
    swap = {"chosen": "rejected", "rejected": "chosen"}
    flipped: Record = {**record, "chosen": record["rejected"], "rejected": record["chosen"],
                       "flipped": not record.get("flipped", False)}
    scores = record.get("scores")
    if isinstance(scores, dict):
        flipped["scores"] = {name: _flipped_score(entry) for name, entry in scores.items()}
    if isinstance(record.get("labels"), list):
        flipped["labels"] = [{**label, "prefers": swap[label["prefers"]]} if label.get("prefers") in swap else label
                             for label in record["labels"]]
    entry = {"by": STAGE_NAME, "reason": reason, "prior_label": "rejected",
             "prior_flipped": bool(record.get("flipped", False)), "signals": dict(signals)}
    flipped["recycled"] = [*(record.get("recycled") or []), entry]
    return flipped


def _flipped_score(entry: dict[str, Any]) -> dict[str, Any]:
    new = dict(entry)
    if "chosen" in entry and "rejected" in entry:
        new["chosen"], new["rejected"] = entry["rejected"], entry["chosen"]
    if "p" in entry:
        new["p"] = 1 - entry["p"]
    return new


def resolve_signal(value: str) -> tuple[str, str | None]:
    """(score name, model directory or None) of a --gold/--rm value: a directory with a config.json
    is a reward model scored by this run under the directory's name (as `synpref score` names it);
    anything else is the name of an existing `scores` entry."""
    if os.path.isdir(value):
        if not os.path.isfile(os.path.join(value, "config.json")):
            raise ValueError(f"{value} is a directory but not a reward model (no config.json)")
        return os.path.basename(os.path.normpath(value)), value
    return value, None


def filter_consistent(
    stage: Stage, config: ConsistencyConfig, models: Mapping[str, Any] | None = None, **scorer_options: Any
) -> Consistency:
    """Route every pair of a Stage to kept or removed by the rule; returns the decider (its counts).

    MODELS maps score names to reward model directories (or loaded `RewardScorer`s) that this run
    scores the pairs with first, writing `scores.NAME` as `synpref score` does (an entry of that name
    in the input is replaced); SCORER_OPTIONS go to the scorer (max_length, device, ...).
    """
    models = dict(models or {})
    consistency = Consistency(config, tuple(models))
    items: Iterator[tuple[Record, bytes | None]]
    if models:
        from synpref.engines.reward import RewardScorer
        from synpref.score import score_records

        records: Iterator[Record] = stage.records(check=consistency.check)
        for name, model in models.items():
            scorer = model if isinstance(model, RewardScorer) else RewardScorer(model, **scorer_options)
            records = score_records(records, scorer, name)
        items = ((record, None) for record in records)
    else:
        items = stage.records_with_bytes(check=consistency.check)
    for record, original in items:
        decided, verdict = consistency.decide(record)
        if decided is not record:
            stage.counts["recycled"] += 1
            original = None
        stage.route(decided, verdict, original)
    return consistency


def filter_consistent_records(
    records: Iterable[Record], config: ConsistencyConfig, models: Mapping[str, Any] | None = None,
    **scorer_options: Any,
) -> tuple[list[Record], list[Record], Counter[str]]:
    """The stage as a plain function: (kept, removed with `reason` and `signals`, counts) of RECORDS."""
    with Stage.over(STAGE_NAME, records) as stage:
        filter_consistent(stage, config, models, **scorer_options)
    return stage.outputs(), stage.outputs("removed"), stage.counts


def summary_lines(by_source: Mapping[tuple[str, str, str], int]) -> list[str]:
    """Per source: kept (of which recycled) and removed, then the count of each reason."""
    lines = []
    for source in sorted({key[0] for key in by_source}):
        rows = sorted((outcome, reason, count) for (s, outcome, reason), count in by_source.items() if s == source)
        total: Counter[str] = Counter()
        for outcome, _, count in rows:
            total[outcome] += count
        lines.append(f"  {source}: kept {total['kept'] + total['recycled']} (recycled {total['recycled']}), "
                     f"removed {total['removed']}")
        width = max(len(reason) for _, reason, _ in rows)
        lines += [f"    {outcome:<8}  {reason:<{width}}  {count}" for outcome, reason, count in rows]
    return lines
