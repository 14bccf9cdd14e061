"""`synpref eval pairs` through the real entry point on the real pair sets, the report formats and
plots, merging, the SLURM array script, and scoring with the SmolLM2 reward model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from synpref.cli import cli
from synpref.io import iter_raw, write_records

REPO = Path(__file__).resolve().parent.parent
SETS = ("llmbar", "pandalm-test", "evalbiasbench", "hh-harmless-base-test")


def scored_stream(directory: Path, out: Path, limit: int | None = None) -> list[dict]:
    """Real pairs with two stored score sets: 'long' prefers the longer reply, 'words' the wordier one."""
    records = []
    for name in SETS:
        for k, raw in enumerate(iter_raw(str(directory / f"{name}.jsonl.zst"))):
            if limit is not None and k >= limit:
                break
            r = raw.parse()
            r["scores"] = {"long": {"chosen": len(r["chosen"]), "rejected": len(r["rejected"]), "p": 0.5},
                           "words": {"chosen": len(r["chosen"].split()), "rejected": len(r["rejected"].split()),
                                     "p": 0.5}}
            records.append(r)
    write_records(records, str(out))
    return records


def expected_accuracy(records: list[dict], model: str) -> dict[str, float]:
    totals: dict[str, list[float]] = defaultdict(list)
    for r in records:
        s = r["scores"][model]
        totals[r["source"]].append(1.0 if s["chosen"] > s["rejected"] else 0.5 if s["chosen"] == s["rejected"] else 0.0)
    return {k: sum(v) / len(v) for k, v in totals.items()}


def test_pairs_report_table_json_png(examples, tmp_path, runner):
    records = scored_stream(examples, tmp_path / "scored.jsonl.zst")
    out = tmp_path / "report"
    result = runner.invoke(cli, ["eval", "pairs", str(tmp_path / "scored.jsonl.zst"), "--save", str(out),
                                 "--resamples", "200"])
    assert result.exit_code == 0, result.output
    assert "llmbar/LLMBar/Adversarial/Neighbor" in result.stdout and "long" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"long", "words"}
    for model in ("long", "words"):
        rows = {r["name"]: r for r in report["models"][model]["rows"]}
        expected = expected_accuracy(records, model)
        for source, accuracy in expected.items():
            assert rows[source]["score"] == pytest.approx(accuracy)
            low, high = rows[source]["ci"]
            assert low <= accuracy <= high
        overall = rows["overall (pooled)"]
        assert overall["n"] == len(records)
        assert rows["mean over subsets"]["score"] == pytest.approx(sum(expected.values()) / len(expected))
    assert "| **overall (pooled)** |" in (out / "report.md").read_text()
    assert (out / "pairs-subsets.png").read_bytes()[:4] == b"\x89PNG"


def test_pairs_is_seeded_and_groups_by_any_field(examples, tmp_path, runner):
    scored_stream(examples, tmp_path / "s.jsonl.zst", limit=40)
    args = ["eval", "pairs", str(tmp_path / "s.jsonl.zst"), "-m", "long", "--json", "--resamples", "100"]
    first, second = runner.invoke(cli, args), runner.invoke(cli, args)
    assert first.stdout == second.stdout and set(json.loads(first.stdout)["models"]) == {"long"}
    other = runner.invoke(cli, [*args, "--seed", "5"])
    assert other.stdout != first.stdout
    grouped = runner.invoke(cli, ["eval", "pairs", str(tmp_path / "s.jsonl.zst"), "--by", "extra.group",
                                  "--resamples", "50", "--json"])
    names = {r["name"] for r in json.loads(grouped.stdout)["models"]["long"]["rows"]}
    assert {"LLMBar", "Processed", "CaseStudy", "?"} & names


def test_pairs_without_scores_or_model_fails_clearly(examples, tmp_path, runner):
    result = runner.invoke(cli, ["eval", "pairs", str(examples / "evalbiasbench.jsonl.zst"), "-m", "missing"])
    assert result.exit_code != 0 and "scores.missing" in result.output


def test_merge_joins_models_and_rejects_duplicates(examples, tmp_path, runner):
    scored_stream(examples, tmp_path / "s.jsonl.zst", limit=30)
    for model in ("long", "words"):
        result = runner.invoke(cli, ["eval", "pairs", str(tmp_path / "s.jsonl.zst"), "-m", model,
                                     "--save", str(tmp_path / model), "--resamples", "50"])
        assert result.exit_code == 0, result.output
    merged = runner.invoke(cli, ["eval", "merge", str(tmp_path / "long/report.json"),
                                 str(tmp_path / "words/report.json"), "--json"])
    assert set(json.loads(merged.stdout)["models"]) == {"long", "words"}
    again = runner.invoke(cli, ["eval", "merge", str(tmp_path / "long/report.json"),
                                str(tmp_path / "long/report.json")])
    assert again.exit_code != 0 and "appears in two reports" in again.output


def rm_bench_rows() -> list[dict]:
    """RM-Bench rows as total_dataset.json has them (id, prompt, chosen[3], rejected[3], domain)."""
    return [json.loads(line) for line in (REPO / "tests/fixtures/layouts/rm-bench.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("layout", [[], ["--layout", "rm-bench"]])
def test_pairs_reads_rm_bench_own_layout(tmp_path, runner, layout):
    """RM-Bench's 3x3 rows (chosen and rejected lists of reply strings) are the `rm-bench` layout: one row
    is 9 pairs, chosen style i against rejected style j, grouped by domain."""
    rows = rm_bench_rows()
    (tmp_path / "total_dataset.json").write_text(json.dumps(rows))
    result = runner.invoke(cli, ["eval", "pairs", str(tmp_path / "total_dataset.json"), *layout, "--length-baseline",
                                 "--json", "--resamples", "50"])
    assert result.exit_code == 0, result.output
    report = {r["name"]: r for r in json.loads(result.stdout)["models"]["length-baseline"]["rows"]}
    for row in rows:
        wins = [1.0 if len(c) > len(r) else 0.5 if len(c) == len(r) else 0.0
                for c in row["chosen"] for r in row["rejected"]]
        assert report[f"rm-bench/{row['domain']}"]["n"] == 9
        assert report[f"rm-bench/{row['domain']}"]["score"] == pytest.approx(sum(wins) / 9)


def test_rmbench_without_some_domains_says_which(runner):
    result = runner.invoke(cli, ["eval", "rmbench", "--data", str(REPO / "tests/fixtures/layouts/rm-bench.jsonl"),
                                 "--length-baseline", "--resamples", "20"])
    assert result.exit_code == 0, result.output
    assert "note: --data has no examples of chat, safety: Overall, Hard, Normal and Easy are means over math, " \
           "code only" in result.output


def judgebench_files(directory: Path) -> list[str]:
    """Two response-model files as published (data/dataset=judgebench,response_model=NAME.jsonl); the
    rows carry no response_model field, so the file names tell the sets apart."""
    files = []
    for model, pairs in (("gpt-4o-2024-05-13", [("long answer", "short", "A>B"), ("same", "same", "B>A")]),
                         ("claude-3-5-sonnet-20240620", [("a", "bbb", "B>A"), ("tie", "tie", "A>B"),
                                                         ("abc", "d", "A>B")])):
        path = directory / f"dataset=judgebench,response_model={model}.jsonl"
        path.write_text("".join(json.dumps({"pair_id": f"{model}-{i}", "source": "livebench-math", "question": "q",
                                            "response_A": a, "response_B": b, "label": label}) + "\n"
                                for i, (a, b, label) in enumerate(pairs)))
        files += ["--data", str(path)]
    return files


def test_judgebench_rows_per_response_model_and_tie_rule(tmp_path, runner):
    args = ["eval", "judgebench", *judgebench_files(tmp_path), "--length-baseline", "--json", "--resamples", "50"]
    both, single = (json.loads(runner.invoke(cli, args + extra).stdout) for extra in ([], ["--single-game"]))
    rows = {r["name"]: r for r in both["models"]["length-baseline"]["rows"]}
    assert "Overall" not in rows and rows["claude-3-5-sonnet-20240620: Overall"]["n"] == 3
    # default, both orders: every tie is wrong
    assert rows["gpt-4o-2024-05-13: Overall"]["score"] == 0.5
    assert rows["claude-3-5-sonnet-20240620: Math"]["score"] == pytest.approx(2 / 3)
    # --single-game: the tie decides B>A, right on gpt-4o's B>A pair, still wrong on claude's A>B pair
    rows = {r["name"]: r["score"] for r in single["models"]["length-baseline"]["rows"]}
    assert rows["gpt-4o-2024-05-13: Overall"] == 1.0 and rows["claude-3-5-sonnet-20240620: Overall"] == \
        pytest.approx(2 / 3)
    assert "both orders" in both["rule"] and "--single_game" in single["rule"]


def test_help_explains_order_free_and_rules(runner):
    assert "order-free" in runner.invoke(cli, ["eval", "pairs", "--help"]).output
    assert "EXAMPLE_COUNTS" in runner.invoke(cli, ["eval", "rewardbench", "--help"]).output


@pytest.mark.slow
def test_slurm_script_tasks_then_merge(examples, tmp_path):
    scored_stream(examples, tmp_path / "s.jsonl.zst", limit=25)
    (tmp_path / "ckpts.txt").write_text("# two stored score sets\nlong\nwords\n")
    (tmp_path / "suite.txt").write_text(f"pairs {tmp_path / 's.jsonl.zst'}\n")
    env = {**os.environ, "SYNPREF": str(Path(sys.executable).parent / "synpref")}
    script = str(REPO / "bin" / "eval-slurm.sh")
    for task in ("0", "1"):
        subprocess.run([script, "task", "ckpts.txt", "suite.txt", "out"], cwd=tmp_path, check=True,
                       env={**env, "SLURM_ARRAY_TASK_ID": task, "SLURM_ARRAY_TASK_COUNT": "2"})
    done = subprocess.run([script, "merge", "ckpts.txt", "suite.txt", "out"], cwd=tmp_path, check=True, env=env,
                          capture_output=True, text=True)
    merged = json.loads((tmp_path / "out/00-pairs/merged/report.json").read_text())
    assert set(merged["models"]) == {"long", "words"} and "words" in done.stdout
    rerun = subprocess.run([script, "task", "ckpts.txt", "suite.txt", "out"], cwd=tmp_path, check=True, env={
        **env, "SLURM_ARRAY_TASK_ID": "0"}, capture_output=True, text=True)
    assert "done, skipped" in rerun.stderr


@pytest.fixture(scope="module")
def reward_model(request, tmp_path_factory) -> str:
    """The shared SmolLM2-135M reward model fixture when conftest has it, else built here the same way."""
    try:
        return str(request.getfixturevalue("smollm2_rm"))
    except pytest.FixtureLookupError:
        from synpref.models.locate import smollm2_gguf
        from synpref.models.reward import init_reward_model

        return str(init_reward_model(smollm2_gguf(), tmp_path_factory.mktemp("rm") / "smollm2-rm"))


@pytest.mark.slow
def test_pairs_scores_with_smollm2_then_reuses(examples, tmp_path, runner, reward_model):
    pairs = []
    for name in SETS:  # the 6 shortest pairs of each real set keep CPU time low
        rows = [raw.parse() for raw in iter_raw(str(examples / f"{name}.jsonl.zst"))]
        rows.sort(key=lambda r: len(str(r["conversation"])) + len(r["chosen"]) + len(r["rejected"]))
        pairs += [r for r in rows if r["chosen"].strip() and r["rejected"].strip()][:6]
    write_records(pairs, str(tmp_path / "pairs.jsonl.zst"))
    first = runner.invoke(cli, ["eval", "pairs", "-m", f"smol={reward_model}", str(tmp_path / "pairs.jsonl.zst"),
                                "--scored", str(tmp_path / "scored.jsonl.zst"), "--json", "--resamples", "100"])
    assert first.exit_code == 0, first.output
    scored = [raw.parse() for raw in iter_raw(str(tmp_path / "scored.jsonl.zst"))]
    assert len(scored) == len(pairs) and all(set(r["scores"]["smol"]) >= {"chosen", "rejected", "p"} for r in scored)
    assert len({r["scores"]["smol"]["chosen"] for r in scored}) > 1  # real, varying rewards
    report = json.loads(first.stdout)
    rows = {r["name"]: r["score"] for r in report["models"]["smol"]["rows"]}
    for source, accuracy in expected_accuracy(scored, "smol").items():
        assert rows[source] == pytest.approx(accuracy)
    again = runner.invoke(cli, ["eval", "pairs", "-m", f"smol={reward_model}", str(tmp_path / "scored.jsonl.zst"),
                                "--json", "--resamples", "100"])
    assert again.exit_code == 0 and json.loads(again.stdout) == report
    assert "reused_smol 24" in again.stderr
