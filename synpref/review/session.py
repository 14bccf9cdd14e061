"""One annotator's review of a list of pairs: what to show next, and every decision made durable.

The state lives in the label stream, not in memory: a session opened on an existing label file
replays it and resumes at the first pair this annotator has not labeled, so a killed server or a
closed tab loses nothing. The two replies are shown in an order drawn per (annotator, pair) from a
hash, so a reload shows the same order and different annotators see different orders; the order is
recorded in each label's meta and never sent to the page (the page cannot tell which is `chosen`).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from synpref.labels import DECIDED, PREFERS, Label, LabelWriter, read_label_entries, replay
from synpref.records import Record, is_pair

CHOICES = {"1": 0, "2": 1, "tie": "tie", "unsure": "unsure"}  # page key -> shown side or verdict
ATTRIBUTE_FIELDS = ("task_category", "objectivity", "controversiality", "desired_attributes", "guideline")
ANNOTATOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_NOTE = 2000


class ReviewError(ValueError):
    """A request the session refuses; `status` is the HTTP status the server answers with."""

    def __init__(self, message: str, status: int = 400):
        self.status = status
        super().__init__(message)


def reply_order(annotator: str, pair_id: str) -> tuple[str, str]:
    """Which side is shown left and right: a fair coin per (annotator, pair), stable across restarts."""
    digest = hashlib.blake2b(f"{annotator}\0{pair_id}".encode(), digest_size=1).digest()
    return ("rejected", "chosen") if digest[0] & 1 else ("chosen", "rejected")


def _attributes(record: Record) -> dict[str, Any]:
    """The annotation protocol fields present on the pair, as strings or lists of strings."""
    attributes = record.get("attributes")
    if not isinstance(attributes, dict):
        return {}
    shown: dict[str, Any] = {}
    for name in ATTRIBUTE_FIELDS:
        value = attributes.get(name)
        if isinstance(value, list):
            shown[name] = [str(item) for item in value]
        elif value not in (None, ""):
            shown[name] = str(value)
    return shown


class ReviewSession:
    """Pairs in input order, one annotator, one label stream; thread-safe for the HTTP server."""

    def __init__(self, records: Iterable[Record], labels_path: str, annotator: str):
        if not ANNOTATOR.fullmatch(annotator):
            raise ValueError(f"annotator name {annotator!r}: use 1-64 letters, digits, '.', '_' or '-'")
        self.by = f"human:{annotator}"
        self.pairs: list[Record] = []
        self.index: dict[str, int] = {}
        self.not_pairs = 0
        for record in records:
            if not is_pair(record):
                self.not_pairs += 1
                continue
            pair_id = record.get("id")
            if not isinstance(pair_id, str) or not pair_id:
                raise ValueError(f"pair number {len(self.pairs) + 1} has no string id; labels are keyed by id")
            if pair_id in self.index:
                raise ValueError(f"id {pair_id!r} appears twice (pairs {self.index[pair_id] + 1} and "
                                 f"{len(self.pairs) + 1}); labels are keyed by id")
            self.index[pair_id] = len(self.pairs)
            self.pairs.append(record)
        self._lock = threading.Lock()
        self.writer = LabelWriter(labels_path)  # opened first: it cuts a torn tail before we read
        try:
            entries = list(read_label_entries(labels_path))
        except Exception:
            self.writer.close()
            raise
        mine = replay(entry for entry in entries if entry["by"] == self.by)
        self.unknown_ids = len({pair_id for pair_id, _ in mine if pair_id not in self.index})
        # This annotator's decisions in the order made (undo takes the last one).
        self.decisions: dict[str, Label] = {pair_id: entry for (pair_id, _), entry in mine.items()
                                            if pair_id in self.index}

    # -- reading ----------------------------------------------------------------------------------
    def current(self) -> int | None:
        """The first pair this annotator has not labeled, or None when all are done."""
        return next((i for i, pair in enumerate(self.pairs) if pair["id"] not in self.decisions), None)

    def progress(self) -> dict[str, Any]:
        """Done / total, and how often the decisions so far agree with the stream's current label
        (`chosen`) and with labels the pairs already carry (LLM judges, other annotators)."""
        with_current = [0, 0]
        with_existing = [0, 0]
        for pair_id, decision in self.decisions.items():
            prefers = decision["prefers"]
            if prefers in ("chosen", "rejected"):
                with_current[0] += prefers == "chosen"
                with_current[1] += 1
            if prefers in DECIDED:
                for label in self.pairs[self.index[pair_id]].get("labels") or []:
                    if label.get("by") != self.by and label.get("prefers") in DECIDED:
                        with_existing[0] += label["prefers"] == prefers
                        with_existing[1] += 1
        counts = {name: sum(1 for d in self.decisions.values() if d["prefers"] == name) for name in PREFERS}
        return {"done": len(self.decisions), "total": len(self.pairs), "counts": counts,
                "agree_current": {"agree": with_current[0], "of": with_current[1]},
                "agree_existing": {"agree": with_existing[0], "of": with_existing[1]}}

    def state(self) -> dict[str, Any]:
        """What the page shows: the current pair (sides in display order, never named) and progress."""
        with self._lock:
            position = self.current()
            pair_view = None
            if position is not None:
                pair = self.pairs[position]
                left, right = reply_order(self.by, pair["id"])
                pair_view = {
                    "id": pair["id"],
                    "position": position + 1,
                    "source": str(pair.get("source", "")),
                    "conversation": [{"role": m["role"], "content": m["content"]} for m in pair["conversation"]],
                    "replies": [pair[left], pair[right]],
                    "attributes": _attributes(pair),
                }
            return {"annotator": self.by, "pair": pair_view, "progress": self.progress(),
                    "can_undo": bool(self.decisions)}

    # -- writing ----------------------------------------------------------------------------------
    def decide(self, pair_id: str, choice: str, note: str = "", seconds: float | None = None) -> Label:
        """Record a decision on a pair this annotator has not labeled yet; durable on return."""
        if choice not in CHOICES:
            raise ReviewError(f"choice must be one of {', '.join(CHOICES)}")
        if len(note) > MAX_NOTE:
            raise ReviewError(f"note is longer than {MAX_NOTE} characters")
        with self._lock:
            if pair_id not in self.index:
                raise ReviewError(f"no pair with id {pair_id!r} in this review", 404)
            if pair_id in self.decisions:
                raise ReviewError(f"pair {pair_id!r} is already labeled; undo it first", 409)
            order = reply_order(self.by, pair_id)
            verdict = CHOICES[choice]
            meta: dict[str, Any] = {"order": list(order), "key": choice, "time": _now()}
            if note.strip():
                meta["note"] = note.strip()
            if seconds is not None:
                meta["seconds"] = round(seconds, 1)
            entry = {"id": pair_id, "by": self.by,
                     "prefers": order[verdict] if isinstance(verdict, int) else verdict, "meta": meta}
            self.writer.append(entry)
            self.decisions[pair_id] = entry
            return entry

    def undo(self) -> str:
        """Withdraw this annotator's most recent decision (also one from an earlier session)."""
        with self._lock:
            if not self.decisions:
                raise ReviewError("nothing to undo", 409)
            pair_id = next(reversed(self.decisions))
            self.writer.append({"id": pair_id, "by": self.by, "undo": True, "meta": {"time": _now()}})
            del self.decisions[pair_id]
            return pair_id

    def close(self) -> None:
        self.writer.close()



def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
