"""Normalizers, each on real rows rewritten into the public layout they handle."""

from __future__ import annotations

import pytest

from synpref.io import read_json_records
from synpref.records import RecordError, normalize, pair_problems, parse_hh_transcript


def _load(directory, name):
    return list(read_json_records(str(directory / f"{name}.jsonl.zst")))


def _as_hh_transcript(messages):
    speaker = {"user": "Human", "assistant": "Assistant"}
    return "".join(f"\n\n{speaker[m['role']]}: {m['content']}" for m in messages)


def _without_extra(record):
    return {k: record[k] for k in ("id", "conversation", "chosen", "rejected", "source")}


def test_canonical_rows_come_back_unchanged(examples):
    for record in _load(examples, "hh-harmless-base-test"):
        assert normalize(dict(record)) == record


def test_hh_transcripts_on_real_multi_turn_rows(examples):
    rows = [r for r in _load(examples, "hh-harmless-base-test") if r["chosen"].strip() and r["rejected"].strip()]
    assert any(len(r["conversation"]) > 2 for r in rows)
    for record in rows:
        history = record["conversation"]
        raw = {
            "chosen": _as_hh_transcript([*history, {"role": "assistant", "content": record["chosen"]}]),
            "rejected": _as_hh_transcript([*history, {"role": "assistant", "content": record["rejected"]}]),
        }
        expected = {**record, "conversation": [{**m, "content": m["content"].strip()} for m in history],
                    "chosen": record["chosen"].strip(), "rejected": record["rejected"].strip()}
        got = normalize({**raw, "id": record["id"], "source": record["source"]})
        assert _without_extra(got) == _without_extra(expected)


def test_hh_transcript_with_an_empty_final_reply_is_kept_with_a_reason(examples):
    record = next(r for r in _load(examples, "hh-harmless-base-test") if not r["chosen"].strip())
    raw = {"chosen": _as_hh_transcript(record["conversation"]) + "\n\nAssistant:",
           "rejected": _as_hh_transcript([*record["conversation"], {"role": "assistant", "content": record["rejected"]}])}
    got = normalize(raw)
    assert got["chosen"] == "" and pair_problems(got) == ["empty_chosen"]


def test_hh_histories_that_differ_are_rejected(examples):
    record = next(r for r in _load(examples, "hh-harmless-base-test") if len(r["conversation"]) >= 3)
    altered = [dict(m) for m in record["conversation"]]
    altered[0]["content"] += " (edited)"
    raw = {"chosen": _as_hh_transcript([*record["conversation"], {"role": "assistant", "content": "a"}]),
           "rejected": _as_hh_transcript([*altered, {"role": "assistant", "content": "b"}])}
    with pytest.raises(RecordError, match="different histories \\(first difference at turn 0\\)"):
        normalize(raw)


def test_hh_transcript_must_end_with_the_assistant():
    with pytest.raises(RecordError, match="last message must be the assistant"):
        normalize({"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hi\n\nAssistant: yo"})
    assert parse_hh_transcript("\n\nHuman: a\n\nAssistant: b", "chosen")[1] == {"role": "assistant", "content": "b"}


def test_prompt_chosen_rejected_strings(examples):
    for record in _load(examples, "llmbar"):
        raw = {"prompt": record["conversation"][0]["content"], "chosen": record["chosen"],
               "rejected": record["rejected"], "id": record["id"], "source": record["source"]}
        assert _without_extra(normalize(raw)) == _without_extra(record)


def test_rewardbench_rows_take_their_subset_as_source(examples):
    record = _load(examples, "evalbiasbench")[0]
    row = {"prompt": record["conversation"][0]["content"], "chosen": record["chosen"], "rejected": record["rejected"],
           "chosen_model": "human", "rejected_model": "human", "subset": "length-bias", "id": 7}
    got = normalize(row)
    assert got["source"] == "rewardbench/length-bias" and got["chosen_model"] == "human" and got["id"] == 7
    assert got["conversation"] == record["conversation"]


@pytest.mark.parametrize("with_prompt", [False, True])
def test_chosen_rejected_message_lists(examples, with_prompt):
    for record in _load(examples, "pandalm-test"):
        chosen = [{"role": "assistant", "content": record["chosen"]}]
        rejected = [{"role": "assistant", "content": record["rejected"]}]
        if with_prompt:  # TRL conversational: prompt list + reply lists
            raw = {"prompt": record["conversation"], "chosen": chosen, "rejected": rejected}
        else:  # Skywork Preference Dataset: two whole conversations
            raw = {"chosen": record["conversation"] + chosen, "rejected": record["conversation"] + rejected}
        got = normalize({**raw, "id": record["id"], "source": record["source"]})
        assert _without_extra(got) == _without_extra(record)


def test_unknown_roles_are_named():
    row = {"chosen": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "a"}],
           "rejected": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "b"}]}
    with pytest.raises(RecordError) as caught:
        normalize(row)
    assert caught.value.field == "chosen[0].role" and "'human'" in str(caught.value)


@pytest.mark.parametrize(("row", "field"), [
    ({"question": "q", "answer": "a"}, "conversation"),
    ({"prompt": "q", "chosen": "a"}, "rejected"),
    ({"chosen": "a", "rejected": "b"}, "prompt"),
    ({"prompt": ["q"], "chosen": "a", "rejected": "b"}, "prompt"),
    ({"conversation": [{"role": "user", "content": 3}], "chosen": "a", "rejected": "b"}, "conversation[0].content"),
    ({"conversation": [], "chosen": None, "rejected": "b"}, "chosen"),
])
def test_unknown_or_broken_layouts_name_the_field(row, field):
    with pytest.raises(RecordError) as caught:
        normalize(row)
    assert caught.value.field == field


def test_non_pairs_pass_through(examples, shared):
    questions = _load(examples, "arena-hard-questions")
    answers = _load(shared, "arena-hard-answers")[:50]
    for row in questions + answers:
        assert normalize(dict(row)) == row


def test_pair_problems_on_real_rows(examples):
    rows = _load(examples, "pandalm-test")
    problems = [p for r in rows for p in pair_problems(r)]
    expected_empty = sum(1 for r in rows if not r["chosen"].strip()) + sum(1 for r in rows if not r["rejected"].strip())
    assert expected_empty > 0
    assert problems.count("empty_chosen") + problems.count("empty_rejected") == expected_empty
    assert pair_problems({"conversation": [{"role": "user", "content": "q"}], "chosen": "x", "rejected": "x"}) == [
        "chosen_equals_rejected"]


def test_filter_records_routes_every_record_with_its_reason():
    """The keep/remove-with-reason helper filter-consistent builds on: conservation and reasons."""
    from synpref.stage import Verdict, filter_records

    records = [{"id": f"r{i}", "source": "s", "conversation": [{"role": "user", "content": "q"}],
                "chosen": "a" * i, "rejected": "b"} for i in range(1, 6)]
    kept, removed, counts = filter_records(
        records, lambda r: Verdict(True, "long") if len(r["chosen"]) > 2 else Verdict(False, "short", {"n": 1})
    )
    assert [r["id"] for r in kept] == ["r3", "r4", "r5"] and [r["id"] for r in removed] == ["r1", "r2"]
    assert all(r["reason"] == "short" and r["n"] == 1 for r in removed)
    assert counts["kept"] == 3 and counts["kept_long"] == 3 and counts["removed_short"] == 2


# ---- the record checks every command shares (issue 12) ------------------------------------------
def _pair(**fields):
    return {"id": "p1", "conversation": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b", **fields}


def _nested(levels):
    value = "bottom"
    for _ in range(levels):
        value = [value]
    return value


def test_nesting_limit_leaves_room_to_write_records_back(examples):
    """A row at the limit passes and its record (and a --diverted entry around it) can be written by
    orjson; one level more is an error naming the field."""
    import orjson

    from synpref.records import MAX_DEPTH

    at_limit = _pair(extra={"x": _nested(MAX_DEPTH - 2)})  # row, extra, x: MAX_DEPTH levels of containers
    record = normalize(at_limit)
    orjson.dumps({"row": {"extra": record}})
    with pytest.raises(RecordError) as caught:
        normalize(_pair(extra={"x": _nested(MAX_DEPTH - 1)}))
    assert caught.value.field == "extra" and str(MAX_DEPTH) in str(caught.value)
    for row in _load(examples, "hh-harmless-base-test"):  # real multi-turn rows pass untouched
        assert normalize(dict(row)) == row


def test_integers_beyond_64_bits_fail_where_they_are():
    import orjson

    line = b'{"id": %d, "conversation": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}'
    assert normalize(orjson.loads(line % (2**64 - 1)))["id"] == 2**64 - 1  # still an exact integer
    for wide in (2**64, -(2**63) - 1, 10**30):
        with pytest.raises(RecordError) as caught:
            normalize(orjson.loads(line % wide))
        assert caught.value.field == "id" and "64-bit" in str(caught.value)
    deep = orjson.loads(b'{"extra": {"n": 1, "ids": [3, %d]}, ' % 2**70 + (line % 1)[1:])
    with pytest.raises(RecordError) as caught:
        normalize(deep)
    assert caught.value.field == "extra.ids[1]"
    assert normalize(orjson.loads(b'{"extra": {"p": 0.5, "big": 1e18}, ' + (line % 1)[1:]))["extra"]["big"] == 1e18


@pytest.mark.parametrize(("fields", "field"), [
    ({"labels": [{"by": "human:a", "prefers": "chosen", "confidence": None, "meta": {"note": "x"}}]}, None),
    ({"labels": [{"by": "llm:j", "prefers": "tie", "confidence": 0.5}]}, None),
    ({"scores": {"rm": {"p": 0.2}, "gold": {"chosen": 1, "rejected": -0.5, "p": 0.8, "truncated": "turns"}}}, None),
    ({"labels": [{"by": "", "prefers": "chosen"}]}, "labels[0].by"),
    ({"labels": [{"by": "human:a", "prefers": "chosen", "meta": []}]}, "labels[0].meta"),
    ({"labels": [{"by": "human:a", "prefers": "chosen", "confidence": True}]}, "labels[0].confidence"),
    ({"scores": {"rm": {"p": True}}}, "scores.rm.p"),
    ({"scores": {"rm": {"p": 0.5, "rejected": None}}}, "scores.rm.rejected"),
    ({"id": True}, "id"),
    ({"id": None}, "id"),
])
def test_labels_scores_and_ids_follow_the_schema(fields, field):
    if field is None:
        assert normalize(_pair(**fields)) == _pair(**fields)
        return
    with pytest.raises(RecordError) as caught:
        normalize(_pair(**fields))
    assert caught.value.field == field


def test_one_reply_or_a_finished_conversation_is_no_pair():
    with pytest.raises(RecordError) as caught:
        normalize({"conversation": [{"role": "user", "content": "q"}], "rejected": "b"})
    assert caught.value.field == "chosen"
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(RecordError) as caught:
        normalize(_pair(conversation=turns))
    assert caught.value.field == "conversation[1].role"
    assert normalize({"conversation": turns}) == {"conversation": turns}  # not a pair: a finished chat
    multi = [*turns, {"role": "user", "content": "and now?"}]
    assert normalize(_pair(conversation=multi))["conversation"] == multi


def test_duplicate_reply_keys_are_found_and_lookalikes_are_not():
    """Only a real second key counts: not a score entry's reward, not the key's text inside a reply."""
    import orjson

    from synpref.records import Normalizer

    function = Normalizer().function
    scored = _pair(scores={"rm": {"chosen": 1.0, "rejected": 0.5, "p": 0.6}}, chosen='{"chosen": 1, "rejected": 2}')
    line = orjson.dumps(scored)
    assert function(orjson.loads(line), line) == scored
    for key in ("chosen", "rejected"):
        line = b'{"%s": "first", ' % key.encode() + orjson.dumps(_pair())[1:]
        with pytest.raises(RecordError) as caught:
            function(orjson.loads(line), line)
        assert caught.value.field == key
    nested = b'{"extra": {"x": {"rejected": 1, "rejected": 2}}, ' + orjson.dumps(_pair())[1:]
    with pytest.raises(RecordError) as caught:
        function(orjson.loads(nested), nested)
    assert caught.value.field == "extra.x.rejected"


@pytest.mark.parametrize("failing", ["kept.jsonl", "removed.jsonl"])
def test_a_stage_whose_output_fails_to_close_leaves_no_other_output_half_written(failing, tmp_path, monkeypatch):
    """When one output cannot be written out (a full disk), no output appears and no partial file
    is left: every output is on disk before any is put in place."""
    import os

    from synpref.io import RecordWriter
    from synpref.stage import Stage, StageOptions, Verdict

    source = tmp_path / "in.jsonl"
    source.write_text("".join(
        f'{{"id": "r{i}", "conversation": [{{"role": "user", "content": "q"}}], "chosen": "{"a" * i}", '
        f'"rejected": "b"}}\n' for i in range(1, 5)))
    options = StageOptions(inputs=[str(source)], output=str(tmp_path / "kept.jsonl"),
                           removed=str(tmp_path / "removed.jsonl"))
    real_flush = RecordWriter.flush

    def flush(writer):  # one output's last write fails as on a full disk
        if writer.path.endswith(failing):
            raise OSError(28, "No space left on device")
        real_flush(writer)

    monkeypatch.setattr(RecordWriter, "flush", flush)
    with pytest.raises(OSError, match="No space"), Stage("filter", options) as stage:
        for record, original in stage.records_with_bytes(progress=False):
            stage.route(record, Verdict(len(record["chosen"]) > 2, "length"), original)
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl"]  # no kept, no removed, no .partial left
