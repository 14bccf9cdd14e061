"""examples/two-stage/run.sh (`make demo`) end to end on a tiny real subset with the real small models:
every step runs, Stage 2 conserves its pairs, nothing held out is trained on, the report compares the
three reward models with intervals, and a second run skips every finished step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synpref.io import read_json_records

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "examples/two-stage/run.sh"
TINY = {  # a few pairs, short texts: the pipeline's plumbing with real models, not its effect
    "POOL_PAIRS": "10", "SEED_PAIRS": "4", "GOLD_PAIRS": "6", "HELDOUT_PAIRS": "6", "MAX_LENGTH": "64",
    "K_MAX": "1", "MAX_EXAMPLES": "1", "JOBS": "2",
    "TRAIN_FLAGS": "--train-layers 0 --lr 1e-3 --global-batch 4 --epochs 2 --schedule constant --eval-every 2",
    "JUDGE_FLAGS": "--both-orders --aggregate mean --max-chars 120 --example-chars 60",
    "ATTRIBUTE_FLAGS": "--max-tokens 4 --max-chars 120",
}


def ids(path: Path) -> set[str]:
    return {record["id"] for record in read_json_records(str(path))} if path.exists() else set()


def prompts(path: Path) -> set[str]:
    return {json.dumps(record["conversation"]) for record in read_json_records(str(path))}


@pytest.mark.slow
def test_two_stage_runs_to_the_report_and_a_rerun_skips_every_step(tmp_path: Path):
    out = tmp_path / "two-stage"
    env = {**os.environ, **TINY, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env.pop("SYNPREF_STATE_CACHE", None)
    done = subprocess.run(["bash", str(RUN), "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    steps = [line.split("\t")[0] for line in (out / "timings.tsv").read_text().splitlines()]
    assert set(steps) >= {"data", "preprocess", "attributes", "indexes", "rm-init", "gold-rm", "stage1-1-train",
                          "stage1-1-retrieve", "stage1-1-judge", "stage1-1-grow", "stage2-route", "stage2-judge",
                          "stage2-filter", "curated", "train-raw", "train-curated", "report"}
    assert len(steps) == len(set(steps))

    # Stage 2: every routed pair is kept or removed, once; the judged ones carry the judge's labels
    routed = ids(out / "stage2/confident.jsonl.zst") | ids(out / "stage2/unconfident.jsonl.zst")
    assert routed == ids(out / "pool.jsonl.zst")
    kept, removed = ids(out / "stage2/kept.jsonl.zst"), ids(out / "stage2/removed.jsonl.zst")
    assert kept | removed == routed and not kept & removed
    judged = list(read_json_records(str(out / "stage2/judged.jsonl.zst")))
    assert {r["id"] for r in judged} == ids(out / "stage2/unconfident.jsonl.zst")
    assert all(any(label["by"].startswith("llm:smollm2") for label in r["labels"]) for r in judged)
    assert f"conservation: confident {len(routed) - len(judged)} + judged {len(judged)}" in done.stdout

    # nothing the report measures was trained on: no held-out prompt in the sets the RMs learned from
    heldout = prompts(out / "heldout.jsonl.zst")
    for trained in ("curated", "raw", "gold"):
        assert not heldout & prompts(out / f"{trained}.jsonl.zst"), trained

    # the report: the three RMs and the length baseline on every held-out pair, with 95% intervals
    report = json.loads((out / "report/report.json").read_text())
    text = json.dumps(report)
    for column in ("untrained", "raw-pool", "curated", "length-baseline"):
        assert column in text, column
    assert list((out / "report").glob("*.png"))
    scored = list(read_json_records(str(out / "heldout-scored.jsonl.zst")))
    assert len(scored) == len(ids(out / "heldout.jsonl.zst"))
    assert all({"untrained", "raw-pool", "curated"} <= set(r["scores"]) for r in scored)
    for name in ("raw", "curated"):
        training = json.loads((out / f"rm-{name}/best/training.json").read_text())
        assert 0 <= training["gold_accuracy"] <= 1

    # a second run skips every step and prints the same report
    again = subprocess.run(["bash", str(RUN), "--out", str(out)], env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done, skipped") == len(steps)
    assert (out / "report.txt").read_text() in again.stdout

    # other settings into the same folder are refused, naming the folder
    other = subprocess.run(["bash", str(RUN), "--out", str(out)], env={**env, "POOL_PAIRS": "11"},
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 2 and str(out) in other.stderr
