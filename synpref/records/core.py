"""The canonical record (SPEC section 2), the checks every normalizer shares, and `Expansion`, the
result of a row that is not exactly one record."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
KNOWN_ROLES = frozenset(ROLES)
HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
HH_ROLE = {"Human": "user", "Assistant": "assistant"}

Record = dict[str, Any]
Message = dict[str, str]


class RecordError(ValueError):
    """A row that cannot be read as a record; `field` names the offending field."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(message)


class Expansion(list):
    """What a row of an expanding layout becomes: zero or more records (a ranked list's pairs, RM-Bench's
    nine cells), plus what the layout's rule left out, so nothing disappears uncounted.

    `skipped` counts candidate pairs the rule did not form, by reason (a tie cannot train a
    Bradley-Terry model); `diverted` is the reason a row became no record at all (an Arena tie under
    `--ties drop`, chat histories that differ), and the Stage then routes the row itself to --diverted.
    A normalizer returns a plain dict for the common one-row-one-record case, never an Expansion.
    """

    __slots__ = ("layout", "skipped", "diverted")

    def __init__(self, records: Iterable[Record] = (), layout: str = "", skipped: dict[str, int] | None = None,
                 diverted: str | None = None):
        super().__init__(records)
        self.layout = layout
        self.skipped = skipped or {}
        self.diverted = diverted


def diverted(layout: str, reason: str) -> Expansion:
    """A row that becomes no record, for REASON."""
    return Expansion((), layout, diverted=reason)


def is_pair(record: Record) -> bool:
    return "chosen" in record and "rejected" in record


def check_messages(messages: Any, field: str) -> list[Message]:
    """A list of {role, content} with known roles and string content."""
    if type(messages) is not list:
        raise RecordError(f"expected a list of messages, got {type(messages).__name__}", field)
    for message in messages:  # the common, valid case in one cheap loop: this runs for every record
        if type(message) is not dict or message.get("role") not in KNOWN_ROLES or type(message.get("content")) is not str:
            _explain_bad_messages(messages, field)
    return messages


def _explain_bad_messages(messages: list, field: str) -> None:
    for position, message in enumerate(messages):
        where = f"{field}[{position}]"
        if not isinstance(message, dict):
            raise RecordError(f"expected a message object, got {type(message).__name__}", where)
        role = message.get("role")
        if role not in ROLES:
            raise RecordError(f"unknown role {role!r} (known: {', '.join(ROLES)})", f"{where}.role")
        if not isinstance(message.get("content"), str):
            raise RecordError("content must be a string", f"{where}.content")


def check_reply(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"expected a string reply, got {type(value).__name__}", field)
    return value


def check_text(value: Any, field: str, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise RecordError(f"expected {what}, got {type(value).__name__}", field)
    return value


def parse_hh_transcript(text: str, field: str) -> list[Message]:
    """Split an HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") into messages."""
    if not isinstance(text, str):
        raise RecordError(f"expected an HH-RLHF transcript string, got {type(text).__name__}", field)
    if not HH_TURN.match(text):
        raise RecordError("HH-RLHF transcript must start with '\\n\\nHuman:'", field)
    pieces = HH_TURN.split(text)[1:]
    return [
        {"role": HH_ROLE[speaker], "content": content.strip()}
        for speaker, content in zip(pieces[::2], pieces[1::2], strict=True)
    ]


def split_final_reply(messages: list[Message], field: str) -> tuple[list[Message], str]:
    if not messages or messages[-1]["role"] != "assistant":
        raise RecordError("the last message must be the assistant's reply", field)
    return messages[:-1], messages[-1]["content"]


def first_difference(history: list[Message], other: list[Message]) -> int | None:
    """The first turn at which two histories differ, or None when they are the same."""
    if history == other:
        return None
    return next((i for i, (a, b) in enumerate(zip(history, other, strict=False)) if a != b),
                min(len(history), len(other)))


def pair_from_histories(
    chosen_messages: list[Message], rejected_messages: list[Message],
    fields: tuple[str, str] = ("chosen", "rejected"),
) -> tuple[list[Message], str, str]:
    history, chosen = split_final_reply(chosen_messages, fields[0])
    other_history, rejected = split_final_reply(rejected_messages, fields[1])
    turn = first_difference(history, other_history)
    if turn is not None:
        raise RecordError(
            f"{fields[0]} and {fields[1]} have different histories (first difference at turn {turn})", fields[1]
        )
    return history, chosen, rejected


def rest(row: Record, consumed: tuple[str, ...] | frozenset[str]) -> Record:
    return {key: value for key, value in row.items() if key not in consumed}


def source_extra(row: Record, consumed: frozenset[str] | tuple[str, ...], layout: str) -> dict[str, Any]:
    """`extra` of a normalized record: the row's own `extra` object (if any), every source field the
    record does not hold elsewhere (ids, label fields, metadata), and the layout it was read as."""
    extra: dict[str, Any] = {}
    own = row.get("extra")
    if isinstance(own, dict):
        extra.update(own)
    for key, value in row.items():
        if key not in consumed and key != "extra":
            extra[key] = value
    if own is not None and not isinstance(own, dict):
        extra["extra"] = own
    extra["layout"] = layout
    return extra


def pair_record(conversation: list[Message], chosen: str, rejected: str, *, source: str | None,
                labels: list[dict[str, Any]], extra: dict[str, Any], record_id: Any = None) -> Record:
    """A canonical pair in the field order of SPEC section 2."""
    record: Record = {} if record_id is None else {"id": record_id}
    record["conversation"] = conversation
    record["chosen"] = chosen
    record["rejected"] = rejected
    if source is not None:
        record["source"] = source
    record["labels"] = labels
    record["extra"] = extra
    return record


def label(by: str, prefers: str = "chosen", **meta: Any) -> dict[str, Any]:
    """A `labels` entry recording who gave the source's own preference."""
    entry: dict[str, Any] = {"by": by, "prefers": prefers}
    if meta:
        entry["meta"] = meta
    return entry


def pair_problems(record: Record) -> list[str]:
    """Content problems that make a pair useless for training; filters use these as drop reasons."""
    problems = []
    if not any(m["role"] == "user" and m["content"].strip() for m in record.get("conversation", [])):
        problems.append("empty_prompt")
    chosen, rejected = record.get("chosen"), record.get("rejected")
    if not (isinstance(chosen, str) and chosen.strip()):
        problems.append("empty_chosen")
    if not (isinstance(rejected, str) and rejected.strip()):
        problems.append("empty_rejected")
    if isinstance(chosen, str) and chosen.strip() and chosen == rejected:
        problems.append("chosen_equals_rejected")
    return problems


def prompt_text(record: Record) -> str:
    """The whole history as one string (for lengths, n-grams and embeddings)."""
    return "\n".join(message["content"] for message in record.get("conversation", []))
