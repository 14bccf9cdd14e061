"""`synpref annotate judge`: preference-aware pairwise labels from one or more LLM judges.

The prompt (templates/judge.txt) carries the annotation guideline (the pair's `attributes.guideline`,
else the template's default), the pair's attributes, up to 8 human-labeled examples (the ids in the
pair's `extra.examples`, looked up in --examples streams; each example shown in its own seeded
order), then the conversation and the two replies as "Candidate 1" / "Candidate 2" in an order
drawn per record id (seeded, recorded). --both-orders shows both orders.

logprob mode reads P("1") against P("2") at the answer's first token: one forward of the prompt,
a calibrated confidence. generate mode samples --votes answers and reads each verdict out of
whatever prose surrounds it; an unreadable answer is asked again once with a stricter instruction
(the template's `### retry`, as a follow-up turn), then counts as no vote, its text kept in the
label's meta. Readings become labels by the rules of `synpref.annotate.aggregate`.

Each judge appends `{"by": "llm:NAME", "prefers", "confidence", "votes", "order", "template",
"meta"}` to the pair's `labels`; with several judges one more label, `llm:NAME1+NAME2`, holds their
joint verdict. Existing labels are never replaced.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from synpref.annotate.aggregate import (
    Decision,
    Reading,
    combine_models,
    combine_readings,
    probability_of_first,
)
from synpref.annotate.run import Caller, Failure, window_seed
from synpref.annotate.templates import PromptTemplate, clip, conversation_text
from synpref.labels import DECIDED
from synpref.records import Message, Record, is_pair

MODES = ("logprob", "generate")
CANDIDATES = ("1", "2")
MAX_EXAMPLES = 8


@dataclass(frozen=True)
class JudgeOptions:
    """How pairs are judged (see `synpref annotate judge --help`)."""

    mode: str = "logprob"
    votes: int = 1
    temperature: float | None = None  # None: 0 for one vote, 0.7 for several
    max_tokens: int = 32
    both_orders: bool = False
    aggregate: str = "majority"
    max_examples: int = MAX_EXAMPLES
    example_chars: int = 1000
    max_chars: int = 8000
    seed: int = 0

    def check(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.votes < 1:
            raise ValueError("votes must be at least 1")
        if self.mode == "logprob" and self.votes > 1:
            raise ValueError("votes > 1 needs generate mode: a logprob reading is deterministic "
                             "(its probability already is the vote share)")
        if not 0 <= self.max_examples <= MAX_EXAMPLES:
            raise ValueError(f"max_examples must be between 0 and {MAX_EXAMPLES}")

    @property
    def sampling_temperature(self) -> float:
        if self.temperature is not None:
            return self.temperature
        return 0.0 if self.votes == 1 else 0.7


def shows_rejected_first(record_id: Any, seed: int = 0) -> bool:
    """Whether the pair with this id shows its rejected reply as Candidate 1: a fair coin per id."""
    return bool(hashlib.sha256(f"{seed}\0{record_id}".encode()).digest()[0] & 1)


# -- verdicts out of prose ---------------------------------------------------------------------
_NAMED = r"(?:candidate|reply|response|answer|option|assistant)\s*#?\s*"
_PATTERNS = (
    re.compile(r"\[\[\s*(1|2|tie)\s*\]\]", re.IGNORECASE),
    re.compile(r"(?:verdict|answer|better(?:\s+(?:one|reply|candidate|response))?|winner|choice|i\s+choose|prefer(?:red)?)"
               r"\s*(?:is|:|=|-)?\s*\**\s*(?:" + _NAMED + r")?\**\s*([12])(?!\d|[.,]\d)", re.IGNORECASE),
    re.compile(_NAMED + r"([12])\**\s+(?:is|was|seems|appears)\s+(?:the\s+|clearly\s+|much\s+)?"
               r"(?:better|best|preferred|superior|more\s+\w+)", re.IGNORECASE),
)
_LEADING = re.compile(r"^[\s*#>\"'(\[]*([12])(?!\d)")
_TIE = re.compile(r"\b(?:tie|equally\s+(?:good|bad|helpful)|both\s+(?:are\s+)?equally)\b", re.IGNORECASE)
_MENTION = re.compile(_NAMED + r"([12])(?!\d)", re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """The verdict in a generated answer: "1", "2", "tie", or None when it cannot be read.

    Tried in turn: a FastChat-style [[1]]; a stated verdict ("Verdict: 2", "the better one is
    Candidate 1", "I choose 2"); "Candidate 2 is better"; an answer that starts with the bare
    number; a tie; a text that names only one candidate. Conflicting statements of one kind, or a
    text naming both candidates without a verdict, read as None.
    """
    for pattern in _PATTERNS:
        found = {match.lower() for match in pattern.findall(text)}
        if len(found) == 1:
            return found.pop()
        if found:
            return None
    match = _LEADING.match(text)
    if match:
        return match.group(1)
    if _TIE.search(text):
        return "tie"
    mentioned = set(_MENTION.findall(text))
    return mentioned.pop() if len(mentioned) == 1 else None


# -- examples ----------------------------------------------------------------------------------
def example_ids(record: Record) -> list[str]:
    """The retrieved example ids a record carries in `extra.examples` (ids, or objects with `id`)."""
    extra = record.get("extra")
    listed = extra.get("examples") if isinstance(extra, dict) else None
    if not isinstance(listed, list):
        return []
    ids = [entry.get("id") if isinstance(entry, dict) else entry for entry in listed]
    return [str(entry) for entry in ids if isinstance(entry, str | int) and not isinstance(entry, bool)]


def human_preference(record: Record) -> str | None:
    """Which side the humans prefer in an example: its last decided human label, else `chosen`
    (a verified gold pair's chosen reply); None when humans only marked it unsure."""
    human = [label for label in record.get("labels") or []
             if isinstance(label, dict) and str(label.get("by", "")).startswith("human")]
    decided = [label["prefers"] for label in human if label.get("prefers") in DECIDED]
    if decided:
        return decided[-1]
    return None if human else "chosen"


def attributes_text(attributes: Any) -> str:
    """A pair's attributes on one line (the guideline goes elsewhere in the prompt)."""
    if not isinstance(attributes, dict):
        return "not annotated"
    parts = []
    for key in ("task_category", "objectivity", "controversiality"):
        if isinstance(attributes.get(key), str) and attributes[key]:
            parts.append(f"{key.replace('_', ' ')}: {attributes[key]}")
    desired = attributes.get("desired_attributes")
    if isinstance(desired, list) and desired:
        parts.append("desired attributes: " + ", ".join(map(str, desired)))
    return "; ".join(parts) or "not annotated"


# -- the judge ---------------------------------------------------------------------------------
@dataclass
class _Shown:
    """One pair as the prompts show it."""

    index: int  # in the window
    prompts: list[list[Message]]  # one per order
    firsts: list[str]  # the side shown as Candidate 1 in each prompt
    examples: int
    missing: int
    clipped: bool


class PairJudge:
    """The judge task over windows of records (a `synpref.annotate.run.Task`)."""

    name = "judge"

    def __init__(self, judges: Sequence[Caller], template: PromptTemplate, options: JudgeOptions | None = None,
                 examples: Mapping[str, Record] | None = None):
        self.options = options or JudgeOptions()
        self.options.check()
        if not judges:
            raise ValueError("judge needs at least one model")
        names = [judge.name for judge in judges]
        if len(set(names)) != len(names):
            raise ValueError(f"judge names must differ (got {', '.join(names)}): name them NAME=PATH")
        self.judges, self.template, self.examples = list(judges), template, examples or {}
        self.ensemble = "llm:" + "+".join(names) if len(judges) > 1 else None
        self.positions: dict[str, Counter[str]] = defaultdict(Counter)  # judge -> "1"/"2" verdict counts
        self.consistency: dict[str, Counter[bool]] = defaultdict(Counter)  # judge -> both orders agreed

    # -- prompts ---------------------------------------------------------------------------------
    def _show(self, index: int, record: Record) -> _Shown:
        options = self.options
        attributes = record.get("attributes")
        guideline = attributes.get("guideline") if isinstance(attributes, dict) else None
        if not isinstance(guideline, str) or not guideline.strip():
            guideline = self.template.render("guideline")
        blocks, missing = [], 0
        for example_id in example_ids(record):
            if len(blocks) == options.max_examples:
                break
            example = self.examples.get(example_id)
            preferred = human_preference(example) if example and is_pair(example) else None
            if preferred is None or example_id == str(record.get("id")):
                missing += 1
                continue
            blocks.append(self._example(len(blocks) + 1, example_id, example, preferred))
        conversation, clipped = conversation_text(record.get("conversation") or [], options.max_chars)
        replies = {}
        for side in ("chosen", "rejected"):
            replies[side], cut = clip(str(record[side]), options.max_chars)
            clipped |= cut
        swapped = shows_rejected_first(record.get("id"), options.seed)
        firsts = ["chosen", "rejected"] if options.both_orders else ["rejected" if swapped else "chosen"]
        prompts = []
        for first in firsts:
            second = "rejected" if first == "chosen" else "chosen"
            text = self.template.render(
                guideline=guideline.strip(), examples="\n\n".join(blocks) + ("\n" if blocks else ""),
                attributes=attributes_text(attributes), conversation=conversation,
                candidate_1=replies[first], candidate_2=replies[second],
            )
            prompts.append([{"role": "user", "content": text}])
        return _Shown(index, prompts, firsts, len(blocks), missing, clipped)

    def _example(self, number: int, example_id: str, example: Record, preferred: str) -> str:
        limit = self.options.example_chars
        first = "rejected" if shows_rejected_first(example_id, self.options.seed) else "chosen"
        second = "rejected" if first == "chosen" else "chosen"
        verdict = "Tie" if preferred == "tie" else "Candidate 1" if preferred == first else "Candidate 2"
        return self.template.render(
            "example", number=str(number), attributes=attributes_text(example.get("attributes")),
            conversation=conversation_text(example.get("conversation") or [], limit)[0],
            candidate_1=clip(str(example[first]), limit)[0], candidate_2=clip(str(example[second]), limit)[0],
            verdict=verdict,
        )

    # -- readings --------------------------------------------------------------------------------
    def _read_logprobs(self, judge: Caller, prompts: list[list[Message]], firsts: list[str]) -> list[Any]:
        readings: list[Any] = []
        for first, result in zip(firsts, judge.logprobs(prompts, CANDIDATES), strict=True):
            if isinstance(result, Failure):
                readings.append(result)
            else:
                readings.append(Reading.from_probability(first, probability_of_first(result[0], result[1])))
        return readings

    def _read_generated(self, judge: Caller, prompts: list[list[Message]], firsts: list[str],
                        seed: int) -> tuple[list[Any], list[dict[str, Any]]]:
        """Readings of generated votes, and per prompt what was retried and left unread."""
        options = self.options
        sampling = {"max_tokens": options.max_tokens, "temperature": options.sampling_temperature}
        results = judge.generate(prompts, n=options.votes, seed=seed, **sampling)
        positions: list[list[str | None]] = []
        retries: list[tuple[int, int, str]] = []  # (prompt, vote, first answer)
        for index, result in enumerate(results):
            texts = [] if isinstance(result, Failure) else result
            positions.append([parse_verdict(text) for text in texts])
            retries += [(index, vote, text) for vote, text in enumerate(texts) if positions[index][vote] is None]
        strict = self.template.render("retry")
        followups = [[*prompts[index], {"role": "assistant", "content": text}, {"role": "user", "content": strict}]
                     for index, _, text in retries]
        notes: list[dict[str, Any]] = [{} for _ in prompts]
        for (index, vote, first_text), again in zip(retries, judge.generate(followups, n=1, seed=seed + 1, **sampling),
                                                    strict=True):
            note = notes[index]
            note["retried"] = note.get("retried", 0) + 1
            text = "" if isinstance(again, Failure) else again[0]
            positions[index][vote] = parse_verdict(text)
            if positions[index][vote] is None:
                note.setdefault("raw", []).append({"answer": first_text, "retry": text})
        readings: list[Any] = []
        for first, result, votes in zip(firsts, results, positions, strict=True):
            readings.append(result if isinstance(result, Failure) else Reading(first, votes))
        return readings, notes

    # -- the window --------------------------------------------------------------------------------
    def annotate(self, records: list[Record]) -> list[Record]:
        shown = [self._show(index, record) for index, record in enumerate(records) if is_pair(record)]
        prompts = [prompt for pair in shown for prompt in pair.prompts]
        firsts = [first for pair in shown for first in pair.firsts]
        seed = window_seed(self.options.seed, records)
        labels: dict[int, list[dict[str, Any]]] = defaultdict(list)
        decisions: dict[int, list[Decision]] = defaultdict(list)
        for judge in self.judges:
            if self.options.mode == "logprob":
                readings, notes = self._read_logprobs(judge, prompts, firsts), [{} for _ in prompts]
            else:
                readings, notes = self._read_generated(judge, prompts, firsts, seed)
            start = 0
            for pair in shown:
                count = len(pair.prompts)
                label, decision = self._label(judge.name, pair, readings[start : start + count],
                                              notes[start : start + count])
                labels[pair.index].append(label)
                decisions[pair.index].append(decision)
                start += count
        out = []
        for index, record in enumerate(records):
            if index not in labels:
                out.append(record)
                continue
            added = labels[index]
            if self.ensemble:
                added.append(self._ensemble_label(decisions[index], added))
            out.append({**record, "labels": [*(record.get("labels") or []), *added]})
        return out

    def _label(self, name: str, pair: _Shown, readings: list[Any], notes: list[dict[str, Any]]
               ) -> tuple[dict[str, Any], Decision]:
        good = [reading for reading in readings if isinstance(reading, Reading)]
        decision = combine_readings(good, self.options.aggregate) if good else Decision("unsure", None, {})
        meta: dict[str, Any] = {
            "task": "judge", "mode": self.options.mode, "aggregate": self.options.aggregate,
            "readings": [
                {"first": reading.first, "positions": reading.positions,
                 **({"p1": round(reading.p1, 6)} if reading.p1 is not None else {})}
                for reading in good
            ],
            "examples": pair.examples,
        }
        if decision.p_chosen is not None:
            meta["p_chosen"] = round(decision.p_chosen, 6)
        if pair.missing:
            meta["examples_missing"] = pair.missing
        if pair.clipped:
            meta["clipped"] = True
        failures = [reading.error for reading in readings if isinstance(reading, Failure)]
        if failures:
            meta["failure"] = failures[0]
        retried = sum(note.get("retried", 0) for note in notes)
        if retried:
            meta["retried"] = retried
        raw = [entry for note in notes for entry in note.get("raw", [])]
        if raw:
            meta["raw"] = raw
        label = {
            "by": f"llm:{name}", "prefers": decision.prefers,
            "confidence": None if decision.confidence is None else round(decision.confidence, 6),
            "votes": decision.votes,
            "order": "both" if len(pair.firsts) == 2 else f"{pair.firsts[0]}-first",
            "template": self.template.digest, "meta": meta,
        }
        return label, decision

    def _ensemble_label(self, decisions: list[Decision], labels: list[dict[str, Any]]) -> dict[str, Any]:
        joint = combine_models(decisions, self.options.aggregate)
        meta: dict[str, Any] = {"task": "judge", "aggregate": self.options.aggregate,
                                "judges": [label["by"] for label in labels]}
        if joint.p_chosen is not None:
            meta["p_chosen"] = round(joint.p_chosen, 6)
        return {"by": self.ensemble, "prefers": joint.prefers,
                "confidence": None if joint.confidence is None else round(joint.confidence, 6),
                "votes": joint.votes, "order": labels[0]["order"], "template": self.template.digest, "meta": meta}

    # -- counts ----------------------------------------------------------------------------------
    def tally(self, record: Record) -> Iterable[str]:
        """Count one output record: its final label, failures, retries and examples; and collect the
        position statistics of each judge (its own last label on the record)."""
        if not is_pair(record):
            return ["skipped_not_a_pair"]
        keys = ["judged"]
        labels = {label["by"]: label for label in record.get("labels") or []
                  if isinstance(label, dict) and isinstance(label.get("by"), str)}
        for judge in self.judges:
            label = labels.get(f"llm:{judge.name}")
            if label is None:
                continue
            meta = label.get("meta") or {}
            if "failure" in meta:
                keys.append("failed_engine")
            keys += ["retried_votes"] * meta.get("retried", 0) + ["unread_votes"] * len(meta.get("raw", []))
            readings = meta.get("readings", [])
            for reading in readings:
                self.positions[judge.name].update(p for p in reading.get("positions", []) if p in CANDIDATES)
            if len(readings) == 2:
                verdicts = [Reading(r["first"], r.get("positions", []), r.get("p1")).verdict() for r in readings]
                if all(verdict in DECIDED for verdict in verdicts):
                    self.consistency[judge.name][verdicts[0] == verdicts[1]] += 1
        final = labels.get(self.ensemble) if self.ensemble else labels.get(f"llm:{self.judges[0].name}")
        if final is not None:
            keys.append(f"prefers_{final.get('prefers')}")
            meta = final.get("meta") or {}
            keys += ["examples_used"] * meta.get("examples", 0) + ["examples_missing"] * meta.get("examples_missing", 0)
        return keys

    def report(self) -> list[str]:
        """Per judge: position bias (share of "Candidate 1" verdicts) and, with both orders, how often
        both orders agreed (pairs where both decided)."""
        lines = []
        for judge in self.judges:
            counts = self.positions.get(judge.name, Counter())
            total = counts["1"] + counts["2"]
            line = f"judge {judge.name}: "
            line += f"position bias {counts['1'] / total:.3f} (share of Candidate 1 verdicts, n={total})" if total \
                else "no decided verdicts"
            agree = self.consistency.get(judge.name)
            if agree:
                pairs = agree[True] + agree[False]
                line += f", position consistency {agree[True] / pairs:.3f} (n={pairs})"
            lines.append(line)
        return lines
