"""`synpref annotate attributes`: the 5-tuple of SPEC section 2 written into `attributes`.

Closed-set fields (task_category, objectivity, controversiality) are read, not generated: their
prompts list the allowed values as lettered options and the letter with the highest probability
at the answer's first token wins. The three prompts of a pair differ only after the conversation,
so the torch engine reads that common head once and each question is a short tail: one read of the
pair for all three. Free-text fields are generated with a small --max-tokens, conditioned on the
fields before them: desired_attributes (a comma-separated list, parsed and checked), then the
guideline (one sentence). An answer that fails the schema is asked again once with a stricter
instruction (`### retry`); a field that still fails is left out and its raw text kept in
`attributes_meta.failed`. `attributes_meta` also records the model, the template digest and the
probability of each closed-set choice.

Fields already present and valid are kept (`--overwrite` re-annotates them); the ones the model
writes are conditioned on them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from synpref.annotate.run import Caller, Failure
from synpref.annotate.templates import PromptTemplate, conversation_text
from synpref.records import Message, Record

TASK_CATEGORIES = (
    "coding", "math", "reasoning", "open_qa", "closed_qa", "advice", "creative_writing", "rewriting",
    "summarization", "extraction", "classification", "brainstorming", "roleplay", "safety", "other",
)
CLOSED: dict[str, tuple[str, ...]] = {
    "task_category": TASK_CATEGORIES,
    "objectivity": ("objective", "subjective"),
    "controversiality": ("low", "medium", "high"),
}
FREE = ("desired_attributes", "guideline")
FIELDS = (*CLOSED, *FREE)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: max(map(len, CLOSED.values()))]
MAX_DESIRED = 6
_ITEM = re.compile(r"[a-z][a-z' -]{0,30}")


def attribute_problems(attributes: Any) -> dict[str, str]:
    """What is wrong with an `attributes` object, field by field (empty when it is complete and valid)."""
    if not isinstance(attributes, dict):
        return dict.fromkeys(FIELDS, "missing")
    problems = {}
    for field, allowed in CLOSED.items():
        if attributes.get(field) not in allowed:
            problems[field] = f"must be one of {', '.join(allowed)}"
    desired = attributes.get("desired_attributes")
    if not (isinstance(desired, list) and 1 <= len(desired) <= MAX_DESIRED
            and all(isinstance(item, str) and item.strip() for item in desired)):
        problems["desired_attributes"] = f"must be a list of 1 to {MAX_DESIRED} non-empty strings"
    guideline = attributes.get("guideline")
    if not (isinstance(guideline, str) and guideline.strip()):
        problems["guideline"] = "must be a non-empty string"
    return problems


def parse_desired(text: str) -> list[str]:
    """Desired attributes out of a generated line: comma/semicolon/'and'-separated short lowercase
    phrases, list marks and a leading 'Qualities:' removed, duplicates dropped, at most MAX_DESIRED."""
    line = next((line for line in text.strip().splitlines() if line.strip()), "")
    if ":" in line[:40]:
        line = line.split(":", 1)[1]
    items: list[str] = []
    for piece in re.split(r"[,;/]|\band\b|\s-\s|\d+\.", line.lower()):
        item = piece.strip(" \t*-•\"'.()[]")
        if _ITEM.fullmatch(item) and len(item.split()) <= 3 and item not in items:
            items.append(item)
    return items[:MAX_DESIRED]


def parse_guideline(text: str) -> str:
    """The guideline out of a generated answer: its first paragraph, unquoted, cut after its last
    full sentence when --max-tokens ended it mid-sentence; '' when fewer than four words remain."""
    paragraph = next((part for part in text.strip().split("\n\n") if part.strip()), "").strip()
    paragraph = " ".join(paragraph.strip("\"'").split())[:600]
    ends = [match.end() for match in re.finditer(r"[.!?](?=\s)", paragraph)]
    if ends and not paragraph.endswith((".", "!", "?")):
        paragraph = paragraph[: ends[-1]]
    return paragraph if len(paragraph.split()) >= 4 else ""


def _choice(logprobs: list[float], allowed: tuple[str, ...]) -> tuple[str, float]:
    """The allowed value whose letter is likeliest, and its probability among the allowed letters."""
    values = logprobs[: len(allowed)]
    top = max(values)
    weights = [math.exp(value - top) for value in values]
    best = max(range(len(values)), key=values.__getitem__)
    return allowed[best], weights[best] / sum(weights)


class AttributeAnnotator:
    """The attributes task over windows of records (a `synpref.annotate.run.Task`)."""

    name = "attributes"

    def __init__(self, judge: Caller, template: PromptTemplate, max_tokens: int = 32, overwrite: bool = False,
                 max_chars: int = 4000):
        self.judge, self.template = judge, template
        self.max_tokens, self.overwrite, self.max_chars = max_tokens, overwrite, max_chars
        self.by = f"llm:{judge.name}"

    def needed(self, record: Record) -> list[str]:
        """The fields this run writes into RECORD (none for a record without a conversation)."""
        if not record.get("conversation"):
            return []
        return list(FIELDS) if self.overwrite else [f for f in FIELDS if f in attribute_problems(record.get("attributes"))]

    def annotate(self, records: list[Record]) -> list[Record]:
        work = {index: self.needed(record) for index, record in enumerate(records)}
        work = {index: fields for index, fields in work.items() if fields}
        heads = {index: self.template.render(conversation=conversation_text(records[index]["conversation"],
                                                                            self.max_chars)[0])
                 for index in work}
        values: dict[int, dict[str, Any]] = {}
        meta: dict[int, dict[str, Any]] = {}
        for index, fields in work.items():
            existing = records[index].get("attributes")
            values[index] = {k: v for k, v in existing.items() if k not in fields} if isinstance(existing, dict) else {}
            meta[index] = {"by": self.by, "template": self.template.digest, "fields": fields, "p": {}}
        self._read_closed(work, heads, values, meta)
        for field, parse, stop in (("desired_attributes", parse_desired, ["\n"]),
                                   ("guideline", parse_guideline, ["\n\n"])):
            self._generate(field, parse, stop, [i for i, fields in work.items() if field in fields], heads, values, meta)
        out = list(records)
        for index in work:
            attributes = {field: values[index][field] for field in FIELDS if field in values[index]}
            attributes.update({k: v for k, v in values[index].items() if k not in attributes})  # unknown keys kept
            out[index] = {**records[index], "attributes": attributes, "attributes_meta": meta[index]}
        return out

    def _read_closed(self, work: Mapping[int, list[str]], heads: Mapping[int, str],
                     values: dict[int, dict[str, Any]], meta: dict[int, dict[str, Any]]) -> None:
        asks = [(index, field) for index, fields in work.items() for field in CLOSED if field in fields]
        prompts = []
        for index, field in asks:
            options = "\n".join(f"{letter}) {value}" for letter, value in zip(LETTERS, CLOSED[field], strict=False))
            prompts.append(_user(heads[index] + "\n\n" + self.template.render(field, options=options)))
        for (index, field), result in zip(asks, self.judge.logprobs(prompts, list(LETTERS)), strict=True):
            if isinstance(result, Failure):
                meta[index].setdefault("failed", {})[field] = result.error
                continue
            values[index][field], probability = _choice(result, CLOSED[field])
            meta[index]["p"][field] = round(probability, 6)

    def _generate(self, field: str, parse: Any, stop: list[str], indexes: list[int], heads: Mapping[int, str],
                  values: dict[int, dict[str, Any]], meta: dict[int, dict[str, Any]]) -> None:
        prompts = [_user(heads[index] + "\n\n" + self.template.render(field, **self._context(values[index])))
                   for index in indexes]
        options = {"n": 1, "max_tokens": self.max_tokens, "temperature": 0.0, "stop": stop}
        answers = [None if isinstance(r, Failure) else r[0] for r in self.judge.generate(prompts, **options)]
        retry = [position for position, answer in enumerate(answers) if answer is None or not parse(answer)]
        strict = self.template.render("retry")
        followups = [[*prompts[p], {"role": "assistant", "content": answers[p] or ""}, {"role": "user", "content": strict}]
                     for p in retry]
        again = dict(zip(retry, self.judge.generate(followups, **options), strict=True))
        for position, index in enumerate(indexes):
            answer = answers[position]
            if position in again:
                meta[index]["retried"] = [*meta[index].get("retried", []), field]
                answer = None if isinstance(again[position], Failure) else again[position][0]
            parsed = parse(answer) if answer is not None else None
            if parsed:
                values[index][field] = parsed
            else:
                failure = again[position].error if isinstance(again.get(position), Failure) else answer
                meta[index].setdefault("failed", {})[field] = failure

    @staticmethod
    def _context(values: Mapping[str, Any]) -> dict[str, str]:
        """What the free-text questions are told about the fields before them."""
        desired = values.get("desired_attributes")
        return {
            "task_category": str(values.get("task_category", "unknown")).replace("_", " "),
            "objectivity": str(values.get("objectivity", "unknown")),
            "controversiality": str(values.get("controversiality", "unknown")),
            "desired_attributes": ", ".join(desired) if isinstance(desired, list) and desired else "helpful",
        }

    def tally(self, record: Record) -> Iterable[str]:
        if not record.get("conversation"):
            return ["skipped_no_conversation"]
        meta = record.get("attributes_meta")
        if not (isinstance(meta, dict) and meta.get("by") == self.by and meta.get("template") == self.template.digest):
            return ["skipped_has_attributes"]
        failed = meta.get("failed") or {}
        keys = ["annotated"] + [f"failed_{field}" for field in failed] + [f"retried_{f}" for f in meta.get("retried", [])]
        if not failed:
            keys.append("complete")
        return keys


def _user(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]
