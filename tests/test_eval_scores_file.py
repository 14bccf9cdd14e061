"""The --scores / --save-scores file of the benchmark commands: what a run without -m reports, the errors
for a file of another benchmark or one that misses examples, what --save-scores saves, and the format's
documentation in every benchmark's --help and man page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synpref.cli import cli
from synpref.eval.run import BENCHMARKS
from synpref.io import iter_raw, write_records

REPO = Path(__file__).resolve().parent.parent
RM_BENCH = str(REPO / "tests" / "fixtures" / "layouts" / "rm-bench.jsonl")  # ids 101 and 202


def rm_bench_scores(path: Path, model: str = "rm", ids: tuple = (101, 202), benchmark: str = "rmbench") -> str:
    """Rewards that prefer every chosen reply (chosen 3..1 above rejected 0): a known 100% RM."""
    write_records([{"benchmark": benchmark, "model": model, "id": i, "rewards": [3, 2, 1, 0, 0, 0]} for i in ids],
                  str(path))
    return str(path)


def invoke(runner, *args: str):
    return runner.invoke(cli, ["eval", "rmbench", "--data", RM_BENCH, "--resamples", "20", *args])


def test_scores_without_model_and_length_baseline_reports_both(tmp_path, runner):
    scores = rm_bench_scores(tmp_path / "s.jsonl.zst")
    other = [{"benchmark": "rmbench", "model": "other", "id": i, "rewards": [0] * 6} for i in (101, 202)]
    write_records([raw.parse() for raw in iter_raw(scores)] + other, str(tmp_path / "two.jsonl.zst"))
    result = invoke(runner, "--scores", str(tmp_path / "two.jsonl.zst"), "--length-baseline", "--json")
    assert result.exit_code == 0, result.output
    models = json.loads(result.stdout)["models"]
    assert list(models) == ["rm", "other", "length-baseline"]
    overall = {name: model["rows"][0]["score"] for name, model in models.items()}
    assert overall["rm"] == 1.0 and overall["other"] == 0.0  # 0 vs 0 is a tie: a miss


def test_scores_of_another_benchmark_say_so(tmp_path, runner):
    scores = rm_bench_scores(tmp_path / "s.jsonl", benchmark="rewardbench2")
    result = invoke(runner, "--scores", scores)
    assert result.exit_code == 1
    assert f"--scores {scores}: these are scores for benchmark rewardbench2, not rmbench" in result.output
    assert "give -m MODEL" not in result.output


def test_scores_that_miss_examples_give_the_count_and_ids(tmp_path, runner):
    scores = rm_bench_scores(tmp_path / "s.jsonl", ids=(101,))
    result = invoke(runner, "--scores", scores, "-m", "rm")
    assert result.exit_code == 1
    assert "do not cover every rmbench example: 1 of 2 examples have no rewards (first ids: '202')" in result.output
    write_records([{"benchmark": "rmbench", "model": "rm", "id": i, "rewards": [1, 0]} for i in (101, 202)],
                  str(tmp_path / "short.jsonl"))
    result = invoke(runner, "--scores", str(tmp_path / "short.jsonl"))
    assert "2 have the wrong number ('101' has 2 rewards for 6 responses" in result.output


def test_save_scores_needs_model_rewards(tmp_path, runner):
    saved = tmp_path / "saved.jsonl.zst"
    result = invoke(runner, "--length-baseline", "--save-scores", str(saved))
    assert result.exit_code == 1 and "the length baseline is never saved" in result.output
    assert not saved.exists()
    # with --scores and no -m, the cached models are saved again (the length baseline still is not)
    result = invoke(runner, "--scores", rm_bench_scores(tmp_path / "s.jsonl"), "--length-baseline",
                    "--save-scores", str(saved))
    assert result.exit_code == 0, result.output
    rows = [raw.parse() for raw in iter_raw(str(saved))]
    assert {(r["model"], r["id"]) for r in rows} == {("rm", "101"), ("rm", "202")}
    assert rows[0]["rewards"] == [3, 2, 1, 0, 0, 0]


def test_repeated_ids_are_refused_for_a_scores_file(tmp_path, runner):
    scores = rm_bench_scores(tmp_path / "s.jsonl")
    result = runner.invoke(cli, ["eval", "rmbench", "--data", RM_BENCH, "--data", RM_BENCH, "--scores", scores])
    assert result.exit_code == 1 and "2 rmbench example ids repeat in --data (first: '101', '202')" in result.output


def test_unknown_model_lists_the_cached_names(tmp_path, runner):
    result = invoke(runner, "--scores", rm_bench_scores(tmp_path / "s.jsonl"), "-m", "typo")
    assert result.exit_code == 1 and "no cached scores named 'typo' (--scores has 'rm')" in result.output


def squeezed(text: str) -> str:
    """TEXT without whitespace: click and man wrap lines (at hyphens too)."""
    return "".join(text.split())


@pytest.mark.parametrize("benchmark", sorted(BENCHMARKS))
def test_scores_format_is_in_every_help_and_man_page(benchmark, runner):
    text = squeezed(runner.invoke(cli, ["eval", benchmark, "--help"]).output)
    page = squeezed((REPO / "man" / f"synpref-eval-{benchmark}.1").read_text().replace("\\-", "-"))
    own = BENCHMARKS[benchmark].scores  # this benchmark's ids and reward order
    for needle in ('{"benchmark": SUBCOMMAND, "model": NAME, "id": EXAMPLE_ID, "rewards":', own):
        assert squeezed(needle) in text and squeezed(needle) in page, needle


@pytest.mark.slow
def test_saved_model_rewards_come_back_beside_the_length_baseline(tmp_path, runner, smollm2_rm):
    """Real SmolLM2 rewards: --save-scores, then --scores with --length-baseline and no -m reports the
    saved model unchanged and the baseline beside it, without loading the model."""
    saved = tmp_path / "rewards.jsonl.zst"
    first = invoke(runner, "-m", f"smol={smollm2_rm}", "--save-scores", str(saved), "--json")
    assert first.exit_code == 0, first.output
    rows = [raw.parse() for raw in iter_raw(str(saved))]
    assert len(rows) == 2 and all(len(r["rewards"]) == 6 for r in rows)
    assert len({x for r in rows for x in r["rewards"]}) > 1  # real, varying rewards
    again = invoke(runner, "--scores", str(saved), "--length-baseline", "--json")
    assert again.exit_code == 0, again.output
    models = json.loads(again.stdout)["models"]
    assert list(models) == ["smol", "length-baseline"]
    assert models["smol"] == json.loads(first.stdout)["models"]["smol"]
