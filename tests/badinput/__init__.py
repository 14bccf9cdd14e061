"""A corpus of bad input: the malformed files and records users feed synpref, each written next to
valid records, so a test can check both the error (file, line, field) and that nothing valid is lost.

    kinds = write_corpus(tmp_path)          # one input path per kind (a file, or a folder)

Every kind is an error for every command that reads records (the whole file, one line of it, or one
record), and every valid record in it (real pairs, the shortest of examples/data/pandalm-test) must
still come out under --on-error skip. docs/bad-input.md lists the kinds; `KINDS` holds the same list
with one line each.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import zstandard

REAL_PAIRS = Path(__file__).resolve().parents[2] / "examples" / "data" / "pandalm-test.jsonl.zst"


@dataclass
class Kind:
    """One kind of bad input as written: the INPUT to give a command, what the error must name, and
    the ids of the valid records in it."""

    name: str
    description: str
    input: str  # a file, or a folder of files
    file: str  # the file the error names (inside a folder kind: the bad file)
    line: int | None  # the line (or .json array element) the error names; None: the file as a whole
    field: str | None  # the field the error names; None: there is none (not JSON, not an object, ...)
    valid: list[str] = field(default_factory=list)  # ids of the valid records around the bad spot

    def located(self) -> str:
        """What an error message must contain: `file:line` (or the file alone)."""
        return self.file if self.line is None else f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    write: Callable[[Writer], Kind]
    needs: str = ""  # a condition the kind needs ("non-root"); empty: none


class Writer:
    """Writes one kind's files under ROOT: valid records from POOL (real pairs) around the bad spot."""

    def __init__(self, root: Path, name: str, pool: Iterator[dict[str, Any]], description: str):
        self.root, self.name, self.pool, self.description = root, name, pool, description
        self.valid: list[str] = []

    def good(self) -> dict[str, Any]:
        """The next real pair as a valid record of this kind (with the scores filter-consistent and
        route read)."""
        record = next(self.pool)
        record["id"] = f"{self.name}-ok{len(self.valid)}"
        self.valid.append(record["id"])
        return record

    def base(self) -> dict[str, Any]:
        """A real pair to turn into the bad record."""
        record = next(self.pool)
        record["id"] = f"{self.name}-bad"
        return record

    def path(self, suffix: str = ".jsonl") -> Path:
        return self.root / f"{self.name}{suffix}"

    def kind(self, path: Path, line: int | None, field: str | None, bad_file: Path | None = None) -> Kind:
        return Kind(self.name, self.description, str(path), str(bad_file or path), line, field, list(self.valid))

    def lines(self, *parts: bytes | dict[str, Any], suffix: str = ".jsonl") -> Path:
        """A JSONL file of PARTS: records (serialized with the standard library, which writes what
        orjson cannot: deep nesting, wide integers) and raw lines."""
        path = self.path(suffix)
        path.write_bytes(b"".join((part if isinstance(part, bytes) else json.dumps(part).encode()) + b"\n"
                                  for part in parts))
        return path

    def bad_line(self, line: bytes, field: str | None = None) -> Kind:
        """The bad LINE first, a valid record after it."""
        return self.kind(self.lines(line, self.good()), 1, field)

    def bad_record(self, change: Callable[[dict[str, Any]], Any], field: str | None) -> Kind:
        """A real pair changed by CHANGE (which edits it, or returns the row to write), then a valid one."""
        record = self.base()
        row = change(record)
        return self.kind(self.lines(record if row is None else row, self.good()), 1, field)


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


def _turn(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "content": content}


def _compressed(w: Writer, compress: Callable[[bytes], bytes], suffix: str, cut: int) -> Kind:
    """Two compressed frames (gzip members), a valid record and a long one, the second cut CUT bytes
    before its end (as a killed writer leaves a stream)."""
    long = w.base()
    long["chosen"] *= 50  # long enough that the cut falls inside the line
    path = w.path(suffix)
    path.write_bytes(compress(json.dumps(w.good()).encode() + b"\n")
                     + compress(json.dumps(long).encode() + b"\n")[:-cut])
    return w.kind(path, 2, None)


def _zstd_then_garbage(w: Writer) -> Kind:
    path = w.path(".jsonl.zst")
    path.write_bytes(zstandard.ZstdCompressor().compress(json.dumps(w.good()).encode() + b"\n")
                     + b"this is not a zstd frame")
    return w.kind(path, 2, None)


def _json_array(w: Writer, elements: list[Any], line: int | None, field: str | None) -> Kind:
    path = w.path(".json")
    path.write_text(json.dumps(elements, indent=1))
    return w.kind(path, line, field)


def deep_json_array(w: Writer, levels: int) -> Kind:
    """A .json array (one element a line) of a valid record, one whose extra.x is LEVELS lists deep
    (written by hand: the standard library's writer stops at about 1000), and another valid one. Up
    to about 1000 levels the error names `extra`; past orjson's read limit of 1024 the element is
    malformed JSON, and the records beside it must still be read."""
    path = w.path(".json")
    first, bad = w.good(), json.dumps({**w.base(), "extra": {"x": "DEEP"}})
    bad = bad.replace('"DEEP"', "[" * levels + '"bottom"' + "]" * levels)
    path.write_text(f"[\n{json.dumps(first)},\n{bad},\n{json.dumps(w.good())}\n]\n")
    return w.kind(path, 2, "extra" if levels <= 1000 else None)


def _truncated_json_array(w: Writer) -> Kind:
    path = w.path(".json")
    text = json.dumps([w.base(), w.base()], indent=1)
    path.write_text(text[: len(text) * 2 // 3])
    return w.kind(path, text[: len(text) * 2 // 3].count("\n") + 1, None)


def _truncated_parquet(w: Writer) -> Kind:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = w.path(".parquet")
    records = [w.base(), w.base()]
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in ("id", "conversation", "chosen", "rejected")}
                                         for r in records]), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return w.kind(path, None, None)


def _folder(w: Writer, make_bad: Callable[[Path], None]) -> Kind:
    """A folder of shards: a valid one and a bad entry named like a shard."""
    folder = w.root / w.name
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(json.dumps(w.good()).encode() + b"\n")
    bad = folder / "b.jsonl"
    make_bad(bad)
    return w.kind(folder, None, None, bad)


def _socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))  # left bound: the socket file stays


def _unreadable(path: Path) -> None:
    path.write_text("{}\n")
    path.chmod(0)


def _drop(value: dict[str, Any], key: str) -> None:
    del value[key]


def _ends_with_assistant(record: dict[str, Any]) -> None:
    record["conversation"].append(_turn("assistant", record["chosen"]))


def _duplicated(record: dict[str, Any], key: str) -> bytes:
    """The record with KEY written twice, first with another value (which a JSON reader drops)."""
    return ("{" + json.dumps({key: "another reply"})[1:-1] + ", " + json.dumps(record)[1:]).encode()


def _hh(record: dict[str, Any], chosen: str, rejected: str) -> dict[str, Any]:
    return {"chosen": chosen, "rejected": rejected, "id": record["id"]}


def _transcript(record: dict[str, Any], reply: str, prompt: str | None = None) -> str:
    return f"\n\nHuman: {prompt or record['conversation'][0]['content']}\n\nAssistant: {reply}"


def _prompt(record: dict[str, Any]) -> str:
    return record["conversation"][0]["content"]


SPECS: tuple[Spec, ...] = (
    # -- the stream: bytes that are not JSON Lines ------------------------------------------------
    Spec("malformed-json", "a line cut in the middle of an object",
         lambda w: w.bad_line(b'{"id": "x", "conversation": [{"role": "user", "con')),
    Spec("trailing-garbage", "a valid object followed by more text on the same line",
         lambda w: w.bad_line(json.dumps(w.base()).encode() + b" trailing words")),
    Spec("not-an-object-number", "a line that is a bare number", lambda w: w.bad_line(b"42")),
    Spec("not-an-object-string", "a line that is a bare string", lambda w: w.bad_line(b'"a pair"')),
    Spec("null-line", "a line that is null", lambda w: w.bad_line(b"null")),
    Spec("invalid-utf8", "bytes that are not UTF-8 inside a string",
         lambda w: w.bad_line(json.dumps(w.base()).encode().replace(b'"chosen": "', b'"chosen": "\xff\xfe', 1))),
    Spec("lone-surrogate", "an escaped lone UTF-16 surrogate (\\ud800), not a character",
         lambda w: w.bad_line(json.dumps(w.base()).encode().replace(b'"chosen": "', b'"chosen": "\\ud800', 1))),
    Spec("nan-literal", "NaN, which JSON does not have",
         lambda w: w.bad_line(json.dumps(w.base())[:-1].encode() + b', "margin": NaN}')),
    Spec("binary-garbage", "a file of bytes that is no format at all (no zstd, gzip or parquet magic)",
         lambda w: w.kind(_write(w.path(".jsonl"), bytes(range(128, 256)) * 8), 1, None)),
    Spec("jsonl-first-line-array", "JSON Lines whose first line is an array ([1, 2]): not a .json array file",
         lambda w: w.kind(w.lines(b"[1, 2]", w.good(), w.good()), 1, None)),
    Spec("jsonl-first-line-broken-array", "JSON Lines whose first line is a broken array ([1, 2)",
         lambda w: w.kind(w.lines(b"[1, 2", w.good(), w.good()), 1, None)),
    Spec("array-line-mid-file", "a line in the middle of a JSON Lines file that is an array",
         lambda w: w.kind(w.lines(w.good(), b'[{"id": "in-a-list"}]', w.good()), 2, None)),
    Spec("json-array-truncated", "a .json array file cut short (the error is at the line where it ends)",
         _truncated_json_array),
    Spec("json-array-bad-element", "a .json array with an element that is not an object",
         lambda w: _json_array(w, [w.good(), 5, w.good()], 2, None)),
    Spec("json-array-element-too-deep", "a .json array element nested 300 deep (its raw row cannot be "
         "written back either)",
         lambda w: _json_array(w, [{**w.base(), "extra": {"x": _deep(300)}}, w.good()], 1, "extra")),
    Spec("json-array-element-past-read-limit", "a .json array element nested 1100 deep, past orjson's read "
         "limit of 1024 (once the whole file was one error)", lambda w: deep_json_array(w, 1100)),
    Spec("truncated-zstd", "a zstd stream whose last frame is cut short",
         lambda w: _compressed(w, zstandard.ZstdCompressor().compress, ".jsonl.zst", 20)),
    Spec("truncated-gzip", "a gzip stream whose last member is cut short",
         lambda w: _compressed(w, gzip.compress, ".jsonl.gz", 20)),
    Spec("zstd-then-garbage", "a complete zstd frame followed by bytes that are no frame", _zstd_then_garbage),
    Spec("truncated-parquet", "a parquet file cut in half (no footer)", _truncated_parquet),
    Spec("dangling-symlink-in-folder", "a folder of shards with a link to a file that is gone",
         lambda w: _folder(w, lambda bad: bad.symlink_to(w.root / "gone.jsonl"))),
    Spec("socket-in-folder", "a folder of shards with a socket named like a shard (cannot be opened)",
         lambda w: _folder(w, _socket)),
    Spec("unreadable-file-in-folder", "a folder of shards with a file the user may not read",
         lambda w: _folder(w, _unreadable), needs="non-root"),
    # -- the record: JSON objects that are no record ----------------------------------------------
    Spec("unknown-layout", "an object of no known layout", lambda w: w.bad_line(b'{"text": "hello"}', "conversation")),
    Spec("conversation-not-a-list", "conversation is a string",
         lambda w: w.bad_record(lambda r: r.update(conversation=_prompt(r)), "conversation")),
    Spec("message-not-an-object", "a conversation turn that is a string",
         lambda w: w.bad_record(lambda r: r.update(conversation=[_prompt(r)]), "conversation[0]")),
    Spec("unknown-role", "a turn with role 'bot'",
         lambda w: w.bad_record(lambda r: r["conversation"][0].update(role="bot"), "conversation[0].role")),
    Spec("content-not-a-string", "a turn whose content is a number",
         lambda w: w.bad_record(lambda r: r["conversation"][0].update(content=5), "conversation[0].content")),
    Spec("missing-content", "a turn without content",
         lambda w: w.bad_record(lambda r: _drop(r["conversation"][0], "content"), "conversation[0].content")),
    Spec("chosen-not-a-string", "chosen is a number", lambda w: w.bad_record(lambda r: r.update(chosen=5), "chosen")),
    Spec("rejected-null", "rejected is null", lambda w: w.bad_record(lambda r: r.update(rejected=None), "rejected")),
    Spec("chosen-without-rejected", "a record with chosen and no rejected",
         lambda w: w.bad_record(lambda r: _drop(r, "rejected"), "rejected")),
    Spec("rejected-without-chosen", "a record with rejected and no chosen",
         lambda w: w.bad_record(lambda r: _drop(r, "chosen"), "chosen")),
    Spec("conversation-ends-with-assistant", "a history that already ends with the assistant's reply",
         lambda w: w.bad_record(_ends_with_assistant, "conversation[1].role")),
    Spec("nested-300-deep", "an extra field nested 300 lists deep (orjson writes at most 254 levels)",
         lambda w: w.bad_record(lambda r: r.update(extra={"x": _deep(300)}), "extra")),
    Spec("nested-deep-in-a-turn", "a conversation turn with an extra key nested 300 deep",
         lambda w: w.bad_record(lambda r: r["conversation"][0].update(meta=_deep(300)), "conversation")),
    Spec("duplicate-chosen-key", "chosen written twice in one object (a JSON reader keeps the last)",
         lambda w: w.bad_record(lambda r: _duplicated(r, "chosen"), "chosen")),
    Spec("duplicate-rejected-key", "rejected written twice in one object",
         lambda w: w.bad_record(lambda r: _duplicated(r, "rejected"), "rejected")),
    Spec("id-beyond-64-bits", "an integer id of 30 digits (orjson reads it as a float)",
         lambda w: w.bad_record(lambda r: r.update(id=123456789012345678901234567890), "id")),
    Spec("id-a-list", "an id that is a list", lambda w: w.bad_record(lambda r: r.update(id=[1]), "id")),
    Spec("source-not-a-string", "a source that is a number", lambda w: w.bad_record(lambda r: r.update(source=5), "source")),
    Spec("flipped-not-a-boolean", "flipped is the string 'yes'",
         lambda w: w.bad_record(lambda r: r.update(flipped="yes"), "flipped")),
    Spec("attributes-not-an-object", "attributes is a string",
         lambda w: w.bad_record(lambda r: r.update(attributes="coding"), "attributes")),
    Spec("labels-not-a-list", "labels is one label object instead of a list",
         lambda w: w.bad_record(lambda r: r.update(labels={"by": "human:a", "prefers": "chosen"}), "labels")),
    Spec("label-not-an-object", "labels is [1]", lambda w: w.bad_record(lambda r: r.update(labels=[1]), "labels[0]")),
    Spec("label-bad-prefers", "a label preferring 'left'",
         lambda w: w.bad_record(lambda r: r.update(labels=[{"by": "human:a", "prefers": "left"}]), "labels[0].prefers")),
    Spec("label-without-by", "a label that does not say who gave it",
         lambda w: w.bad_record(lambda r: r.update(labels=[{"prefers": "chosen"}]), "labels[0].by")),
    Spec("label-confidence-out-of-range", "a label with confidence 1.5",
         lambda w: w.bad_record(lambda r: r.update(labels=[{"by": "llm:j", "prefers": "chosen", "confidence": 1.5}]),
                                "labels[0].confidence")),
    Spec("scores-not-an-object", "scores is [1, 2]", lambda w: w.bad_record(lambda r: r.update(scores=[1, 2]), "scores")),
    Spec("score-without-p", 'a score entry {"chosen": 1} without p',
         lambda w: w.bad_record(lambda r: r.update(scores={"rm": {"chosen": 1}}), "scores.rm.p")),
    Spec("score-entry-not-an-object", "a score entry that is a bare number",
         lambda w: w.bad_record(lambda r: r.update(scores={"rm": 0.9}), "scores.rm")),
    Spec("score-p-out-of-range", "a score entry with p 1.5",
         lambda w: w.bad_record(lambda r: r["scores"]["rm"].update(p=1.5), "scores.rm.p")),
    Spec("score-reward-not-a-number", "a score entry whose chosen reward is a string",
         lambda w: w.bad_record(lambda r: r["scores"]["gold"].update(chosen="high"), "scores.gold.chosen")),
    # -- public layouts: rows that look like a published set but are broken --------------------------
    Spec("hh-plain-strings", "chosen/rejected strings with no prompt that are no HH-RLHF transcript",
         lambda w: w.bad_record(lambda r: _hh(r, r["chosen"], r["rejected"]), "prompt")),
    Spec("hh-histories-differ", "HH-RLHF transcripts whose earlier turns differ",
         lambda w: w.bad_record(lambda r: _hh(r, _transcript(r, r["chosen"]), _transcript(r, r["rejected"], "other")),
                                "rejected")),
    Spec("prompt-not-a-string", "prompt/chosen/rejected with a numeric prompt",
         lambda w: w.bad_record(lambda r: {"prompt": 5, "chosen": r["chosen"], "rejected": r["rejected"]}, "prompt")),
    Spec("message-lists-no-final-reply", "chosen/rejected message lists that end on the user's turn",
         lambda w: w.bad_record(lambda r: {"chosen": [_turn("user", _prompt(r))],
                                           "rejected": [_turn("user", _prompt(r))]}, "chosen")),
    Spec("message-lists-histories-differ", "chosen/rejected message lists with different first turns",
         lambda w: w.bad_record(lambda r: {"chosen": [_turn("user", _prompt(r)), _turn("assistant", r["chosen"])],
                                           "rejected": [_turn("user", "other"), _turn("assistant", r["rejected"])]},
                                "rejected")),
    Spec("ambiguous-layout", "a canonical record that also holds Chatbot Arena's fields",
         lambda w: w.bad_record(lambda r: r.update(conversation_a=r["conversation"], conversation_b=r["conversation"],
                                                   winner="model_a"), None)),
    Spec("shp-bad-labels", "a Stanford SHP row whose labels is 2",
         lambda w: w.bad_record(lambda r: {"history": _prompt(r), "human_ref_A": r["chosen"],
                                           "human_ref_B": r["rejected"], "labels": 2}, "labels")),
    Spec("pku-bad-response-id", "a PKU-SafeRLHF row whose better_response_id is 2",
         lambda w: w.bad_record(lambda r: {"prompt": _prompt(r), "response_0": r["chosen"], "response_1": r["rejected"],
                                           "better_response_id": 2}, "better_response_id")),
    Spec("arena-bad-winner", "a Chatbot Arena row whose winner is model_c",
         lambda w: w.bad_record(lambda r: {"conversation_a": [*r["conversation"], _turn("assistant", r["chosen"])],
                                           "conversation_b": [*r["conversation"], _turn("assistant", r["rejected"])],
                                           "winner": "model_c"}, "winner")),
    Spec("arena-image-content", "a Chatbot Arena turn whose content is an image part",
         lambda w: w.bad_record(lambda r: {"conversation_a": [_turn("user", [{"type": "image", "url": "x"}]),
                                                              _turn("assistant", r["chosen"])],
                                           "conversation_b": [_turn("user", _prompt(r)),
                                                              _turn("assistant", r["rejected"])],
                                           "winner": "model_a"}, "conversation_a[0].content[0]")),
    Spec("helpsteer-preference-out-of-range", "a HelpSteer3 row whose overall_preference is 7",
         lambda w: w.bad_record(lambda r: {"context": _prompt(r), "response1": r["chosen"], "response2": r["rejected"],
                                           "overall_preference": 7}, "overall_preference")),
    Spec("nectar-bad-rank", "a Nectar answer whose rank is a word",
         lambda w: w.bad_record(lambda r: {"prompt": _transcript(r, ""), "answers": [
             {"answer": r["chosen"], "model": "a", "rank": "first"}, {"answer": r["rejected"], "model": "b", "rank": 2}]},
             "answers[0].rank")),
    Spec("ultrafeedback-completion-not-an-object", "an UltraFeedback completion that is a string",
         lambda w: w.bad_record(lambda r: {"instruction": _prompt(r), "completions": [r["chosen"]]}, "completions[0]")),
    Spec("openai-output-wrong-role", "an OpenAI preference row whose preferred output is a user message",
         lambda w: w.bad_record(lambda r: {"input": {"messages": r["conversation"]},
                                           "preferred_output": [_turn("user", r["chosen"])],
                                           "non_preferred_output": [_turn("assistant", r["rejected"])]},
                                "preferred_output[0].role")),
    Spec("rm-bench-two-replies", "an RM-Bench row with 2 chosen replies instead of 3",
         lambda w: w.bad_record(lambda r: {"prompt": _prompt(r), "chosen": [r["chosen"]] * 2,
                                           "rejected": [r["rejected"]] * 3}, "chosen")),
    Spec("rewardbench2-num-correct-mismatch", "a RewardBench 2 row whose num_correct does not match chosen",
         lambda w: w.bad_record(lambda r: {"prompt": _prompt(r), "chosen": [r["chosen"]], "rejected": [r["rejected"]],
                                           "num_correct": 2}, "num_correct")),
)
KINDS: dict[str, str] = {spec.name: spec.description for spec in SPECS}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def available(spec: Spec) -> bool:
    """Whether this machine can make the kind (root reads every file, so no file is unreadable)."""
    return spec.needs != "non-root" or os.geteuid() != 0


def real_pairs() -> Iterator[dict[str, Any]]:
    """The shortest real pairs (cheap to score), each with seeded gold and current-RM scores."""
    from synpref.io import read_json_records

    pairs = [r for r in read_json_records(str(REAL_PAIRS))
             if r["chosen"].strip() and r["rejected"].strip() and r["chosen"] != r["rejected"]]
    pairs.sort(key=lambda r: len(orjson.dumps([r["conversation"], r["chosen"], r["rejected"]])))
    rng = random.Random(12)
    for record in pairs:
        scores = {}
        for name in ("gold", "rm"):
            chosen, rejected = rng.uniform(-2, 2), rng.uniform(-2, 2)
            scores[name] = {"chosen": chosen, "rejected": rejected, "p": 1 / (1 + 2.718281828 ** (rejected - chosen))}
        yield {key: record[key] for key in ("conversation", "chosen", "rejected", "source")} | {"scores": scores}


def write_corpus(root: Path) -> list[Kind]:
    """Write every kind this machine can make under ROOT; returns them in `SPECS` order."""
    root.mkdir(parents=True, exist_ok=True)
    pool = real_pairs()
    return [spec.write(Writer(root, spec.name, pool, spec.description)) for spec in SPECS if available(spec)]
