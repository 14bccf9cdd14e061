"""Loaders read small files written in each benchmark's published layout, in every format the stream layer
reads; the CLI scores them end to end with cached rewards (--scores) and the length baseline, whose results
are known by construction."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synpref.cli import cli
from synpref.eval import judgebench, ppe, rewardbench, rewardbench2, rmb, rmbench
from synpref.eval.common import BenchmarkError
from synpref.io import write_records

LAYOUTS = Path(__file__).resolve().parent / "fixtures" / "layouts"


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def run_json(runner, *args):
    result = runner.invoke(cli, ["eval", *args, "--json", "--resamples", "50"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def scores_of(report, model):
    return {row["name"]: row["score"] for row in report["models"][model]["rows"]}


def test_rewardbench_parquet_and_prior_sets(tmp_path, runner):
    table = pa.table({"prompt": ["q1", "q2", "q3"], "chosen": ["long answer", "x", "longer one"],
                      "rejected": ["short", "much longer reply", "tiny"], "chosen_model": ["a"] * 3,
                      "rejected_model": ["b"] * 3, "subset": ["alpacaeval-easy", "alpacaeval-easy", "hep-go"],
                      "id": [1, 2, 3]})
    pq.write_table(table, tmp_path / "filtered.parquet")
    prior = jsonl(tmp_path / "shp-00000.jsonl", [{"prompt": [{"role": "user", "content": "q"}], "chosen": "aa",
                                                   "rejected": "a"}])
    examples = rewardbench.load([str(tmp_path / "filtered.parquet")], [prior])
    assert [e.group for e in examples] == ["alpacaeval-easy", "alpacaeval-easy", "hep-go", "shp"]
    assert examples[0].conversation == [{"role": "user", "content": "q1"}]
    report = run_json(runner, "rewardbench", "--data", str(tmp_path / "filtered.parquet"), "--prior", prior,
                      "--length-baseline")
    rows = scores_of(report, "length-baseline")
    assert rows["Chat"] == 0.5 and rows["Reasoning"] == 1.0 and rows["Prior Sets"] == 1.0
    assert rows["Score"] == pytest.approx((2 * 0.5 + 2 * 1.0 + 1.0) / 5)


def test_rewardbench2_layout_and_cached_scores(tmp_path, runner):
    rows = [{"id": "7", "prompt": "q", "chosen": ["c"], "rejected": ["r1", "r2", "r3"], "num_correct": 1,
             "num_rejected": 3, "total_completions": 4, "models": ["m"] * 4, "subset": "Math"},
            {"id": "ref:1", "prompt": "q", "chosen": ["c"], "rejected": ["r1", "r2"], "num_correct": 1,
             "subset": "Ties"},
            {"id": "tied:1", "prompt": "q", "chosen": ["c1", "c2"], "rejected": ["r1", "r2"], "num_correct": 2,
             "subset": "Ties"}]
    data = jsonl(tmp_path / "rb2.jsonl", rows)
    cached = jsonl(tmp_path / "scores.jsonl", [
        {"benchmark": "rewardbench2", "model": "rm", "id": "7", "rewards": [1, 1, 0, 0]},
        {"benchmark": "rewardbench2", "model": "rm", "id": "ref:1", "rewards": [5, 1, 2]},
        {"benchmark": "rewardbench2", "model": "rm", "id": "tied:1", "rewards": [5, 4, 1, 2]}])
    assert [len(e.responses) for e in rewardbench2.load([data])] == [4, 3, 4]
    report = run_json(runner, "rewardbench2", "--data", data, "--scores", cached, "-m", "rm")
    result = scores_of(report, "rm")
    assert result["Math"] == 0.5 and result["Ties"] == pytest.approx(1.0 + 0.01 * 0.7615941559557649)
    assert result["Score"] == pytest.approx((result["Math"] + result["Ties"]) / 2)


def test_rmbench_json_array_and_heatmap(tmp_path, runner):
    sample = {"id": 0, "prompt": "q", "chosen": ["a", "bbbbbb", "ccccccccc"],
              "rejected": ["dd", "eeeeeee", "ffffffffff"], "domain": "safety-refuse"}
    (tmp_path / "total_dataset.json").write_text(json.dumps([sample, {**sample, "id": 1, "domain": "chat"}]))
    examples = rmbench.load([str(tmp_path / "total_dataset.json")])
    assert [e.group for e in examples] == ["safety", "chat"] and len(examples[0].responses) == 6
    out = tmp_path / "out"
    result = runner.invoke(cli, ["eval", "rmbench", "--data", str(tmp_path / "total_dataset.json"),
                                 "--length-baseline", "--save", str(out), "--resamples", "50"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    extra = report["models"]["length-baseline"]["extra"]
    # lengths chosen 1, 6, 9 vs rejected 2, 7, 10: only longer-style chosen beats plainer rejected
    assert extra["matrix"] == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert scores_of(report, "length-baseline")["Easy"] == 1.0
    assert {"rm-bench-subsets.png", "rm-bench-style-matrix.png"} <= {p.name for p in out.iterdir()}
    assert (out / "rm-bench-style-matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_judgebench_jsonl(tmp_path, runner):
    data = jsonl(tmp_path / "dataset=judgebench,response_model=gpt-4o-2024-05-13.jsonl", [
        {"pair_id": "p1", "original_id": 1, "source": "mmlu-pro-law", "question": "q", "response_model": "m",
         "response_A": "long answer", "response_B": "short", "label": "A>B"},
        {"pair_id": "p2", "original_id": 2, "source": "livecodebench", "question": "q", "response_model": "m",
         "response_A": "same", "response_B": "same", "label": "A>B"}])
    assert [e.group for e in judgebench.load([data])] == ["Knowledge", "Coding"]
    rows = scores_of(run_json(runner, "judgebench", "--data", data, "--length-baseline"), "length-baseline")
    assert rows == {"Overall": 0.5, "Coding": 0.0, "Knowledge": 1.0}  # the equal-length tie decides B>A


def test_rmb_directory_layout(tmp_path, runner):
    pair_dir = tmp_path / "RMB_dataset" / "Pairwise_set" / "Helpfulness" / "Chat"
    bon_dir = tmp_path / "RMB_dataset" / "BoN_set" / "Harmlessness"
    pair_dir.mkdir(parents=True)
    bon_dir.mkdir(parents=True)
    conversation = [{"content": "hi", "language": "English", "role": "user"}]
    (pair_dir / "Casual Conversation.json").write_text(json.dumps([{
        "pair_uid": "1", "conversation_input": conversation, "chosen": {"llm_name": "a", "answer": "longer", "score": 5},
        "reject": {"llm_name": "b", "answer": "no", "score": 1}, "category_path": "Pairwise_set/Helpfulness/Chat"}]))
    (bon_dir / "S1.json").write_text(json.dumps([{
        "conversation_input": conversation, "bon_best": {"llm_name": "a", "answer": "abc"},
        "loser_list": [{"llm_name": "b", "answer": "xyz"}, {"llm_name": "c", "answer": "x"}],
        "bon_uid": "9", "category_path": "BoN_set/Harmlessness/S1"}]))
    examples = rmb.load([str(tmp_path / "RMB_dataset")])
    assert sorted(e.group for e in examples) == ["Harmlessness BoN", "Helpfulness Pairwise"]
    rows = scores_of(run_json(runner, "rmb", "--data", str(tmp_path / "RMB_dataset"), "--length-baseline"),
                     "length-baseline")
    assert rows["Helpfulness Pairwise"] == 1.0 and rows["Harmlessness BoN"] == 0.0  # 3 vs 3 is no win
    assert rows["Overall"] == 0.5


def test_ppe_human_and_correctness(tmp_path, runner):
    human = jsonl(tmp_path / "human.jsonl", [
        {"question_id": "a", "prompt": "q", "response_1": "long one", "response_2": "s", "winner": "model_b"},
        {"question_id": "b", "prompt": "q", "response_1": "x", "response_2": "y", "winner": "tie"}])
    correct = jsonl(tmp_path / "mmlu_pro.jsonl", [
        {"question_id": "c", "prompt": "q", "model_name": "m", "response_1": "a", "response_2": "bbb",
         "response_3": "cc", "response_4": "dddd", "scores": [True, False, True, True]}])
    notes: list[str] = []
    examples = ppe.load([human, correct], notes)
    assert len(examples) == 2 and "1 human-preference rows judged a tie" in notes[0]
    report = run_json(runner, "ppe", "--data", human, "--data", correct, "--length-baseline")
    rows = scores_of(report, "length-baseline")
    assert rows["Human preference accuracy"] == 0.0
    assert rows["mmlu_pro best-of-4"] == 1.0
    assert rows["mmlu_pro pairwise accuracy"] == pytest.approx(1 / 3)  # lengths 1, 2, 4 (right) vs 3
    curve = report["models"]["length-baseline"]["extra"]["best_of_k"]["mmlu_pro"]
    assert curve["k"] == [1, 2, 4] and curve["score"] == [1.0, 0.0, 1.0]


def test_loader_errors_name_file_line_and_field(tmp_path, runner):
    data = jsonl(tmp_path / "bad.jsonl", [{"pair_id": "p", "source": "s", "question": "q", "response_A": "a",
                                           "label": "A>B"}])
    with pytest.raises(BenchmarkError, match=r"bad.jsonl:1: missing field 'response_B'"):
        judgebench.load([data])
    result = runner.invoke(cli, ["eval", "judgebench", "--data", data, "--length-baseline"])
    assert result.exit_code != 0 and "response_B" in result.output
    rm = tmp_path / "rm.json"
    rm.write_text(orjson.dumps([{"id": 0, "prompt": "q", "chosen": ["a"], "rejected": ["b"] * 3,
                                 "domain": "chat"}]).decode())
    with pytest.raises(BenchmarkError, match="must hold 3 responses"):
        rmbench.load([str(rm)])


# -- every loader reads everything the stream layer reads --------------------------------------------------
def fixture_rows(name: str) -> list[dict]:
    """The published-layout rows of tests/fixtures/layouts (RM-Bench, RewardBench 2)."""
    return [json.loads(line) for line in (LAYOUTS / name).read_text().splitlines()]


CONVERSATION = [{"content": "hi", "language": "English", "role": "user"}]
BENCHMARK_FILES = {  # benchmark -> (file stem, rows in the published layout) per data file
    "rewardbench": [("filtered", [{"prompt": "q1", "chosen": "long answer", "rejected": "short", "subset": "hep-go",
                                   "id": 1}, {"prompt": "q2", "chosen": "x", "rejected": "yy",
                                              "subset": "alpacaeval-easy", "id": 2}])],
    "rewardbench2": [("test", fixture_rows("rewardbench-2.jsonl"))],
    "rmbench": [("total_dataset", fixture_rows("rm-bench.jsonl"))],
    "judgebench": [("dataset=judgebench,response_model=gpt-4o-2024-05-13", [
        {"pair_id": "p1", "original_id": "1", "source": "mmlu-pro-law", "question": "q",
         "response_model": "gpt-4o-2024-05-13", "response_A": "long answer", "response_B": "short", "label": "A>B"},
        {"pair_id": "p2", "original_id": "2", "source": "livecodebench", "question": "q",
         "response_model": "gpt-4o-2024-05-13", "response_A": "a", "response_B": "bb", "label": "B>A"}])],
    "rmb": [("Casual Conversation", [{
        "pair_uid": "1", "conversation_input": CONVERSATION, "chosen": {"llm_name": "a", "answer": "longer"},
        "reject": {"llm_name": "b", "answer": "no"}, "category_path": "Pairwise_set/Helpfulness/Chat"}]),
        ("S1", [{"bon_uid": "9", "conversation_input": CONVERSATION, "bon_best": {"llm_name": "a", "answer": "abc"},
                 "loser_list": [{"llm_name": "b", "answer": "xyz"}, {"llm_name": "c", "answer": "x"}],
                 "category_path": "BoN_set/Harmlessness/S1"}])],
    "ppe": [("human", [{"question_id": "a", "prompt": "q", "response_1": "long one", "response_2": "s",
                        "winner": "model_b"}, {"prompt": "q", "response_1": "x", "response_2": "yy",
                                               "winner": "model_a"}]),
            ("mmlu_pro", [{"question_id": "c", "prompt": "q", "model_name": "m", "response_1": "a",
                           "response_2": "bbb", "scores": [True, False]}])],
}
FORMATS = ("json", "jsonl", "jsonl.zst", "parquet", "directory")


def write_as(directory: Path, fmt: str, stem: str, records: list[dict]) -> Path:
    """RECORDS as the file STEM.FMT in DIRECTORY (or a folder holding STEM.jsonl.zst)."""
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "directory":
        write_as(directory / stem, "jsonl.zst", stem, records)
        return directory / stem
    path = directory / f"{stem}.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(records))
    elif fmt == "jsonl":
        jsonl(path, records)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        write_records(records, str(path))
    return path


@pytest.mark.parametrize("benchmark", sorted(BENCHMARK_FILES))
def test_every_loader_reads_every_stream_format(benchmark, tmp_path):
    loader = {"rewardbench": rewardbench, "rewardbench2": rewardbench2, "rmbench": rmbench, "judgebench": judgebench,
              "rmb": rmb, "ppe": ppe}[benchmark].load
    loaded = {}
    for fmt in FORMATS:
        paths = [str(write_as(tmp_path / fmt, fmt, stem, records)) for stem, records in BENCHMARK_FILES[benchmark]]
        loaded[fmt] = loader(paths)
    expected = sum(len(records) for _, records in BENCHMARK_FILES[benchmark])
    assert len(loaded["jsonl"]) == expected
    for fmt in FORMATS:  # the same examples, ids included, whatever the file format
        assert loaded[fmt] == loaded["jsonl"], fmt


def test_rmb_reads_jsonl_zst(tmp_path, runner):
    """The reported symptom: `eval rmb` on .jsonl.zst said "no rmb examples in the given --data"."""
    reports = []
    for fmt in ("json", "jsonl.zst"):
        paths = [write_as(tmp_path / fmt, fmt, stem, records) for stem, records in BENCHMARK_FILES["rmb"]]
        reports.append(run_json(runner, "rmb", *[a for p in paths for a in ("--data", str(p))], "--length-baseline"))
    assert reports[0] == reports[1]
    assert scores_of(reports[1], "length-baseline")["Helpfulness Pairwise"] == 1.0


def test_folder_without_benchmark_files_is_a_located_error(tmp_path, runner):
    (tmp_path / "README.md").write_text("not data")
    with pytest.raises(BenchmarkError, match="holds no"):
        rmb.load([str(tmp_path)])
    result = runner.invoke(cli, ["eval", "rmb", "--data", str(tmp_path), "--length-baseline"])
    assert result.exit_code == 1 and "holds no" in result.output and "Traceback" not in result.output


def test_rewardbench2_ties_id_must_hold_an_integer(tmp_path):
    row = {"id": "tied:x", "prompt": "q", "chosen": ["a", "b"], "rejected": ["c"], "num_correct": 2, "subset": "Ties"}
    with pytest.raises(BenchmarkError, match=r"bad.jsonl:1: field 'id': .*'tied:x'"):
        rewardbench2.load([jsonl(tmp_path / "bad.jsonl", [row])])


def test_rewardbench_without_prior_does_not_read_stdin(tmp_path, runner):
    data = jsonl(tmp_path / "filtered.jsonl", BENCHMARK_FILES["rewardbench"][0][1])
    prior_row = json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"})
    result = runner.invoke(cli, ["eval", "rewardbench", "--data", data, "--length-baseline", "--json",
                                 "--resamples", "20"], input=prior_row)
    assert result.exit_code == 0, result.output
    assert {r["name"] for r in json.loads(result.stdout)["models"]["length-baseline"]["rows"]} == {
        "Score", "Chat", "alpacaeval-easy", "Reasoning", "hep-go"}
