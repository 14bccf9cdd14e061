"""`synpref annotate verify`: objective pairs pre-verified one reply at a time (SPEC section 4).

Each reply is judged on its own (templates/verify.txt: the conversation, then the reply, then
"Is the reply correct?"), by the probabilities of the answers Yes / No / Unknown at the first
answer token: one read of each prompt, no generation, the two replies of a pair in one batch
(their common head, the conversation, computed once by the torch engine). The pair's label follows:

| chosen    | rejected  | label    |
|-----------|-----------|----------|
| correct   | incorrect | chosen   |
| incorrect | correct   | rejected |
| correct   | correct   | tie      |
| anything else         || unsure   |

with confidence = P(chosen's verdict) x P(rejected's verdict), the probability of the two verdicts
that gave the label (each renormalized over the three answers). The label is
`{"by": "llm:NAME:verify", ...}`, apart from the judge's `llm:NAME`, and never replaces a label.
By default only pairs whose `attributes.objectivity` is "objective" are verified; the others pass
through unchanged and are counted by why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from synpref.annotate.run import Caller, Failure
from synpref.annotate.templates import PromptTemplate, clip, conversation_text
from synpref.records import Record, is_pair

# answer token -> verdict; each is one token for SmolLM2 (and most tokenizers), so one read serves all
ANSWERS = {"Yes": "correct", "No": "incorrect", "Unknown": "unsure"}
VERDICTS = tuple(ANSWERS.values())


def pair_label(chosen: dict[str, float], rejected: dict[str, float]) -> tuple[str, float]:
    """(prefers, confidence) from the two replies' verdict probabilities (the table above)."""
    verdicts = (max(chosen, key=chosen.__getitem__), max(rejected, key=rejected.__getitem__))
    prefers = {("correct", "incorrect"): "chosen", ("incorrect", "correct"): "rejected",
               ("correct", "correct"): "tie"}.get(verdicts, "unsure")
    return prefers, chosen[verdicts[0]] * rejected[verdicts[1]]


def _probabilities(logprobs: list[float]) -> dict[str, float]:
    top = max(logprobs)
    weights = [math.exp(value - top) for value in logprobs]
    return {verdict: weight / sum(weights) for verdict, weight in zip(VERDICTS, weights, strict=True)}


class ReplyVerifier:
    """The verify task over windows of records (a `synpref.annotate.run.Task`)."""

    name = "verify"

    def __init__(self, judge: Caller, template: PromptTemplate, every_pair: bool = False, max_chars: int = 8000):
        self.judge, self.template = judge, template
        self.every_pair, self.max_chars = every_pair, max_chars
        self.by = f"llm:{judge.name}:verify"

    def skip_reason(self, record: Record) -> str | None:
        """Why a record is not verified, or None when it is."""
        if not is_pair(record):
            return "not_a_pair"
        if self.every_pair:
            return None
        attributes = record.get("attributes")
        objectivity = attributes.get("objectivity") if isinstance(attributes, dict) else None
        if objectivity is None:
            return "no_objectivity"
        return None if objectivity == "objective" else "not_objective"

    def annotate(self, records: list[Record]) -> list[Record]:
        chosen = [index for index, record in enumerate(records) if self.skip_reason(record) is None]
        prompts, clipped = [], {}
        for index in chosen:
            record = records[index]
            conversation, cut = conversation_text(record.get("conversation") or [], self.max_chars)
            clipped[index] = cut
            for side in ("chosen", "rejected"):
                reply, cut = clip(str(record[side]), self.max_chars)
                clipped[index] |= cut
                prompts.append([{"role": "user", "content": self.template.render(conversation=conversation,
                                                                                  reply=reply)}])
        results = self.judge.logprobs(prompts, list(ANSWERS))
        out = list(records)
        for position, index in enumerate(chosen):
            out[index] = {**records[index], "labels": [*(records[index].get("labels") or []),
                                                       self._label(results[2 * position : 2 * position + 2],
                                                                   clipped[index])]}
        return out

    def _label(self, results: list[Any], clipped: bool) -> dict[str, Any]:
        meta: dict[str, Any] = {"task": "verify"}
        if clipped:
            meta["clipped"] = True
        failures = [result.error for result in results if isinstance(result, Failure)]
        if failures:
            meta["failure"] = failures[0]
            return {"by": self.by, "prefers": "unsure", "confidence": None, "template": self.template.digest,
                    "meta": meta}
        chosen, rejected = (_probabilities(result) for result in results)
        prefers, confidence = pair_label(chosen, rejected)
        for side, probabilities in (("chosen", chosen), ("rejected", rejected)):
            meta[side] = {"verdict": max(probabilities, key=probabilities.__getitem__),
                          "p": {verdict: round(p, 6) for verdict, p in probabilities.items()}}
        return {"by": self.by, "prefers": prefers, "confidence": round(confidence, 6),
                "template": self.template.digest, "meta": meta}

    def tally(self, record: Record) -> Iterable[str]:
        reason = self.skip_reason(record)
        if reason is not None:
            return [f"skipped_{reason}"]
        label = next((label for label in reversed(record.get("labels") or [])
                      if isinstance(label, dict) and label.get("by") == self.by), {})
        meta = label.get("meta") or {}
        keys = ["verified", f"prefers_{label.get('prefers')}"]
        if "failure" in meta:
            keys.append("failed_engine")
        keys += [f"{side}_{meta[side]['verdict']}" for side in ("chosen", "rejected") if side in meta]
        return keys
