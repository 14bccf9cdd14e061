"""How token rows become model input: right-padded batches, or packed unpadded rows of blocks.

A packed row holds several blocks one after another; a block is a shared prefix followed by
replies, each reply seeing only the prefix and itself (a block mask) at the positions it would have
alone. No padding: the fastest layout on CPU, where padded tokens cost as much as real ones.
Attention runs per block (`span_attention`), so the row's off-diagonal blocks are never computed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Block = tuple[list[int], list[list[int]]]  # (shared prefix, replies after it)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, torch: Any) -> tuple[Any, Any]:
    """Right-padded ids and their attention mask."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, tokens in enumerate(rows):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return ids, mask


@dataclass
class Span:
    """One block of a packed row: the prefix starts at `begin`, the replies end at `reply_ends`
    (exclusive); `mask` is its causal block mask, for attention implementations that need one."""

    begin: int
    prefix_end: int
    reply_ends: list[int]
    mask: Any

    def causal_runs(self) -> list[tuple[list[tuple[int, int]], int]]:
        """The block as causal sequences: per reply, the row slices of prefix + reply and how many of
        the run's last positions are that reply's own (the first run also gives the prefix)."""
        runs, start = [], self.prefix_end
        for number, end in enumerate(self.reply_ends):
            if number == 0:
                runs.append(([(self.begin, end)], end - self.begin))
            else:
                runs.append(([(self.begin, self.prefix_end), (start, end)], end - start))
            start = end
        return runs


@dataclass
class PackedRow:
    """One unpadded row: its ids and positions, the last token of every reply (in block order), and
    its blocks (`Span`) for `span_attention`."""

    ids: list[int]
    positions: list[int]
    ends: list[int]
    spans: list[Span]

    def whole_mask(self, torch: Any) -> Any:
        """The row's full (1, 1, n, n) mask: the block masks on the diagonal."""
        return torch.block_diag(*(span.mask[0, 0] for span in self.spans))[None, None]


def pack_blocks(blocks: Sequence[Block], torch: Any, device: str = "cpu") -> PackedRow:
    """Lay BLOCKS out in one row, each reply behind its prefix at the positions it would have alone."""
    row = PackedRow([], [], [], [])
    for prefix, replies in blocks:
        begin = len(row.ids)
        row.ids += prefix
        row.positions += range(len(prefix))
        segment = [0] * len(prefix)
        for number, reply in enumerate(replies, 1):
            row.ids += reply
            row.positions += range(len(prefix), len(prefix) + len(reply))
            segment += [number] * len(reply)
            row.ends.append(len(row.ids) - 1)
        segments = torch.tensor(segment)
        visible = (segments[:, None] == segments[None, :]) | (segments[None, :] == 0)
        mask = torch.ones(len(segment), len(segment), dtype=torch.bool).tril() & visible
        reply_ends = list(itertools.accumulate(map(len, replies), initial=begin + len(prefix)))[1:]
        row.spans.append(Span(begin, begin + len(prefix), reply_ends, mask[None, None].to(device)))
    return row


def span_attention(torch: Any) -> str:
    """Register (once) an SDPA that attends within each block of a packed row separately.

    A packed row holds several pairs; its mask is block-diagonal, and SDPA on the whole row would
    compute every off-diagonal block only to mask it away (4x slower for 4 pairs of ~230 tokens).
    Given `synpref_spans` (the row's `Span`s) from the model call's kwargs (transformers hands them
    to the attention function) it runs each block as causal runs, prefix + one reply each, with
    `is_causal` and no mask: SDPA's flash kernel then skips the masked half and never materializes
    an n x n mask (an 8,192-token reply would need 9 heads x 8,192^2 scores per layer); a second
    reply's run recomputes the prefix's queries, which is cheaper than a masked square. Otherwise
    plain SDPA.
    """
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def attention(module, query, key, value, attention_mask, *args, synpref_spans=None, **kwargs):
        if synpref_spans is None:
            return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
        parts = []
        for span in synpref_spans:
            for slices, own in span.causal_runs():
                run = [torch.cat([t[:, :, a:b] for a, b in slices], dim=2) for t in (query, key, value)]
                out = sdpa_attention_forward(module, *run, None, *args, is_causal=True, **kwargs)[0]
                parts.append(out[:, out.shape[1] - own :])
        return torch.cat(parts, dim=1), None

    AttentionInterface.register("synpref_spans", attention)
    AttentionMaskInterface.register("synpref_spans", sdpa_mask)  # masks it builds: as for SDPA
    return "synpref_spans"
