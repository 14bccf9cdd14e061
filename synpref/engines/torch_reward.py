"""The torch reward engine: transformers + torch, no grad, on CPU (packed rows) or CUDA (padded batches).

The conversation a group (a pair) shares is computed once where it pays, batches are length-sorted
under a token budget (`synpref.engines.batching`), and the last layer's MLP runs only on the rows
the head reads. The reward is the model's one output at the last token of each sequence. With a
state cache (`synpref.engines.state_cache`), groups whose every sequence is cached cost the head alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from synpref.engines import Progress
from synpref.engines.batching import longest_sequence, padded_cost, token_budget_batches
from synpref.engines.bf16 import add_bf16_weights, closest_gap, use_bf16
from synpref.engines.packing import pack_blocks, pad_rows, span_attention
from synpref.engines.state_cache import (
    StateCache,
    cached_groups,
    fingerprint,
    open_state_cache,
    weights_digest,
)
from synpref.models.formatting import EncodedGroup

# On CPU, rows of 1024 packed tokens (~4 hh pairs) beat one pair per row by 17% in fp32 and 8% in
# bf16 (every forward streams all weights from memory) and 512 or 2048 (100 hh pairs, SmolLM2-135M).
DEFAULT_BATCH_TOKENS = {"cuda": 8192, "cpu": 1024}
PREFIX_GAIN = 0.9  # use the shared-prefix path when it costs under 90% of the full-sequence path
DEFAULT_RECHECK_MARGIN = 0.015  # --quantize bf16: closer rewards are scored again in fp32. Chosen on
# hh pairs 2000-2306 (307, apart from the reported ones): bf16 moves a SmolLM2-135M RM's chosen-rejected
# gap by 0.010 median, 0.023 q90 (fp32 |gap| median 0.15); every gap with every measured error
# predicted 98.1% of fp32 decisions kept at margin 0, 99.3% at 0.01, 99.6% at 0.015 (5% re-scored).
# Measured by bench_score.py on hh pairs 0-1999 in one run: 99.55% kept at 2.77x the naive loop
# (1.44x synpref fp32); on pairs 0-499 margin 0 ran 3.02x and kept 97.6%.


class TorchRewardEngine:
    """transformers + torch: no grad, fp32 on CPU (opt-in bf16 matmuls), bf16 on CUDA.

    On CPU (`packed`), groups are packed into unpadded rows of at most `batch_tokens` tokens: each
    group's shared prefix once (`prefix_reuse` other than "never"), then every reply, each seeing only
    its prefix and itself (a block mask), at the positions it would have alone; attention runs per
    group. One forward streams all weights from memory once, so several pairs per row beat one.
    Padded (CUDA): groups are sorted longest first and cut into batches whose padded token count
    stays under `batch_tokens`; each batch runs either as full sequences, or (`prefix_reuse`) as the
    groups' shared prefixes once, then every reply's remaining tokens on top of the cached keys and
    values; "auto" picks per batch whichever processes fewer padded tokens. Either way the last
    layer's MLP runs only on the rows the head reads.
    """

    def __init__(self, model_dir: str, batch_tokens: int | None = None, device: str | None = None,
                 quantize: str | None = None, prefix_reuse: str = "auto",
                 recheck_margin: float = DEFAULT_RECHECK_MARGIN, train: bool = False,
                 state_cache: str | None = None):
        """`train`: fp32 weights on every device (the trainer autocasts to bf16 on CUDA). `state_cache`:
        a directory of last-layer states shared by models of the same backbone (see `score`)."""
        import torch

        from synpref.models.reward import load_reward_model, reward_head

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") and not train else torch.float32
        self.model, self.tokenizer = load_reward_model(model_dir, dtype=dtype, device=self.device)
        if quantize not in (None, "bf16") or (quantize and self.device != "cpu"):
            raise ValueError("quantize='bf16' is for CPU only (CUDA already runs in bf16)")
        self.recheck_margin = recheck_margin
        if prefix_reuse not in ("auto", "always", "never"):
            raise ValueError(f"prefix_reuse must be auto, always or never, not {prefix_reuse!r}")
        self.backbone = getattr(self.model, self.model.base_model_prefix)
        self.state_cache = state_cache
        self._weights_digest: bytes | None = None
        self._bf16_linears = add_bf16_weights(self.backbone, torch) if quantize == "bf16" else []
        self.low_precision = quantize == "bf16"
        self.head = reward_head(self.model)
        self.packed = self.device == "cpu"
        self.span_attention = self.model.config._attn_implementation == "sdpa"
        if self.span_attention:
            self.model.config._attn_implementation = span_attention(torch)
        self.batch_tokens = (
            batch_tokens or DEFAULT_BATCH_TOKENS["cuda" if self.device.startswith("cuda") else "cpu"]
        )
        self.prefix_reuse = prefix_reuse
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._read_rows: Any = None  # flat (batch * position) rows the head reads in the running forward
        self.trim = True  # off under gradient checkpointing, whose recomputation must see the same shapes
        # the context scoring runs in; FSDP training swaps in no_grad, as its gathered buffers outlive a call
        self.no_grad: Any = torch.inference_mode
        self._trim_last_mlp()

    def _trim_last_mlp(self) -> None:
        """Run the last decoder layer's MLP only on the rows the head reads (other rows come out as
        the residual alone, which nothing reads): an exact saving of most of one layer."""
        layers = getattr(self.backbone, "layers", None)
        mlp = getattr(layers[-1], "mlp", None) if layers else None
        if mlp is None:
            return
        shapes: list[Any] = []

        def before(module: Any, args: tuple) -> tuple | None:
            if self._read_rows is None:
                return None
            shapes[:] = [args[0].shape]
            return (args[0].reshape(-1, args[0].shape[-1])[self._read_rows], *args[1:])

        def after(module: Any, args: tuple, output: Any) -> Any:
            if self._read_rows is None or not isinstance(output, self.torch.Tensor):
                return None
            full = output.new_zeros((*shapes[0][:-1], output.shape[-1]))
            full.view(-1, output.shape[-1])[self._read_rows] = output
            return full

        mlp.register_forward_pre_hook(before)
        mlp.register_forward_hook(after)

    def open_state_cache(self, directory: str, bf16: bool = False) -> StateCache:
        """The state cache of this backbone as it runs here (BF16: under `quantize`'s bf16 matmuls): keyed
        by its weights (computed once, while they are those loaded), device type and matmul precision."""
        if self._weights_digest is None:
            self._weights_digest = weights_digest(self.backbone, self.model.config.to_dict())
        settings = f"{self.torch.device(self.device).type}:{'bf16-matmuls' if bf16 else 'plain'}"
        return open_state_cache(directory, fingerprint(self._weights_digest, settings), self.model.config.hidden_size)

    def _cache(self, bf16: bool) -> StateCache | None:
        return self.open_state_cache(self.state_cache, bf16) if self.state_cache else None

    def score(self, groups: Sequence[EncodedGroup], progress: Progress | None = None) -> list[list[float]]:
        """Rewards for every sequence of every group, in the order given.

        With `state_cache`, a group whose every sequence's state is cached is scored by the head alone;
        the others run the forward and their states are stored. bf16 matmuls and fp32 keep apart caches.

        With `quantize="bf16"` the backbone's matmuls run in bfloat16 (see `_add_bf16_weights`);
        groups whose rewards come within `recheck_margin` of each other, where bf16 noise could flip
        a decision, are scored again in fp32. int8 (per-token activation, per-channel weight scales,
        torch._int_mm on VNNI) ran 2.2x fp32 here but moved gaps 7x more than bf16 (every projection
        type and layer alike): 86% of decisions kept on 80 hh pairs, so it is not offered.
        """
        if not self.low_precision:
            return self._score(groups, progress, self._cache(bf16=False))
        use_bf16(self._bf16_linears, True)
        try:
            results = self._score(groups, progress, self._cache(bf16=True))
        finally:
            use_bf16(self._bf16_linears, False)
        close = [i for i, rewards in enumerate(results) if closest_gap(rewards) < self.recheck_margin]
        if close:
            rechecked = self._score([groups[i] for i in close], None, self._cache(bf16=False))
            for index, rewards in zip(close, rechecked, strict=True):
                results[index] = rewards
        return results

    def _score(
        self, groups: Sequence[EncodedGroup], progress: Progress | None, cache: StateCache | None
    ) -> list[list[float]]:
        results: list[list[float]] = [[] for _ in groups]
        pending, keys = list(range(len(groups))), []
        if cache is not None:
            keys, hit = cached_groups(cache, (group.sequences for group in groups))
            pending = [index for index in pending if not hit[index]]
            self._head_only(groups, [index for index, cached in enumerate(hit) if cached], keys, cache,
                            results, progress)
        todo = [groups[index] for index in pending]
        for batch in token_budget_batches(todo, longest_sequence, self.batch_cost, self.batch_tokens):
            self._run(groups, [pending[i] for i in batch], results, progress, cache, keys)
        return results

    def _head_only(self, groups: Sequence[EncodedGroup], done: list[int], keys: list[list[bytes]],
                   cache: StateCache, results: list[list[float]], progress: Progress | None) -> None:
        """Rewards of the groups whose states are all cached: the head on those states."""
        if not done:
            return
        states = cache.get([key for index in done for key in keys[index]])
        with self.no_grad():
            head = next(self.head.parameters())
            rewards = self.head(states.to(head.device, head.dtype)).float()[:, 0].cpu().tolist()
        self._spread(groups, done, rewards, results, progress)

    def _blocks(self, group: EncodedGroup) -> list[tuple[list[int], list[list[int]]]]:
        """A group as packed blocks of (shared prefix, replies after it)."""
        if self.prefix_reuse == "never" or group.prefix_length == 0:
            return [([], [list(sequence)]) for sequence in group.sequences]
        start = group.prefix_length
        return [(list(group.sequences[0][:start]), [list(s[start:]) for s in group.sequences])]

    def batch_cost(self, batch: Sequence[EncodedGroup]) -> int:
        """Tokens the batch costs: its packed row, or its padded full sequences (the budget that
        scoring and training batches are cut to)."""
        if self.packed:
            if not self.span_attention and len(batch) > 1:
                return self.batch_tokens + 1  # no per-group attention: one group per row
            blocks = [block for group in batch for block in self._blocks(group)]
            return sum(len(prefix) + sum(map(len, replies)) for prefix, replies in blocks)
        return self._cost(batch, prefix=False)

    @staticmethod
    def _cost(batch: Sequence[EncodedGroup], prefix: bool) -> int:
        """Padded tokens the batch costs in one mode (the token budget counts the full mode)."""
        if not prefix:
            return padded_cost([len(sequence) for group in batch for sequence in group.sequences])
        rows = sum(len(group.sequences) for group in batch)
        longest_prefix = max(group.prefix_length for group in batch)
        longest_suffix = max(len(s) - group.prefix_length for group in batch for s in group.sequences)
        return len(batch) * longest_prefix + rows * longest_suffix

    def _run(self, groups: Sequence[EncodedGroup], batch: list[int], results: list[list[float]], progress,
             cache: StateCache | None, keys: list[list[bytes]]) -> None:
        with self.no_grad():
            states = self.reply_states([groups[index] for index in batch])
            if cache is not None:
                cache.put([key for index in batch for key in keys[index]], states)
            rewards = self.head(states).float()[:, 0].cpu().tolist()
        self._spread(groups, batch, rewards, results, progress)

    @staticmethod
    def _spread(groups: Sequence[EncodedGroup], batch: list[int], rewards: list[float],
                results: list[list[float]], progress: Progress | None) -> None:
        """Hand the flat REWARDS of BATCH's groups back to their places in RESULTS; advance PROGRESS."""
        position = 0
        for index in batch:
            count = len(groups[index].sequences)
            results[index] = rewards[position : position + count]
            position += count
        if progress is not None:
            progress(len(batch), sum(len(s) for index in batch for s in groups[index].sequences))

    def rewards(self, members: Sequence[EncodedGroup]) -> Any:
        """(sequences,) fp32 tensor of the rewards of every sequence of MEMBERS, one batch; under
        autograd when the caller enables it (`train-rm` runs this same forward)."""
        return self.head(self.reply_states(members)).float()[:, 0]

    def reply_states(self, members: Sequence[EncodedGroup]) -> Any:
        """(sequences, hidden) last-layer states at the last token of every sequence of MEMBERS: what
        the head reads. Packed rows on CPU; on CUDA shared prefixes once (when it pays and no gradient
        is wanted) or full padded sequences."""
        if self.packed:
            return self._packed_states(members)
        if not self.torch.is_grad_enabled() and self._use_prefix(members):
            return self._prefix_states(members)
        return self._full_states([sequence for group in members for sequence in group.sequences])

    def _use_prefix(self, members: list[EncodedGroup]) -> bool:
        if max(group.prefix_length for group in members) == 0 or self.prefix_reuse == "never":
            return False
        return self.prefix_reuse == "always" or (
            self._cost(members, prefix=True) < PREFIX_GAIN * self._cost(members, prefix=False)
        )

    def _backbone(self, read_rows: Any, **inputs: Any) -> Any:
        """The backbone's forward, its last MLP only on `read_rows` (flat batch * position indexes)."""
        self._read_rows = read_rows if self.trim else None
        try:
            return self.backbone(**inputs)
        finally:
            self._read_rows = None

    def _at(self, hidden: Any, last: Any) -> Any:
        """Row i's state at position last[i]."""
        return hidden[self.torch.arange(hidden.shape[0], device=hidden.device), last]

    def _full_states(self, sequences: list[list[int]]) -> Any:
        torch = self.torch
        ids, mask = pad_rows(sequences, self.pad_id, torch)
        last = (mask.sum(1) - 1).to(self.device)
        hidden = self._backbone(
            torch.arange(len(sequences), device=self.device) * ids.shape[1] + last,
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
        ).last_hidden_state
        return self._at(hidden, last)

    def _packed_states(self, members: Sequence[EncodedGroup]) -> Any:
        """Groups as one packed row (see `synpref.engines.packing`), states at every reply's end."""
        torch = self.torch
        row = pack_blocks([block for group in members for block in self._blocks(group)], torch, self.device)
        extra = {"synpref_spans": row.spans} if self.span_attention else {}
        hidden = self._backbone(
            torch.tensor(row.ends, device=self.device),
            input_ids=torch.tensor([row.ids], device=self.device),
            attention_mask=row.whole_mask(torch).to(self.device),
            position_ids=torch.tensor([row.positions], device=self.device),
            **extra,
        ).last_hidden_state
        return hidden[0, row.ends]

    def _prefix_states(self, members: Sequence[EncodedGroup]) -> Any:
        """Shared prefixes once (right-padded), then all suffixes on the selected cache rows."""
        torch = self.torch
        prefixes = [group.sequences[0][: group.prefix_length] or [self.pad_id] for group in members]
        prefix_ids, prefix_mask = pad_rows(prefixes, self.pad_id, torch)
        for row, group in enumerate(members):
            if group.prefix_length == 0:
                prefix_mask[row] = 0
        owner, suffixes, starts = [], [], []
        for row, group in enumerate(members):
            for sequence in group.sequences:
                owner.append(row)
                suffixes.append(sequence[group.prefix_length :])
                starts.append(group.prefix_length)
        suffix_ids, suffix_mask = pad_rows(suffixes, self.pad_id, torch)
        owner_index = torch.tensor(owner, dtype=torch.long)
        positions = (
            torch.tensor(starts, dtype=torch.long)[:, None] + torch.arange(suffix_ids.shape[1])[None, :]
        )
        mask = torch.cat([prefix_mask[owner_index], suffix_mask], dim=1)
        device = self.device
        last = (suffix_mask.sum(1) - 1).to(device)
        cache = self._backbone(  # only the keys and values are read: the last MLP runs on no row
            torch.zeros(0, dtype=torch.long, device=device),
            input_ids=prefix_ids.to(device),
            attention_mask=prefix_mask.to(device),
            use_cache=True,
        ).past_key_values
        cache.batch_select_indices(owner_index.to(device))
        hidden = self._backbone(
            torch.arange(len(suffixes), device=device) * suffix_ids.shape[1] + last,
            input_ids=suffix_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state
        return self._at(hidden, last)
