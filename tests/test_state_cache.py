"""The last-layer state cache (`--state-cache`): cached scoring equals uncached scoring and runs no
backbone forward, another head on the same backbone reads the same states, the fingerprint follows the
backbone's weights, frozen-backbone training is unchanged by it, and concurrent or torn files read back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from synpref.cli import cli
from synpref.engines import state_cache
from synpref.engines.reward import RewardScorer
from synpref.engines.state_cache import StateCache, cached_groups
from synpref.engines.torch_reward import TorchRewardEngine
from synpref.io import iter_raw, read_json_records, write_records
from synpref.records import normalize

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "data"
MAX_LENGTH = 64


def _shortest(count: int, skip: int = 0) -> list[dict]:
    """The shortest real hh-harmless pairs (each sequence fits MAX_LENGTH tokens: a cheap forward)."""
    records = [normalize(raw.parse()) for raw in iter_raw(str(EXAMPLES / "hh-harmless-base-test.jsonl.zst"))]
    records = [r for r in records if r["chosen"] and r["rejected"] and r["chosen"] != r["rejected"]]
    records.sort(key=lambda r: len(orjson.dumps([r["conversation"], r["chosen"], r["rejected"]])))
    return records[skip : skip + count]


def _groups(records: list[dict]) -> list:
    return [(r["conversation"], [r["chosen"], r["rejected"]]) for r in records]


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch):
    """Each test opens caches as a new process would: read from disk, not this process's open ones."""
    monkeypatch.setattr(state_cache, "_OPEN", {})


@pytest.fixture
def forwards(monkeypatch) -> list[int]:
    """Counts backbone forwards of every torch reward engine (scoring and training)."""
    calls: list[int] = []
    original = TorchRewardEngine._backbone

    def counted(self, read_rows, **inputs):
        calls.append(inputs["input_ids"].shape[-1])
        return original(self, read_rows, **inputs)

    monkeypatch.setattr(TorchRewardEngine, "_backbone", counted)
    return calls


@pytest.fixture(scope="module")
def scorer(smollm2_rm) -> RewardScorer:
    return RewardScorer(smollm2_rm, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return _shortest(6)


def _rewards(scorer: RewardScorer, pairs: list[dict], cache: str | None) -> list[list[float]]:
    scorer.engine.state_cache = cache
    try:
        return scorer.group_rewards(_groups(pairs))
    finally:
        scorer.engine.state_cache = None


def _close(a: list[list[float]], b: list[list[float]]) -> bool:
    import numpy as np

    return np.allclose(np.array(a), np.array(b), rtol=0, atol=1e-5)


def test_cold_cache_scores_as_without_and_warm_runs_no_forward(scorer, pairs, forwards, tmp_path, runner):
    cache = str(tmp_path / "cache")
    plain = _rewards(scorer, pairs, None)
    assert forwards
    forwards.clear()
    cold = _rewards(scorer, pairs, cache)
    assert forwards and _close(cold, plain)
    entries = [p for p in Path(cache).rglob("*.states")]
    assert len(entries) == 1 and len(entries[0].read_bytes().splitlines()) == 2 * len(pairs)

    state_cache._OPEN.clear()  # a new process: the states come from disk
    forwards.clear()
    progress: list[int] = []
    scorer.engine.state_cache = cache
    try:
        warm = scorer.engine.score([scorer.formatter.encode_group(*g) for g in _groups(pairs)],
                                   lambda done, tokens: progress.append(done))
    finally:
        scorer.engine.state_cache = None
    assert _close(warm, cold) and not forwards and sum(progress) == len(pairs)

    # the CLI reads the cache from the environment; with --engine vllm an explicit flag is a usage error
    state_cache._OPEN.clear()
    write_records(pairs, str(tmp_path / "pairs.jsonl.zst"))
    result = runner.invoke(cli, ["score", "-m", str(scorer.model_dir), "--name", "rm", "--max-length",
                                 str(MAX_LENGTH), str(tmp_path / "pairs.jsonl.zst"), "-o", str(tmp_path / "out.jsonl.zst")],
                           env={"SYNPREF_STATE_CACHE": cache})
    assert result.exit_code == 0, result.output
    scored = list(read_json_records(str(tmp_path / "out.jsonl.zst")))
    assert not forwards
    assert _close([[r["scores"]["rm"]["chosen"], r["scores"]["rm"]["rejected"]] for r in scored], plain)
    refused = runner.invoke(cli, ["score", "-m", str(scorer.model_dir), "--engine", "vllm", "--state-cache", cache,
                                  str(tmp_path / "pairs.jsonl.zst")])
    assert refused.exit_code == 2 and "--state-cache" in refused.output


def test_another_head_on_the_same_backbone_reads_the_cache(scorer, pairs, forwards, tmp_path):
    """A second RM that differs only in its head (as `rm init --seed 2` or a `--train-layers 0` run
    differ) gets its own rewards from the first RM's cached states."""
    import torch

    cache = str(tmp_path / "cache")
    first = _rewards(scorer, pairs, cache)
    head = scorer.engine.head.weight
    saved = head.detach().clone()
    try:
        with torch.no_grad():
            head.copy_(torch.randn(head.shape, generator=torch.Generator().manual_seed(2)) * 0.05)
        state_cache._OPEN.clear()
        forwards.clear()
        cached = _rewards(scorer, pairs, cache)
        assert not forwards
        fresh = _rewards(scorer, pairs, None)
    finally:
        with torch.no_grad():
            head.copy_(saved)
    assert _close(cached, fresh) and not _close(cached, first)


def test_fingerprint_follows_the_backbone_weights_not_the_head(scorer, tmp_path):
    import torch

    engine = scorer.engine
    config = engine.model.config.to_dict()
    digest = state_cache.weights_digest(engine.backbone, config)
    weight = engine.backbone.layers[3].mlp.down_proj.weight
    with torch.no_grad():
        engine.head.weight.add_(1.0)
        assert state_cache.weights_digest(engine.backbone, config) == digest
        engine.head.weight.sub_(1.0)
        weight[0, 0] += 1e-3
        try:
            assert state_cache.weights_digest(engine.backbone, config) != digest
        finally:
            weight[0, 0] -= 1e-3
    assert state_cache.weights_digest(engine.backbone, config) == digest
    assert state_cache.weights_digest(engine.backbone, {**config, "rms_norm_eps": 1e-6}) != digest
    assert state_cache.fingerprint(digest, "cpu:plain") != state_cache.fingerprint(digest, "cpu:bf16-matmuls")


@pytest.mark.slow
def test_bf16_matmuls_keep_their_own_states(smollm2_rm, pairs, forwards, tmp_path):
    """--quantize bf16 states live apart from fp32 ones (its fp32 re-checks use the fp32 cache), and a
    warm bf16 run gives the cold run's rewards without a forward."""
    cache = str(tmp_path / "cache")
    bf16 = RewardScorer(smollm2_rm, max_length=MAX_LENGTH, quantize="bf16", recheck_margin=1.0)  # re-check all
    pairs = pairs[:2]
    plain = _rewards(bf16, pairs, None)
    cold = _rewards(bf16, pairs, cache)
    assert _close(cold, plain) and len(list(Path(cache).iterdir())) == 2  # bf16 and fp32 fingerprints
    state_cache._OPEN.clear()
    forwards.clear()
    assert _close(_rewards(bf16, pairs, cache), cold) and not forwards


def _train(runner, model: Path, train: Path, gold: Path, out: Path, *extra: str) -> dict:
    result = runner.invoke(cli, ["train-rm", "-m", str(model), "--train", str(train), "--gold", str(gold), "-o",
                                 str(out), "--train-layers", "0", "--lr", "1e-2", "--global-batch", "4",
                                 "--max-length", str(MAX_LENGTH), "--eval-every", "1", "--warmup-ratio", "0",
                                 *extra])
    assert result.exit_code == 0, result.output
    log = [orjson.loads(line) for line in (out / "train-log.jsonl").read_bytes().splitlines()]
    training = orjson.loads((out / "best" / "training.json").read_bytes())
    return {"log": [{k: v for k, v in e.items() if not k.endswith("_per_s")} for e in log],
            "best": (training["step"], training["gold_accuracy"])}


@pytest.mark.slow
def test_frozen_backbone_training_is_unchanged_and_a_second_run_skips_the_forward(
        runner, smollm2_rm, forwards, tmp_path):
    records = _shortest(12, skip=6)
    write_records(records[:8], str(tmp_path / "train.jsonl.zst"))
    write_records(records[8:], str(tmp_path / "gold.jsonl.zst"))
    train, gold, cache = tmp_path / "train.jsonl.zst", tmp_path / "gold.jsonl.zst", str(tmp_path / "cache")
    plain = _train(runner, smollm2_rm, train, gold, tmp_path / "plain")
    cold = _train(runner, smollm2_rm, train, gold, tmp_path / "cold", "--state-cache", cache)
    assert cold == plain and len(plain["log"]) > 2
    state_cache._OPEN.clear()
    forwards.clear()
    warm = _train(runner, smollm2_rm, train, gold, tmp_path / "warm", "--state-cache", cache)
    assert not forwards and warm == plain
    # the trained head's output shares the fingerprint: its scoring reads the same states
    trained = TorchRewardEngine(str(tmp_path / "warm" / "best"))
    assert trained.open_state_cache(cache).path == TorchRewardEngine(str(smollm2_rm)).open_state_cache(cache).path


WRITER = """
import sys, torch
from synpref.engines.state_cache import StateCache
directory, writer = sys.argv[1], int(sys.argv[2])
cache = StateCache(directory, "fp", 8)
for frame in range(40):
    keys = [cache.key([writer, frame, i]) for i in range(5)]
    cache.put(keys, torch.tensor([[writer * 1000 + frame * 10 + i + d / 8 for d in range(8)] for i in range(5)]))
"""


def _expected(writer: int, frame: int, i: int) -> list[float]:
    return [writer * 1000 + frame * 10 + i + d / 8 for d in range(8)]


def test_concurrent_writers_and_a_torn_tail_read_back(tmp_path):
    directory = str(tmp_path / "cache")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-c", WRITER, directory, str(w)], env=env) for w in (1, 2)]
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    files = sorted(Path(directory, "fp").glob("*.states"))
    assert len(files) == 2  # one file per process, written side by side
    with open(files[0], "ab") as handle:
        handle.write(files[0].read_bytes()[:100])  # a torn last entry, as a kill mid-write leaves
    cache = StateCache(directory, "fp", 8)
    assert len(cache) == 2 * 40 * 5
    keys = [StateCache.key([w, f, i]) for w in (1, 2) for f in range(40) for i in range(5)]
    assert cache.get(keys).tolist() == [_expected(w, f, i) for w in (1, 2) for f in range(40) for i in range(5)]

    import torch

    cache.put([StateCache.key([3, 0, 0])], torch.tensor([_expected(3, 0, 0)]))  # adopts a file, cuts its tail
    assert sorted(Path(directory, "fp").glob("*.states")) == files
    assert all(len(line) == cache.line for f in files for line in f.read_bytes().splitlines())
    again = StateCache(directory, "fp", 8)
    assert len(again) == 2 * 40 * 5 + 1 and again.get([StateCache.key([3, 0, 0])]).tolist() == [_expected(3, 0, 0)]


def test_a_lookup_that_misses_reads_what_another_process_appended_since(tmp_path):
    """A later stage of a pipe opens the cache before the earlier stage has stored the states it needs."""
    import torch

    directory = str(tmp_path / "cache")
    reader = StateCache(directory, "fp", 8)
    sequences = [[[1, 2], [1, 3]], [[4, 5], [4, 6]]]
    assert cached_groups(reader, sequences)[1] == [False, False]
    writer = StateCache(directory, "fp", 8)  # as another process: its own instance and file
    writer.put([StateCache.key(s) for s in sequences[0]], torch.tensor([_expected(1, 0, 0), _expected(1, 0, 1)]))
    keys, cached = cached_groups(reader, sequences)
    assert cached == [True, False]
    assert reader.get(keys[0]).tolist() == [_expected(1, 0, 0), _expected(1, 0, 1)]


@pytest.mark.slow
def test_eval_pairs_with_two_models_of_one_backbone_runs_the_forward_once(smollm2_rm, pairs, forwards, tmp_path,
                                                                          runner):
    write_records(pairs, str(tmp_path / "pairs.jsonl.zst"))
    model = str(smollm2_rm)
    result = runner.invoke(cli, ["eval", "pairs", "-m", f"a={model}", "-m", f"b={model}", "--max-length",
                                 str(MAX_LENGTH), "--json", "--state-cache", str(tmp_path / "cache"),
                                 str(tmp_path / "pairs.jsonl.zst")])
    assert result.exit_code == 0, result.output
    sequences = sum(forwards)  # tokens through the backbone
    forwards.clear()
    plain = runner.invoke(cli, ["eval", "pairs", "-m", f"a={model}", "--max-length", str(MAX_LENGTH), "--json",
                                str(tmp_path / "pairs.jsonl.zst")])
    assert plain.exit_code == 0, plain.output
    assert sequences == sum(forwards)  # two models, one model's forward
    assert '"a"' in result.stdout and '"b"' in result.stdout
