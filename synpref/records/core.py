"""The canonical record (SPEC section 2), the checks every normalizer shares, and `Expansion`, the
result of a row that is not exactly one record."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
KNOWN_ROLES = frozenset(ROLES)
PREFERS = ("chosen", "rejected", "tie", "unsure")  # what a `labels` entry can prefer (SPEC section 2)
# How deep objects and lists may nest in a row: orjson writes back at most 254 levels, and a record
# sits a level or two deeper than its row (`extra`, the `row` of a --diverted entry).
MAX_DEPTH = 200
# orjson reads a JSON integer outside [-2**63, 2**64) as a float, which it would write back changed.
WIDE_LOW, WIDE_HIGH = -(2.0**63), 2.0**64
# Keys whose duplicates in a raw line are looked for (`duplicate_key`): the last one would win silently.
PAIR_KEYS = ((b'"chosen":', "chosen"), (b'"rejected":', "rejected"))
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


def check_pair(record: Record, command: str) -> None:
    """For a Stage `check` of a command that needs pairs: a record without replies is a bad record."""
    if not is_pair(record):
        raise RecordError(f"not a pair: {command} needs chosen and rejected", "chosen")


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


def check_fields(record: Record) -> Record:
    """The fields of SPEC section 2 beyond the conversation and the replies (which each layout checks),
    for every normalized record: a pair has both replies, after a history that does not already end
    on the assistant's turn; id, source, flipped, attributes, labels and scores have their types, so
    no stage meets a malformed one (stats, score, review and the filters read them)."""
    if "chosen" in record:
        if "rejected" not in record:
            raise RecordError("missing: a pair needs chosen and rejected, this record has only chosen", "rejected")
        conversation = record.get("conversation")
        if conversation and conversation[-1]["role"] == "assistant":
            raise RecordError("the conversation already ends with an assistant turn; it is the history before "
                              "the replies (move that turn into chosen/rejected, or drop it)",
                              f"conversation[{len(conversation) - 1}].role")
    elif "rejected" in record:
        raise RecordError("missing: a pair needs chosen and rejected, this record has only rejected", "chosen")
    value = record.get("id", "")
    if type(value) is not str and type(value) is not int:
        raise RecordError(f"expected a string or an integer id, got {type_name(value)}", "id")
    if type(record.get("source", "")) is not str:
        raise RecordError(f"expected a string, got {type_name(record['source'])}", "source")
    if "flipped" in record and type(record["flipped"]) is not bool:
        raise RecordError(f"expected true or false, got {type_name(record['flipped'])}", "flipped")
    if "attributes" in record and type(record["attributes"]) is not dict:
        raise RecordError(f"expected an object of attributes, got {type_name(record['attributes'])}", "attributes")
    if "labels" in record:
        check_labels(record["labels"])
    if "scores" in record:
        check_scores(record["scores"])
    return record


def type_name(value: Any) -> str:
    """A JSON value's type as a message names it (null, not NoneType)."""
    return "null" if value is None else type(value).__name__


def _number(value: Any) -> bool:
    return (type(value) is float or type(value) is int) and math.isfinite(value)


def check_labels(labels: Any) -> list[dict[str, Any]]:
    """`labels`: a list of {by, prefers, confidence?, meta?} (SPEC section 2)."""
    if type(labels) is not list:
        raise RecordError(f"expected a list of label objects, got {type_name(labels)}", "labels")
    for index, entry in enumerate(labels):
        where = f"labels[{index}]"
        if type(entry) is not dict:
            raise RecordError(f"expected a label object {{by, prefers, ...}}, got {type_name(entry)}", where)
        if type(entry.get("by")) is not str or not entry["by"]:
            raise RecordError("must be a non-empty string (human:NAME, llm:MODEL, rm:NAME, ...)", f"{where}.by")
        if entry.get("prefers") not in PREFERS:
            raise RecordError(f"must be one of {', '.join(PREFERS)}, got {entry.get('prefers')!r}", f"{where}.prefers")
        confidence = entry.get("confidence")
        if confidence is not None and not (_number(confidence) and 0 <= confidence <= 1):
            raise RecordError(f"must be a number from 0 to 1 (or null), got {confidence!r}", f"{where}.confidence")
        if "meta" in entry and type(entry["meta"]) is not dict:
            raise RecordError(f"expected an object, got {type_name(entry['meta'])}", f"{where}.meta")
    return labels


def check_scores(scores: Any) -> dict[str, Any]:
    """`scores`: {NAME: {chosen, rejected, p}} with p the probability that the label is right (SPEC
    section 2); chosen and rejected, the rewards, may be left out."""
    if type(scores) is not dict:
        raise RecordError(f"expected an object of score entries {{NAME: {{chosen, rejected, p}}}}, got "
                          f"{type_name(scores)}", "scores")
    for name, entry in scores.items():
        where = f"scores.{name}"
        if type(entry) is not dict:
            raise RecordError(f"expected a {{chosen, rejected, p}} object, got {type_name(entry)}", where)
        if "p" not in entry:
            raise RecordError("missing (a score entry needs p, the probability that the label is right)", f"{where}.p")
        if not (_number(entry["p"]) and 0 <= entry["p"] <= 1):
            raise RecordError(f"must be a number from 0 to 1, got {entry['p']!r}", f"{where}.p")
        for side in ("chosen", "rejected"):
            if side in entry and not _number(entry[side]):
                raise RecordError(f"must be a number (the reward), got {entry[side]!r}", f"{where}.{side}")
    return scores


def check_nesting(row: Record, skip: str | None = None) -> None:
    """Objects or lists nested deeper than MAX_DEPTH, and numbers beyond the 64-bit integer range
    (integers orjson read as floats), fail naming the field: neither would be written back as it was
    read. SKIP names a field known to hold only strings (a conversation of plain messages)."""
    for key, value in row.items():
        kind = type(value)
        if kind is str or key == skip:
            continue
        if kind is dict or kind is list:
            if not _LOOKED_INTO.isdisjoint(map(type, value.values() if kind is dict else value)):
                problem = _nesting_problem(value, 2)
                if problem == "depth":
                    raise RecordError(f"nested deeper than {MAX_DEPTH} levels (objects and lists)", key)
                if problem is not None:
                    _wide_number(value, key)
        elif kind is float and (value >= WIDE_HIGH or value <= WIDE_LOW):
            _wide_number(value, key)


def _nesting_problem(container: dict | list, depth: int) -> str | None:
    """'depth' or 'number' for the first problem inside CONTAINER (itself at DEPTH), else None. A
    container holding no object, list or float (a message, many `extra`s) is passed over in C."""
    for item in container.values() if type(container) is dict else container:
        kind = type(item)
        if kind is dict or kind is list:
            if depth >= MAX_DEPTH:
                return "depth"
            if not _LOOKED_INTO.isdisjoint(map(type, item.values() if kind is dict else item)) \
                    and (problem := _nesting_problem(item, depth + 1)) is not None:
                return problem
        elif kind is float and (item >= WIDE_HIGH or item <= WIDE_LOW):
            return "number"
    return None


_LOOKED_INTO = frozenset((dict, list, float))


def _wide_number(value: Any, path: str) -> None:
    """Raise for the first number of VALUE beyond the 64-bit integer range, naming where it is."""
    if type(value) is float and (value >= WIDE_HIGH or value <= WIDE_LOW):
        raise RecordError(f"number {value!r} is beyond the 64-bit integer range: JSON readers (orjson) take "
                          "such integers as floats and would write them back changed; write it as a string", path)
    items = value.items() if type(value) is dict else enumerate(value) if type(value) is list else ()
    for key, item in items:
        _wide_number(item, f"{path}.{key}" if type(value) is dict else f"{path}[{key}]")


def check_duplicate_keys(data: bytes, row: Record) -> None:
    """A raw line that holds `chosen` or `rejected` twice fails: a JSON reader keeps the last value
    silently. Cheap: '"chosen":' and '"rejected":' are counted in the line (a string cannot hold
    them unescaped, so each is a key), and only a line with more than the row explains (its own
    keys, one in each score entry) is parsed again, by the standard library, to find the duplicate.
    Keys written with a space before the colon, and duplicates of other keys, are not looked for."""
    for needle, key in PAIR_KEYS:
        found = data.count(needle)
        if found > 1 and found > (key in row) + _score_keys(row, key):
            path = _duplicate_path(json.loads(data, object_pairs_hook=_object_keeping_duplicates), "")
            if path is not None:
                raise RecordError("this key appears twice in the object (a JSON reader would keep the last "
                                  "silently); keep one", path)
            return


def _score_keys(row: Record, key: str) -> int:
    scores = row.get("scores")
    return sum(1 for entry in scores.values() if type(entry) is dict and key in entry) \
        if type(scores) is dict else 0


class _Duplicated(dict):
    """An object of the standard library's parse that held a key twice (`duplicate`)."""

    duplicate = ""


def _object_keeping_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    marked, seen = _Duplicated(value), set()
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _duplicate_path(value: Any, path: str) -> str | None:
    if isinstance(value, _Duplicated):
        return f"{path}.{value.duplicate}" if path else value.duplicate
    if isinstance(value, dict):
        children = ((f"{path}.{key}" if path else key, child) for key, child in value.items())
    elif isinstance(value, list):
        children = ((f"{path}[{index}]", child) for index, child in enumerate(value))
    else:
        return None
    for where, child in children:
        if isinstance(child, dict | list) and (found := _duplicate_path(child, where)) is not None:
            return found
    return None


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
