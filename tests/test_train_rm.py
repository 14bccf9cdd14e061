"""`synpref train-rm`: packed-path parity with a plain padded forward, the loop on real pairs, best
checkpoint selection, kill-and-resume, data parallel, and the result loading in `synpref score`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from synpref.cli import cli
from synpref.io import iter_raw, read_json_records, write_records
from synpref.records import normalize

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "data"


def _pairs(path: Path, count: int, limit_chars: int = 500, skip: int = 0) -> list[dict]:
    """Single-turn real pairs of at most LIMIT_CHARS reply characters (short: CPU training is slow)."""
    records = (normalize(raw.parse()) for raw in iter_raw(str(path)))
    short = [r for r in records if len(r["conversation"]) == 1 and len(r["chosen"]) + len(r["rejected"]) < limit_chars]
    return short[skip : skip + count]


@pytest.fixture(scope="module")
def hh(tmp_path_factory) -> tuple[Path, Path]:
    """48 short real hh-harmless pairs to train on and 16 others as gold: cheap enough to train
    several times (resume, data parallel)."""
    records = _pairs(EXAMPLES / "hh-harmless-base-test.jsonl.zst", 64)
    folder = tmp_path_factory.mktemp("hh")
    write_records(records[:48], str(folder / "train.jsonl.zst"))
    write_records(records[48:], str(folder / "gold.jsonl.zst"))
    return folder / "train.jsonl.zst", folder / "gold.jsonl.zst"


@pytest.fixture(scope="module")
def arena(tmp_path_factory) -> tuple[Path, Path]:
    """Train and gold streams from arena-bench-v1 score pairs, split by question (no shared prompt)."""
    records = _pairs(EXAMPLES / "arena-bench-v1-score-pairs.jsonl.zst", 10_000, limit_chars=1500)
    questions = sorted({r["conversation"][0]["content"] for r in records})
    gold_questions = set(questions[::4])
    folder = tmp_path_factory.mktemp("arena")
    train = [r for r in records if r["conversation"][0]["content"] not in gold_questions]
    gold = [r for r in records if r["conversation"][0]["content"] in gold_questions]
    assert len(train) >= 96 and len(gold) >= 30
    write_records(train, str(folder / "train.jsonl.zst"))
    write_records(gold, str(folder / "gold.jsonl.zst"))
    return folder / "train.jsonl.zst", folder / "gold.jsonl.zst"


def _train_command(model: Path, train: Path, gold: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "synpref", "train-rm", "-m", str(model), "--train", str(train), "--gold",
            str(gold), "-o", str(out), *extra]


def _log(out: Path) -> list[dict]:
    return [orjson.loads(line) for line in (out / "train-log.jsonl").read_bytes().splitlines()]


def test_frozen_features_are_the_states_score_computes_even_with_dropout(smollm2_rm, examples, tmp_path):
    """The frozen-backbone features (and what they put in the shared state cache) are eval-mode
    states: a trainer's model is in train mode, where dropout would make every state a draw."""
    import json

    import torch

    from synpref.engines.torch_reward import TorchRewardEngine
    from synpref.engines.torch_train import FrozenFeatures
    from synpref.models.formatting import PairFormatter

    for name in os.listdir(smollm2_rm):  # the same RM with dropout on (SmolLM2 itself has none)
        if name != "config.json":
            os.symlink(smollm2_rm / name, tmp_path / name)
    config = json.loads((smollm2_rm / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.5}))
    engine = TorchRewardEngine(str(tmp_path), train=True)
    formatter = PairFormatter(engine.tokenizer)
    groups = [formatter.encode_group(r["conversation"], [r["chosen"], r["rejected"]])
              for r in _pairs(examples / "hh-harmless-base-test.jsonl.zst", 2)]
    engine.model.eval()
    with torch.no_grad():
        reference = engine.reply_states(groups)
    engine.model.train()
    with torch.no_grad():
        assert not torch.allclose(engine.reply_states(groups), reference)  # dropout is really on
    features = torch.cat(FrozenFeatures(engine, groups).states)
    assert engine.model.training  # left as it was
    torch.testing.assert_close(features, reference, rtol=1e-5, atol=1e-6)


def test_packed_loss_and_gradients_equal_a_padded_forward(smollm2_rm, examples):
    """The packed CPU rows (several pairs, conversation once, replies behind a block mask) give the
    loss and gradients of a plain padded forward of each sequence, within 1e-5 relative (fp32)."""
    import torch

    from synpref.engines.torch_train import RewardModelTrainer, TrainPair
    from synpref.models.formatting import PairFormatter

    trainer = RewardModelTrainer(str(smollm2_rm), lr=1e-5, total_steps=1)
    formatter = PairFormatter(trainer.engine.tokenizer)
    pairs = [TrainPair(formatter.encode_group(r["conversation"], [r["chosen"], r["rejected"]]))
             for r in _pairs(examples / "hh-harmless-base-test.jsonl.zst", 3)]
    assert trainer.engine.packed and trainer.engine.batch_cost([p.group for p in pairs]) <= 1024  # one row
    rewards = trainer._rewards(pairs, None)
    packed_loss = -torch.nn.functional.logsigmoid(rewards[:, 0] - rewards[:, 1]).mean()
    packed_loss.backward()
    packed = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    trainer.model.zero_grad()

    model, pad = trainer.model, trainer.engine.pad_id
    sequences = [s for pair in pairs for s in pair.group.sequences]
    width = max(map(len, sequences))
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    plain = model(input_ids=ids, attention_mask=mask).logits[:, 0].view(-1, 2)
    plain_loss = -torch.nn.functional.logsigmoid(plain[:, 0] - plain[:, 1]).mean()
    plain_loss.backward()
    assert abs(packed_loss.item() - plain_loss.item()) <= 1e-5 * abs(plain_loss.item())
    names = [name for name, _ in model.named_parameters()]
    reference = torch.cat([parameter.grad.reshape(-1) for parameter in model.parameters()])
    difference = torch.cat([packed[name].reshape(-1) for name in names]) - reference
    assert difference.norm().item() <= 1e-5 * reference.norm().item()  # the whole gradient vector
    for name, parameter in model.named_parameters():  # and each tensor, within fp32 summation-order noise
        assert (packed[name] - parameter.grad).norm().item() <= 5e-5 * parameter.grad.norm().item() + 1e-12, name


@pytest.mark.slow
def test_training_learns_keeps_the_best_and_scores(runner, smollm2_rm, arena, tmp_path):
    train, gold = arena
    out = tmp_path / "run"
    options = ["--train-layers", "0", "--lr", "2e-3", "--global-batch", "16", "--epochs", "3", "--eval-every", "5",
               "--schedule", "constant", "--max-length", "256"]
    result = subprocess.run(_train_command(smollm2_rm, train, gold, out, *options), env=ENV, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    log = _log(out)
    losses = [entry["loss"] for entry in log if "loss" in entry]
    evaluations = [(entry["step"], entry["gold_accuracy"]) for entry in log if "gold_accuracy" in entry]
    steps = -(-len(list(read_json_records(str(train)))) // 16) * 3
    assert len(losses) == steps and sum(losses[-5:]) < sum(losses[:5])
    assert evaluations[0][0] == 0 and max(a for _, a in evaluations) > evaluations[0][1]
    metadata = orjson.loads((out / "best" / "training.json").read_bytes())
    best_step, best_accuracy = max(evaluations, key=lambda e: (e[1], -e[0]))
    assert (metadata["step"], metadata["gold_accuracy"]) == (best_step, best_accuracy)
    assert metadata["options"]["inputs"]["train"][0].startswith("sha256:")
    assert (out / "train-log.png").stat().st_size > 1000 and (out / ".done").exists()
    assert not (out / "checkpoint").exists()

    # the best checkpoint loads in `synpref score` and reproduces the logged gold accuracy
    scored = tmp_path / "scored.jsonl.zst"
    assert runner.invoke(cli, ["score", "-m", str(out / "best"), str(gold), "-o", str(scored),
                               "--max-length", "256"]).exit_code == 0
    entries = [record["scores"]["best"] for record in read_json_records(str(scored))]
    accuracy = sum((e["chosen"] > e["rejected"]) + 0.5 * (e["chosen"] == e["rejected"]) for e in entries) / len(entries)
    assert accuracy == pytest.approx(best_accuracy, abs=1.5 / len(entries))

    again = subprocess.run(_train_command(smollm2_rm, train, gold, out, *options), env=ENV, capture_output=True,
                           text=True)
    assert again.returncode == 0 and "already trained" in again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_kill_and_resume_ends_with_the_weights_of_an_uninterrupted_run(smollm2_rm, hh, tmp_path, how):
    from safetensors.torch import load_file

    train, gold = hh
    options = ["--train-layers", "0", "--lr", "1e-3", "--global-batch", "4", "--epochs", "2", "--eval-every", "7",
               "--save-every", "2"]
    whole = tmp_path / "whole"
    subprocess.run(_train_command(smollm2_rm, train, gold, whole, *options), env=ENV, check=True,
                   capture_output=True)
    resumed = tmp_path / "resumed"
    process = subprocess.Popen(_train_command(smollm2_rm, train, gold, resumed, *options), env=ENV,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (resumed / "checkpoint" / "state.pt").exists():
        time.sleep(0.05)
    process.send_signal(how)
    assert process.wait(timeout=120) != 0
    assert not (resumed / ".done").exists()
    result = subprocess.run(_train_command(smollm2_rm, train, gold, resumed, *options), env=ENV,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    first, second = load_file(str(whole / "best" / "model.safetensors")), load_file(str(resumed / "best" / "model.safetensors"))
    assert first.keys() == second.keys()
    for name in first:
        assert (first[name] - second[name]).abs().max().item() <= 1e-6, name
    assert [e for e in _log(whole) if "gold_accuracy" in e] == [e for e in _log(resumed) if "gold_accuracy" in e]


DATA_PARALLEL = ["--train-layers", "1", "--lr", "1e-4", "--global-batch", "4", "--eval-every", "100",
                 "--warmup-ratio", "0"]


@pytest.fixture(scope="module")
def one_process(smollm2_rm, hh, tmp_path_factory) -> tuple[Path, list[float]]:
    """24 pairs trained in one process: the reference of the data-parallel runs, and its losses."""
    _, gold = hh
    folder = tmp_path_factory.mktemp("one")
    small = folder / "small.jsonl.zst"
    write_records(list(read_json_records(str(hh[0])))[:24], str(small))
    subprocess.run(_train_command(smollm2_rm, small, gold, folder / "run", *DATA_PARALLEL), env=ENV, check=True,
                   capture_output=True)
    return folder / "run", [e["loss"] for e in _log(folder / "run") if "loss" in e]


def _two_processes(model: Path, train: Path, gold: Path, out: Path, *extra: str, port: int) -> subprocess.Popen:
    """`synpref train-rm` through the SLURM script, run here as on one node with 2 "GPUs" (gloo on CPU)."""
    script = Path(__file__).resolve().parent.parent / "bin" / "train-rm.sbatch"
    env = {**ENV, "GPUS_PER_NODE": "2", "MASTER_PORT": str(port), "PATH": f"{Path(sys.executable).parent}:{ENV['PATH']}"}
    return subprocess.Popen(["bash", str(script), str(model), str(train), str(gold), str(out), *DATA_PARALLEL, *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _same_weights(first: Path, second: Path) -> None:
    from safetensors.torch import load_file

    a, b = load_file(str(first / "best" / "model.safetensors")), load_file(str(second / "best" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] - b[name]).abs().max().item() <= 1e-5, name


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["none", "optimizer"], ids=["ddp", "zero1"])
def test_two_process_data_parallel_equals_one_process(smollm2_rm, hh, one_process, tmp_path, sharding):
    """Two processes follow the loss curve of one process with the same global batch, also with the
    optimizer state sharded (ZeRO-1, checkpointing every step so that the sharded state is gathered)."""
    reference, losses = one_process
    small = reference.parent / "small.jsonl.zst"
    two = tmp_path / "two"
    process = _two_processes(smollm2_rm, small, hh[1], two, "--sharding", sharding, "--save-every", "1",
                             port={"none": 29533, "optimizer": 29536}[sharding])
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    assert len(losses) == 6 and losses == pytest.approx([e["loss"] for e in _log(two) if "loss" in e], rel=1e-4)
    _same_weights(reference, two)


@pytest.mark.slow
def test_fsdp_preempted_and_resumed_equals_one_process(smollm2_rm, hh, one_process, tmp_path):
    """FSDP (weights, gradients and AdamW state split over 2 processes): SIGTERM after the first
    checkpoint, then the same command; the loss curve and the best weights equal one process's."""
    reference, losses = one_process
    small = reference.parent / "small.jsonl.zst"
    out = tmp_path / "fsdp"
    process = _two_processes(smollm2_rm, small, hh[1], out, "--sharding", "model", "--save-every", "1", port=29539)
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "checkpoint" / "state.pt").exists() and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)  # as SLURM signals every process of the job
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0 and not (out / ".done").exists(), stderr[-3000:]
    again = _two_processes(smollm2_rm, small, hh[1], out, "--sharding", "model", "--save-every", "1", port=29545)
    _, stderr = again.communicate(timeout=900)
    assert again.returncode == 0 and "resuming" in stderr, stderr[-3000:]
    assert len(losses) == 6 and losses == pytest.approx([e["loss"] for e in _log(out) if "loss" in e], rel=1e-4)
    _same_weights(reference, out)
