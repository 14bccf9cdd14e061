"""Reward functions for `synpref eval`, built on `synpref.engines.reward.RewardScorer`: the same model loading,
formatting, length-sorted token-budget batching and shared-prompt reuse as `synpref score`, so an
evaluation scores exactly what the curation pipeline scores."""

from __future__ import annotations

from synpref.eval.pairs import RewardFn


def reward_function(path: str, engine: str = "torch", batch_tokens: int | None = None,
                    max_length: int | None = None, state_cache: str | None = None) -> RewardFn:
    """Rewards for groups (conversation, [reply, ...]) from the model at `path`, loaded on first use
    (so a run whose input already carries every score never loads the model). `state_cache`: last-layer
    states shared by models of one backbone (several -m RMs with one frozen backbone cost ~one forward)."""
    loaded = []

    def rewards(groups: list) -> list:
        if not loaded:
            from synpref.engines.reward import RewardScorer

            # batch_tokens None: the scorer's own default for its device, as `synpref score` uses
            loaded.append(RewardScorer(path, engine=engine, batch_tokens=batch_tokens, max_length=max_length,
                                       state_cache=state_cache))
        return list(loaded[0].iter_group_rewards(groups))

    return rewards
