"""Public layouts read as published (issue 17): each recognized by its own fields, normalized with the
source's ids and labels kept, broken rows named by field, ranked lists expanded with nothing lost, and
every layout through cat -> dedupe -> score.

The expected pairs come from an oracle written here from each data card's label semantics, not from
the normalizers."""

from __future__ import annotations

import copy
import itertools
import json
import re
from pathlib import Path

import orjson
import pytest

from synpref.cli import cli
from synpref.io import read_json_records
from synpref.records import (
    LAYOUTS,
    Expansion,
    LayoutOptions,
    RecordError,
    check_messages,
    detect,
    expand,
    normalize,
    ranked_pairs,
)
from synpref.stage import POSITION_STRIDE, Stage
from synpref.stats import collect_stats, format_table

FIXTURES = Path(__file__).parent / "fixtures" / "layouts"
PUBLIC = ["shp", "pku-saferlhf", "chatbot-arena", "helpsteer", "nectar", "ultrafeedback", "openai-preference",
          "rm-bench", "rewardbench-2"]
EARLIER = ["hh-rlhf", "prompt-chosen-rejected", "message-lists"]
ALL = PUBLIC + EARLIER


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def summary(stderr: str, name: str = "cat") -> dict[str, int]:
    line = next(line for line in stderr.splitlines() if line.startswith(f"synpref {name}:"))
    return {key: int(value) for key, value in re.findall(r"(\w+) (\d+)", line.split(":", 1)[1])}


# -- the oracle: what each data card says the preferred reply is ------------------------------------
def _text(content):
    return content if isinstance(content, str) else "".join(part["text"] for part in content)


def _hh_last(transcript: str) -> str:
    return transcript.rsplit("\n\nAssistant:", 1)[1].strip()


def _best_worst(replies, scores):
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worst = min(range(len(scores)), key=lambda i: (scores[i], i))
    return [] if scores[best] == scores[worst] else [(replies[best], replies[worst])]


def expected_pairs(name: str, row: dict, axis: str = "better", ties: str = "keep") -> list[tuple[str, str]]:
    if name == "shp":
        a, b = row["human_ref_A"], row["human_ref_B"]
        return [(a, b) if row["labels"] == 1 else (b, a)]
    if name == "pku-saferlhf":
        winner = row[f"{axis}_response_id"]
        return [(row[f"response_{winner}"], row[f"response_{1 - winner}"])]
    if name == "chatbot-arena":
        a, b = row["conversation_a"], row["conversation_b"]
        if [(m["role"], _text(m["content"])) for m in a[:-1]] != [(m["role"], _text(m["content"])) for m in b[:-1]]:
            return []
        if row["winner"].startswith("tie") and ties == "drop":
            return []
        first, second = _text(a[-1]["content"]), _text(b[-1]["content"])
        return [(second, first)] if row["winner"] == "model_b" else [(first, second)]
    if name == "helpsteer":
        first, second = row.get("response1", row.get("response_1")), row.get("response2", row.get("response_2"))
        score = row.get("overall_preference", row.get("preference_strength"))
        if score == 0 and ties == "drop":
            return []
        return [(second, first)] if score > 0 else [(first, second)]
    if name == "nectar":
        return _best_worst([a["answer"] for a in row["answers"]], [-a["rank"] for a in row["answers"]])
    if name == "ultrafeedback":
        return _best_worst([c["response"] for c in row["completions"]],
                           [c["fine-grained_score"] for c in row["completions"]])
    if name == "openai-preference":
        return [(row["preferred_output"][0]["content"], row["non_preferred_output"][0]["content"])]
    if name in ("rm-bench", "rewardbench-2"):
        return list(itertools.product(row["chosen"], row["rejected"]))
    if name == "hh-rlhf":
        return [(_hh_last(row["chosen"]), _hh_last(row["rejected"]))]
    if name == "prompt-chosen-rejected":
        return [(row["chosen"], row["rejected"])]
    if name == "message-lists":
        return [(row["chosen"][-1]["content"], row["rejected"][-1]["content"])]
    raise AssertionError(name)


# who the data card says labeled the pairs (None: the layout carries no label)
LABELED_BY = {"shp": "human:shp-upvotes", "pku-saferlhf": "human:pku-saferlhf", "chatbot-arena": "human:arena",
              "helpsteer": ("human:helpsteer3", "human:helpsteer2"), "nectar": "llm:gpt-4",
              "ultrafeedback": "llm:gpt-4", "openai-preference": "dataset:openai-preference",
              "rm-bench": "benchmark:rm-bench", "rewardbench-2": "benchmark:rewardbench-2",
              "hh-rlhf": None, "prompt-chosen-rejected": None, "message-lists": None}
# the texts each layout moves into conversation / chosen / rejected; every other field must survive
TEXT_FIELDS = {"shp": {"history", "human_ref_A", "human_ref_B"}, "pku-saferlhf": {"prompt", "response_0", "response_1"},
               "chatbot-arena": {"conversation_a", "conversation_b"},
               "helpsteer": {"context", "prompt", "response1", "response2", "response_1", "response_2"},
               "nectar": {"prompt", "answers"}, "ultrafeedback": {"instruction", "completions"},
               "openai-preference": {"input", "preferred_output", "non_preferred_output"},
               "rm-bench": {"prompt", "chosen", "rejected"}, "rewardbench-2": {"prompt", "chosen", "rejected"},
               "hh-rlhf": {"chosen", "rejected"}, "prompt-chosen-rejected": {"prompt", "chosen", "rejected"},
               "message-lists": {"prompt", "chosen", "rejected"}}
# source ids that must reach the record's id
ID_OF = {"shp": lambda r: f"shp/{r['post_id']}/{r['c_root_id_A']}/{r['c_root_id_B']}",
         "chatbot-arena": lambda r: f"arena/{r['question_id']}", "rm-bench": lambda r: f"rm-bench/{r['id']}:",
         "rewardbench-2": lambda r: f"rewardbench-2/{r['id']}:", "prompt-chosen-rejected": lambda r: r["id"]}


@pytest.mark.parametrize("name", ALL)
def test_every_fixture_row_is_recognized_as_its_layout(name):
    for row in rows(name):
        assert detect(row).name == name


@pytest.mark.parametrize("name", ALL)
def test_normalized_pairs_ids_and_labels(name):
    for row in rows(name):
        records = expand(copy.deepcopy(row))
        assert [(r["chosen"], r["rejected"]) for r in records] == expected_pairs(name, row)
        for record in records:
            check_messages(record["conversation"], "conversation")
            assert record["conversation"] and record["conversation"][-1]["role"] == "user"
            assert record["extra"]["layout"] == name
            holder = record["extra"] if name in PUBLIC else record
            for key, value in row.items():  # ids and label fields kept, untouched
                if key not in TEXT_FIELDS[name] and key != "extra":
                    assert holder[key] == value, (name, key)
            by = LABELED_BY[name]
            if by is None:
                assert "labels" not in record
            else:
                assert len(record["labels"]) == 1
                assert record["labels"][0]["by"] in ((by,) if isinstance(by, str) else by)
                assert record["labels"][0]["prefers"] in ("chosen", "tie")
            if name in ID_OF:
                assert str(record["id"]).startswith(str(ID_OF[name](row)))
            if name in PUBLIC and name != "openai-preference":
                assert record["source"].split("/")[0] in (name, "arena", "chatbot-arena", "helpsteer2", "helpsteer3")


def test_conversations_keep_every_turn():
    helpsteer = rows("helpsteer")
    assert expand(helpsteer[1])[0]["conversation"] == helpsteer[1]["context"]
    assert [m["role"] for m in expand(helpsteer[3])[0]["conversation"]] == ["user", "assistant", "user"]
    assert expand(helpsteer[3])[0]["conversation"][2]["content"] == "Write one about autumn."
    nectar = expand(rows("nectar")[1])[0]["conversation"]
    assert [m["content"] for m in nectar] == ["Recommend a board game for two players.",
                                              "Do you like strategy or luck?", "Strategy."]
    openai = rows("openai-preference")[1]
    assert expand(openai)[0]["conversation"] == openai["input"]["messages"]
    arena_parts = expand(rows("chatbot-arena")[4])[0]
    assert arena_parts["conversation"] == [{"role": "user", "content": "Convert 5 km to miles."}]
    assert expand(rows("openai-preference")[0])[0]["extra"]["input"] == {"tools": [], "parallel_tool_calls": True}


def test_ties_and_margins_are_recorded():
    arena_tie = expand(rows("chatbot-arena")[2])[0]
    assert arena_tie["labels"][0] == {"by": "human:arena", "prefers": "tie", "meta": {"winner": "tie (bothbad)"}}
    helpsteer_tie = expand(rows("helpsteer")[2])[0]
    assert helpsteer_tie["labels"][0]["prefers"] == "tie" and helpsteer_tie["extra"]["margin"] == 0
    assert [expand(row)[0]["extra"]["margin"] for row in rows("helpsteer")] == [3, 1, 0, 2]
    nectar = expand(rows("nectar")[0], LayoutOptions(pairs="all"))
    assert [(r["extra"]["chosen_rank"], r["extra"]["rejected_rank"], r["extra"]["margin"]) for r in nectar][:3] == [
        (1, 2, 1), (1, 3, 2), (1, 4, 3)]
    ultra = expand(rows("ultrafeedback")[0])[0]["extra"]
    assert (ultra["chosen_rating"], ultra["rejected_rating"], ultra["margin"]) == (5.0, 1.75, 3.25)
    cells = {(r["extra"]["chosen_style"], r["extra"]["rejected_style"]): r["extra"]["rm_bench_cell"]
             for r in expand(rows("rm-bench")[0])}
    assert cells[("concise", "markdown")] == "hard" and cells[("markdown", "concise")] == "easy"
    assert cells[("detailed", "detailed")] == "normal" and len(cells) == 9


def test_ultrafeedback_without_fine_grained_score_uses_the_aspect_ratings():
    row = copy.deepcopy(rows("ultrafeedback")[0])
    for completion in row["completions"]:
        completion["fine-grained_score"] = None
    row["completions"][0]["annotations"]["honesty"]["Rating"] = "N/A"  # not a rating: left out of the mean
    extra = expand(row)[0]["extra"]
    assert (extra["chosen_index"], extra["chosen_rating"]) == (0, 5.0)
    assert (extra["rejected_index"], extra["rejected_rating"]) == (2, 1.75)


def test_pku_axis_picks_the_preference():
    for row in rows("pku-saferlhf"):
        for axis in ("better", "safer"):
            record = normalize(row, LayoutOptions(axis=axis))
            assert (record["chosen"], record["rejected"]) == expected_pairs("pku-saferlhf", row, axis=axis)[0]
            assert record["source"] == f"pku-saferlhf/{axis}" and record["extra"]["axis"] == axis
    assert any(r["better_response_id"] != r["safer_response_id"] for r in rows("pku-saferlhf"))


def _mutate(**changes):
    def apply(row):
        for path, value in changes.items():
            target, *keys = path.split("__")
            holder = row
            for key in [target, *keys][:-1]:
                holder = holder[int(key)] if isinstance(holder, list) else holder[key]
            last = [target, *keys][-1]
            if value is DELETE:
                del holder[last]
            else:
                holder[int(last) if isinstance(holder, list) else last] = value
        return row
    return apply


DELETE = object()
BROKEN = {
    "shp": [(_mutate(labels=2), "labels"), (_mutate(human_ref_A=None), "human_ref_A"),
            (_mutate(history=["q"]), "history"), (_mutate(human_ref_B=DELETE), "human_ref_B")],
    "pku-saferlhf": [(_mutate(better_response_id=None), "better_response_id"), (_mutate(response_1=3), "response_1"),
                     (_mutate(response_0=DELETE), "response_0")],
    "chatbot-arena": [(_mutate(winner="model_c"), "winner"),
                      (_mutate(conversation_b=[{"role": "user", "content": "x"}]), "conversation_b"),
                      (_mutate(conversation_a__0__content=[{"type": "image_url"}]), "conversation_a[0].content[0]"),
                      (_mutate(conversation_a__1__role="bot"), "conversation_a[1].role"),
                      (_mutate(conversation_a="not json"), "conversation_a")],
    "helpsteer": [(_mutate(overall_preference=5), "overall_preference"), (_mutate(response2=None), "response2"),
                  (_mutate(context__0__role="human"), "context[0].role")],
    "nectar": [(_mutate(answers__1__rank="2"), "answers[1].rank"), (_mutate(answers__0__answer=None), "answers[0].answer"),
               (_mutate(prompt="Hello"), "prompt"), (_mutate(answers={}), "answers")],
    "ultrafeedback": [(_mutate(completions__2__response=None), "completions[2].response"),
                      (_mutate(**{"completions__0__fine-grained_score": DELETE, "completions__0__annotations": DELETE}),
                       "completions[0].fine-grained_score"),
                      (_mutate(instruction=None), "instruction")],
    "openai-preference": [(_mutate(preferred_output=[]), "preferred_output"),
                          (_mutate(non_preferred_output__0__role="user"), "non_preferred_output[0].role"),
                          (_mutate(input__messages__0__role="bot"), "input.messages[0].role"),
                          (_mutate(input="hello"), "input")],
    "rm-bench": [(_mutate(chosen=["a", "b"]), "chosen"), (_mutate(rejected__1=None), "rejected[1]"),
                 (_mutate(prompt=None), "prompt")],
    "rewardbench-2": [(_mutate(num_correct=3), "num_correct"), (_mutate(rejected=[]), "rejected"),
                      (_mutate(chosen__0=1), "chosen[0]")],
    "hh-rlhf": [(_mutate(rejected="\n\nHuman: something else\n\nAssistant: b"), "rejected"),
                (_mutate(chosen="not a transcript"), "prompt")],
    "prompt-chosen-rejected": [(_mutate(prompt=["q"]), "prompt"), (_mutate(chosen=None), "chosen")],
    "message-lists": [(_mutate(chosen__0__role="human"), "chosen[0].role"),
                      (_mutate(chosen=[{"role": "user", "content": "x"}]), "chosen")],
}


@pytest.mark.parametrize(("name", "index"), [(name, i) for name in ALL for i in range(len(BROKEN[name]))])
def test_broken_rows_name_the_field(name, index):
    mutate, field = BROKEN[name][index]
    row = mutate(copy.deepcopy(rows(name)[0]))
    with pytest.raises(RecordError) as caught:
        expand(row)
    assert caught.value.field == field, str(caught.value)


@pytest.mark.parametrize("name", ALL)
def test_broken_rows_join_the_bad_input_corpus(runner, tmp_path, name):
    """Through the real entry point: file:line:field, or diverted to --errors with the field."""
    good = rows(name)[0]
    mutate, field = BROKEN[name][0]
    path = tmp_path / f"{name}.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(mutate(copy.deepcopy(good))) + "\n")
    failed = runner.invoke(cli, ["cat", str(path)])
    assert failed.exit_code == 1 and f"{path}:2: field '{field}'" in failed.output
    errors, out = tmp_path / "errors.jsonl", tmp_path / "out.jsonl"
    result = runner.invoke(cli, ["cat", str(path), "--on-error", "skip", "--errors", str(errors), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert [(e["line"], e["field"]) for e in read_json_records(str(errors))] == [(2, field)]
    assert len(list(read_json_records(str(out)))) == len(expected_pairs(name, good))


def test_forced_layout_names_the_missing_field():
    with pytest.raises(RecordError) as caught:
        normalize(rows("pku-saferlhf")[0], LayoutOptions(layout="shp"))
    assert caught.value.field == "history" and "layout shp" in str(caught.value)
    with pytest.raises(ValueError, match="layout must be one of"):
        LayoutOptions(layout="nope")


# -- ambiguous rows ---------------------------------------------------------------------------------
def _helpsteer_with_message_lists() -> dict:
    """A published HelpSteer3 derivative: the HelpSteer3 fields plus chosen/rejected message lists."""
    row = rows("helpsteer")[0]
    return {**row, "chosen": [*row["context"], {"role": "assistant", "content": row["response1"]}],
            "rejected": [*row["context"], {"role": "assistant", "content": row["response2"]}]}


def test_rows_with_the_fields_of_two_layouts_fail_naming_both():
    row = _helpsteer_with_message_lists()
    with pytest.raises(RecordError, match=r"ambiguous layout") as caught:
        normalize(row)
    assert "helpsteer (context|prompt, " in str(caught.value) and "message-lists (chosen, rejected)" in str(caught.value)
    as_helpsteer = normalize(row, LayoutOptions(layout="helpsteer"))
    as_lists = normalize(row, LayoutOptions(layout="message-lists"))
    assert as_helpsteer["chosen"] == as_lists["chosen"] == row["response1"]
    assert as_helpsteer["extra"]["layout"] == "helpsteer" and as_lists["extra"]["layout"] == "message-lists"
    canonical_and_arena = {**rows("chatbot-arena")[0], "conversation": [{"role": "user", "content": "q"}]}
    with pytest.raises(RecordError, match=r"canonical \(conversation\) and chatbot-arena"):
        normalize(canonical_and_arena)
    assert len(LAYOUTS) == len({layout.name for layout in LAYOUTS}) == 13


def test_ambiguous_rows_through_the_cli(runner, tmp_path):
    path = tmp_path / "hs3-derived.jsonl"
    path.write_text(json.dumps(_helpsteer_with_message_lists()) + "\n")
    failed = runner.invoke(cli, ["cat", str(path)])
    assert failed.exit_code == 1 and f"{path}:1:" in failed.output
    assert "helpsteer" in failed.output and "message-lists" in failed.output and "--layout" in failed.output
    forced = runner.invoke(cli, ["cat", str(path), "--layout", "helpsteer", "-o", str(tmp_path / "out.jsonl")])
    assert forced.exit_code == 0, forced.output
    assert [r["extra"]["layout"] for r in read_json_records(str(tmp_path / "out.jsonl"))] == ["helpsteer"]


def test_cat_lists_the_layouts_with_their_fields(runner):
    result = runner.invoke(cli, ["cat", "--layouts"])
    assert result.exit_code == 0
    for layout in LAYOUTS:
        assert layout.name in result.output and layout.field_names() in result.output
    assert "better_response_id" in result.output and "human_ref_A" in result.output


# -- expansion: conservation ------------------------------------------------------------------------
def _scores(name: str, row: dict) -> list[float]:
    if name == "nectar":
        return [-a["rank"] for a in row["answers"]]
    return [c["fine-grained_score"] for c in row["completions"]]


@pytest.mark.parametrize("name", ["nectar", "ultrafeedback"])
def test_all_pairs_is_the_sum_of_untied_pairs_per_prompt(runner, tmp_path, name):
    fixture = rows(name)
    untied = sum(1 for row in fixture for a, b in itertools.combinations(_scores(name, row), 2) if a != b)
    tied = sum(1 for row in fixture for a, b in itertools.combinations(_scores(name, row), 2) if a == b)
    assert tied > 0  # the fixture must exercise ties
    out = tmp_path / "pairs.jsonl"
    result = runner.invoke(cli, ["cat", str(FIXTURES / f"{name}.jsonl"), "--pairs", "all", "-o", str(out)])
    assert result.exit_code == 0, result.output
    records = list(read_json_records(str(out)))
    counts = summary(result.stderr)
    assert len(records) == counts["kept"] == untied
    assert counts["skipped_tied_pairs"] == tied and counts["read"] == len(fixture)
    assert counts["kept"] == counts["read"] + counts["expanded"]
    assert len({r["id"] for r in records}) == len(records)
    assert all(r["extra"]["margin"] > 0 and r["chosen"] != r["rejected"] for r in records)
    n = [len(_scores(name, row)) for row in fixture]
    assert counts["kept"] + counts["skipped_tied_pairs"] == sum(k * (k - 1) // 2 for k in n)
    adjacent = runner.invoke(cli, ["cat", str(FIXTURES / f"{name}.jsonl"), "--pairs", "adjacent", "-o", str(out)])
    counts = summary(adjacent.stderr)
    assert counts["kept"] + counts.get("skipped_tied_pairs", 0) == sum(k - 1 for k in n)


def test_pair_rules_on_ties():
    assert ranked_pairs([3, 1, 2], "all") == ([(0, 2), (0, 1), (2, 1)], 0)
    assert ranked_pairs([2, 2, 1], "all") == ([(0, 2), (1, 2)], 1)
    assert ranked_pairs([2, 2, 1], "adjacent") == ([(1, 2)], 1)
    assert ranked_pairs([2, 2, 1, 1], "best-worst") == ([(0, 2)], 0)
    assert ranked_pairs([4, 4], "best-worst") == ([], 1) and ranked_pairs([4], "all") == ([], 0)


def test_a_row_with_no_pair_is_diverted_not_lost():
    all_tied = copy.deepcopy(rows("nectar")[0])
    for answer in all_tied["answers"]:
        answer["rank"] = 1.0
    result = expand(all_tied, LayoutOptions(pairs="all"))
    assert type(result) is Expansion and not result and result.diverted == "all_tied"
    assert result.skipped == {"tied_pairs": 6}
    with pytest.raises(RecordError, match="becomes no record"):
        normalize(all_tied)
    with Stage.over("cat", [all_tied, rows("nectar")[0]]) as stage:
        kept = list(stage.records())
    assert len(kept) == 1 and stage.counts["diverted_all_tied"] == 1 and stage.counts["read"] == 2
    assert [d["reason"] for d in stage.outputs("diverted")] == ["all_tied"]


@pytest.mark.parametrize("ties", ["keep", "drop"])
def test_arena_and_helpsteer_ties_kept_or_diverted_with_a_reason(runner, tmp_path, ties):
    inputs = [str(FIXTURES / "chatbot-arena.jsonl"), str(FIXTURES / "helpsteer.jsonl")]
    out, dropped = tmp_path / "out.jsonl", tmp_path / "diverted.jsonl"
    result = runner.invoke(cli, ["cat", *inputs, "--ties", ties, "--diverted", str(dropped), "-o", str(out)])
    assert result.exit_code == 0, result.output
    expected = [pair for name in ("chatbot-arena", "helpsteer") for row in rows(name)
                for pair in expected_pairs(name, row, ties=ties)]
    records = list(read_json_records(str(out)))
    assert [(r["chosen"], r["rejected"]) for r in records] == expected
    diverted = list(read_json_records(str(dropped)))
    reasons = [(d["layout"], d["line"], d["reason"]) for d in diverted]
    tie_rows = [("chatbot-arena", 3, "tie"), ("helpsteer", 3, "tie")] if ties == "drop" else []
    assert sorted(reasons) == sorted([("chatbot-arena", 4, "histories_differ"), *tie_rows])
    assert diverted[0]["row"] == rows(diverted[0]["layout"])[diverted[0]["line"] - 1]
    counts = summary(result.stderr)
    assert counts["read"] == len(records) + len(diverted)
    assert counts["diverted_histories_differ"] == 1 and counts.get("diverted_tie", 0) == len(tie_rows)
    labels = [r["labels"][0]["prefers"] for r in records]
    assert labels.count("tie") == (2 if ties == "keep" else 0)
    # without --diverted the rows are still counted, never dropped silently
    counted = runner.invoke(cli, ["cat", *inputs, "--ties", ties, "-o", str(out)])
    assert summary(counted.stderr) == counts


def test_expanded_rows_have_distinct_positions_and_shards_cover_them(runner, tmp_path):
    fixture = rows("rm-bench") + rows("nectar")
    with Stage.over("scan", fixture, layouts=LayoutOptions(pairs="all")) as stage:
        positions = [position for position, _, _ in stage.positioned()]
        again = [position for position, _, _ in stage.reread()]
    assert positions == again == sorted(set(positions)) and len(positions) == 18 + 17
    assert positions[:10] == [*range(9), POSITION_STRIDE]
    source = FIXTURES / "rm-bench.jsonl"
    everything = runner.invoke(cli, ["cat", str(source), "-o", str(tmp_path / "all.jsonl")])
    assert everything.exit_code == 0
    parts = []
    for index in range(2):
        out = tmp_path / f"part{index}.jsonl"
        assert runner.invoke(cli, ["cat", str(source), "--shard", f"{index}/2", "-o", str(out)]).exit_code == 0
        parts += [r["id"] for r in read_json_records(str(out))]
    assert sorted(parts) == sorted(r["id"] for r in read_json_records(str(tmp_path / "all.jsonl")))


def test_dedupe_reads_expanded_rows_in_one_pass_and_conserves_them(runner, tmp_path):
    """dedupe reads its input twice (positions must agree) and must route every expanded record."""
    kept, removed = tmp_path / "kept.jsonl", tmp_path / "removed.jsonl"
    result = runner.invoke(cli, ["dedupe", str(FIXTURES / "rm-bench.jsonl"), str(FIXTURES / "nectar.jsonl"),
                                 "--pairs", "all", "--removed", str(removed), "-o", str(kept)])
    assert result.exit_code == 0, result.output
    counts = summary(result.stderr, "dedupe")
    routed = len(list(read_json_records(str(kept)))) + len(list(read_json_records(str(removed))))
    assert routed == 18 + 17 == counts["read"] + counts["expanded"]


# -- stats --------------------------------------------------------------------------------------------
def test_stats_counts_records_per_layout(runner):
    paths = [str(FIXTURES / f"{name}.jsonl") for name in ALL]
    result = runner.invoke(cli, ["stats", "--json", *paths])
    assert result.exit_code == 0, result.output
    stats = orjson.loads(result.stdout)
    assert stats["layouts"] == {name: sum(len(expected_pairs(name, row)) for row in rows(name)) for name in ALL}
    canonical = list(read_json_records(str(Path(__file__).parent.parent / "examples" / "data" / "llmbar.jsonl.zst")))
    assert collect_stats(canonical)["layouts"] == {"canonical": len(canonical)}
    table = runner.invoke(cli, ["stats", *paths]).stdout
    assert re.search(r"^rm-bench\s+18$", table, re.M) and re.search(r"^canonical", table, re.M) is None


def test_stats_prints_long_source_names_whole():
    stem = "a-very-long-source-name-shared-by-two-sources"
    records = [{"conversation": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b",
                "source": f"{stem}/{suffix}", "scores": {f"{stem}-rm-{suffix}": {"p": 0.7}}}
               for suffix in ("first", "second", "second")]
    table = format_table(collect_stats(records))
    assert re.search(rf"^{stem}/first\s+1$", table, re.M) and re.search(rf"^{stem}/second\s+2$", table, re.M)
    assert f"{stem}-rm-first" in table and f"{stem}-rm-second" in table


# -- every layout through cat -> dedupe -> score -----------------------------------------------------
@pytest.mark.slow
def test_every_layout_round_trips_through_cat_dedupe_score(runner, tmp_path, smollm2_rm):
    heads = []
    for name in ALL:
        converted, deduped, removed = tmp_path / f"{name}.zst", tmp_path / f"{name}.dedupe.zst", tmp_path / f"{name}.rm.zst"
        cat = runner.invoke(cli, ["cat", str(FIXTURES / f"{name}.jsonl"), "-o", str(converted)])
        assert cat.exit_code == 0, cat.output
        records = list(read_json_records(str(converted)))
        assert [(r["chosen"], r["rejected"]) for r in records] == [
            pair for row in rows(name) for pair in expected_pairs(name, row)]
        dedupe = runner.invoke(cli, ["dedupe", str(converted), "--removed", str(removed), "-o", str(deduped)])
        assert dedupe.exit_code == 0, dedupe.output
        kept = list(read_json_records(str(deduped)))
        gone = list(read_json_records(str(removed))) if removed.exists() else []
        assert len(kept) + len(gone) == len(records) and kept
        assert [r["id"] for r in kept] == [r["id"] for r in records if r["id"] in {k["id"] for k in kept}]
        head = tmp_path / f"{name}.head.zst"
        assert runner.invoke(cli, ["cat", str(deduped), "--head", "1", "-o", str(head)]).exit_code == 0
        heads.append(str(head))
    scored_path = tmp_path / "scored.zst"
    scored = runner.invoke(cli, ["score", "-m", str(smollm2_rm), "--name", "rm", *heads, "-o", str(scored_path)])
    assert scored.exit_code == 0, scored.output
    scored_records = list(read_json_records(str(scored_path)))
    assert [r["extra"]["layout"] for r in scored_records] == ALL
    for record in scored_records:
        assert 0.0 < record["scores"]["rm"]["p"] < 1.0
        assert record["scores"]["rm"]["chosen"] != record["scores"]["rm"]["rejected"]
