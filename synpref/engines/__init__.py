"""Everything that runs a model, behind three small protocols the stages call.

- `RewardEngine`: scalar rewards of tokenized (conversation + reply) groups (`score`, `eval`,
  `train-rm`'s gold evaluation, `filter-consistent`). Implementations: `torch_reward.TorchRewardEngine`
  (packed rows on CPU, token-budget batches and bf16 on CUDA), `vllm_reward.VllmRewardEngine`;
  `reward.RewardScorer` pairs one with the model's formatter.
- `GenerationEngine`: text generation and next-token log-probabilities of candidate strings
  (`annotate`). Implementations: `torch_generate.TorchGenerationEngine`, `vllm_generate`,
  `openai_generate.OpenAIGenerationEngine`; `generation.generation_engine` picks one.
- `EmbeddingEngine`: sentence embeddings (`retrieve`). Implementation: `torch_embed.TorchEmbeddingEngine`.

Shared pieces: `batching` (length-sorted token-budget batches), `packing` (unpadded rows of blocks
with attention per block), `bf16` (bf16 matmuls on CPU with fp32 re-checks). Stages import the
protocol they need and a constructor; nothing outside this package touches torch or vLLM directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from synpref.models.formatting import EncodedGroup, Message

Progress = Callable[[int, int], None]  # (items done, tokens done)
Prompt = str | Sequence[Message]  # raw text, or chat messages rendered with the model's template


class RewardEngine(Protocol):
    def score(self, groups: Sequence[EncodedGroup], progress: Progress | None = None) -> list[list[float]]:
        """Rewards of every sequence of every group, in the order given."""
        ...


class GenerationEngine(Protocol):
    def generate(
        self,
        prompts: Sequence[Prompt],
        n: int = 1,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
        seed: int = 0,
    ) -> list[list[str]]:
        """N completions of each prompt (greedy at temperature 0), each cut before its first stop string."""
        ...

    def candidate_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        """log P(candidate | prompt) of each candidate string after each prompt (summed over its tokens)."""
        ...


class EmbeddingEngine(Protocol):
    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> Any:
        """(len(texts), dim) float32 array of L2-normalized embeddings."""
        ...
