"""Length-sorted, token-budget batching: written once for every engine.

Items are sorted longest first and cut into batches whose cost stays within a token budget, so
similar lengths share a batch (little padding) and memory per forward stays bounded. The cost is
the engine's: padded tokens (rows x longest) for a padded batch, or the sum of tokens for a packed
row. An item that alone exceeds the budget still forms a batch of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def padded_cost(lengths: Sequence[int]) -> int:
    """Tokens a right-padded batch of sequences of these lengths processes."""
    return len(lengths) * max(lengths, default=0)


def longest_sequence(group: Any) -> int:
    """The sort key of an encoded group (`EncodedGroup`, anything with `sequences`): its longest."""
    return max(map(len, group.sequences))


def token_budget_batches(
    items: Sequence[T], length: Callable[[T], int], cost: Callable[[list[T]], int], budget: int
) -> Iterator[list[int]]:
    """Indexes into ITEMS, longest first, in batches whose `cost` stays within BUDGET."""
    order = sorted(range(len(items)), key=lambda index: -length(items[index]))
    batch: list[int] = []
    for index in order:
        if batch and cost([items[i] for i in [*batch, index]]) > budget:
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch
