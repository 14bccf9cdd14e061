"""A reward model ready to score: its engine plus the formatter it was trained with.

    scorer = RewardScorer("rm/", engine="torch", batch_tokens=None, max_length=None,
                          quantize=None, device=None, prefix_reuse="auto")
    # batch_tokens=None: 8192 padded tokens per batch on CUDA; on CPU pairs packed without padding
    # into rows of 1024 tokens (one pair per row with batch_tokens=1)
    # quantize="bf16": CPU bf16 matmuls, close calls re-scored in fp32 (see TorchRewardEngine.score)
    # max_length=None: the model's context (`context_length`); longer pairs are truncated and marked
    # state_cache="DIR": last-layer states shared by RMs of one backbone (synpref.engines.state_cache)
    scorer.rewards([(conversation, reply), ...])              -> list[float]   # any replies
    scorer.group_rewards([(conversation, [r1, r2, r3, r4]), ...]) -> list[list[float]]  # best-of-N
    scorer.iter_group_rewards(groups)                          -> Iterator[GroupReward]  # streaming

`conversation` is a list of {"role", "content"} messages before the final reply (the canonical
record's field). Replies of one group share their conversation, so the torch engine computes it
once. Results come back in input order whatever the batch size.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from synpref.engines import Progress, RewardEngine
from synpref.engines.torch_reward import DEFAULT_RECHECK_MARGIN, TorchRewardEngine
from synpref.models.formatting import Message, PairFormatter, context_length

DEFAULT_WINDOW = 256  # groups sorted together; also the resume granularity of `synpref score -o`

Group = tuple[Sequence[Message], Sequence[str]]


@dataclass
class GroupReward:
    """Rewards of one conversation's replies, in the order given, with how the text was truncated."""

    rewards: list[float]
    truncated: str | None = None
    dropped_turns: int = 0


class RewardScorer:
    """A loaded reward model plus its formatter: rewards for (conversation, reply) items or groups."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        engine: str = "torch",
        batch_tokens: int | None = None,
        max_length: int | None = None,
        quantize: str | None = None,
        device: str | None = None,
        prefix_reuse: str = "auto",
        window: int = DEFAULT_WINDOW,
        recheck_margin: float = DEFAULT_RECHECK_MARGIN,
        state_cache: str | None = None,
        **engine_options: Any,
    ):
        from synpref.models.tokenizer import load_tokenizer

        model_dir = os.fspath(model_dir)
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"reward model directory does not exist: {model_dir}")
        self.model_dir, self.window = model_dir, window
        if engine == "torch":
            self.engine: RewardEngine = TorchRewardEngine(
                model_dir, batch_tokens, device, quantize, prefix_reuse, recheck_margin, state_cache=state_cache
            )
            tokenizer, config = self.engine.tokenizer, self.engine.model.config
        elif engine == "vllm":
            from synpref.engines.vllm_reward import VllmRewardEngine

            if quantize is not None or state_cache is not None:
                raise ValueError(f"{'quantize' if quantize else 'state_cache'} is an option of the torch engine")
            self.engine = VllmRewardEngine(model_dir, max_model_len=max_length, **engine_options)
            from transformers import AutoConfig

            tokenizer = load_tokenizer(model_dir)
            config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        else:
            raise ValueError(f"unknown engine {engine!r} (torch or vllm)")
        self.formatter = PairFormatter(tokenizer, max_length or context_length(config, tokenizer))

    def iter_group_rewards(
        self, groups: Iterable[Group], progress: Progress | None = None
    ) -> Iterator[GroupReward]:
        """Rewards per group, streaming in input order; `window` groups are sorted and batched together."""
        iterator = iter(groups)
        while chunk := list(islice(iterator, self.window)):
            encoded = [self.formatter.encode_group(conversation, replies) for conversation, replies in chunk]
            for group, rewards in zip(encoded, self.engine.score(encoded, progress), strict=True):
                yield GroupReward(rewards, group.truncated, group.dropped_turns)

    def group_rewards(self, groups: Iterable[Group]) -> list[list[float]]:
        """Rewards of each group's replies (e.g. best-of-N candidates of one prompt)."""
        return [result.rewards for result in self.iter_group_rewards(groups)]

    def rewards(self, items: Iterable[tuple[Sequence[Message], str]]) -> list[float]:
        """One reward per (conversation, reply), in order."""
        return [result.rewards[0] for result in self.iter_group_rewards((c, [r]) for c, r in items)]
