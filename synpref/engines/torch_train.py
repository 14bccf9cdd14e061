"""Bradley-Terry training of a reward model on the torch reward engine's own forward.

A pair's chosen and rejected replies share their conversation, so training runs the forward that
`score` runs (`TorchRewardEngine.rewards`): on CPU several pairs per packed unpadded row, each
conversation once with both replies behind a block mask; on CUDA length-sorted token-budget batches
of padded sequences under bf16 autocast with fp32 weights. One optimizer step consumes one global
batch of pairs; its micro-batches (token-budget batches, `synpref.engines.batching`) accumulate
gradients scaled so that the step's gradient is the mean over the global batch whatever the
micro-batching or the number of data-parallel processes.

Loss per pair (TRL's RewardTrainer, OpenRLHF's PairWiseLoss): -log sigmoid(r_c - r_r - margin), plus
`center` * (r_c + r_r)^2 when reward centering is asked (TRL's center_rewards_coefficient).
`train_layers` K trains only the top K decoder blocks, the final norm and the head; K = 0 trains the
head alone on last-layer states computed once (`FrozenFeatures`), which trains a useful head in
minutes on a laptop CPU; with a `state_cache` those states are also looked up in, and added to, the
cache `synpref score` uses, so runs over overlapping pairs from one backbone compute each once.

Sharding under torchrun, for models whose training state does not fit one device (the steps stay those
of unsharded training): `shard="optimizer"` is ZeRO stage 1 (the paper's final runs, with DeepSpeed):
each process keeps the AdamW moments of its share of the parameters
(`torch.distributed.optim.ZeroRedundancyOptimizer`), gradients are still summed in full.
`shard="model"` is FSDP (torch's `fully_shard`, ZeRO stage 3): weights, gradients and optimizer state
are split over the processes, each decoder block gathered only while it runs; every process then takes
part in gold evaluation and saving, which gather the whole model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from synpref.engines import Progress
from synpref.engines.batching import longest_sequence, token_budget_batches
from synpref.engines.state_cache import StateCache, cached_groups
from synpref.engines.torch_reward import TorchRewardEngine
from synpref.models.formatting import EncodedGroup

SCHEDULES = ("linear", "constant", "cosine")
SHARDING = ("none", "optimizer", "model")


@dataclass
class TrainPair:
    """One training pair: its encoded (chosen, rejected) group and the margin it must win by."""

    group: EncodedGroup
    margin: float = 0.0

    @property
    def tokens(self) -> int:
        return sum(map(len, self.group.sequences))


@dataclass
class StepResult:
    """What one optimizer step measured (means over the global batch)."""

    loss: float
    margin: float  # mean r_c - r_r
    accuracy: float  # share of pairs with r_c > r_r (ties 1/2)
    grad_norm: float
    lr: float
    pairs: int
    tokens: int


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at STEP (0-based) of TOTAL: linear warmup over WARMUP
    steps, then constant, linear decay to 0, or cosine decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def distributed() -> tuple[int, int]:
    """(rank, world size) of this process under torchrun, (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """MODEL in eval mode (no dropout) for the block, then back in the mode it was in."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


class FrozenFeatures:
    """Last-layer states of every (chosen, rejected) group, computed once: with a frozen backbone the
    head trains, and is evaluated, on these alone. With CACHE (frozen backbones only: it is keyed by
    the weights as loaded), cached groups skip the forward and computed ones are stored."""

    def __init__(self, engine: TorchRewardEngine, groups: Sequence[EncodedGroup], progress: Progress | None = None,
                 cache: StateCache | None = None):
        torch = engine.torch
        self.states: list[Any] = [None] * len(groups)
        pending, keys = list(range(len(groups))), []
        if cache is not None:
            keys, hit = cached_groups(cache, (group.sequences for group in groups))
            pending = [index for index in pending if not hit[index]]
            done = [index for index, cached in enumerate(hit) if cached]
            for index in done:
                self.states[index] = cache.get(keys[index]).to(engine.device)
            if progress is not None and done:
                progress(len(done), sum(len(s) for i in done for s in groups[i].sequences))
        todo = [groups[index] for index in pending]
        # eval mode: the states `score` computes (and caches), no dropout in a frozen backbone;
        # no_grad, not inference_mode: the head's backward reads these states
        with eval_mode(engine.model), torch.no_grad():
            for batch in token_budget_batches(todo, longest_sequence, engine.batch_cost, engine.batch_tokens):
                indexes = [pending[i] for i in batch]
                states = engine.reply_states([groups[i] for i in indexes]).float()
                if cache is not None:
                    cache.put([key for i in indexes for key in keys[i]], states)
                for offset, index in enumerate(indexes):
                    self.states[index] = states[2 * offset : 2 * offset + 2].clone()
                if progress is not None:
                    progress(len(batch), sum(len(s) for i in indexes for s in groups[i].sequences))


class RewardModelTrainer:
    """A reward model, its optimizer and schedule; `step` trains on one global batch of pairs."""

    def __init__(
        self,
        model_dir: str,
        lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        schedule: str = "linear",
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
        center: float = 0.0,
        train_layers: int | None = None,
        gradient_checkpointing: bool = False,
        batch_tokens: int | None = None,
        device: str | None = None,
        shard: str = "none",
        state_cache: str | None = None,
    ):
        """`state_cache`: a directory of last-layer states (`synpref.engines.state_cache`), used only with a
        frozen backbone (`train_layers=0`) and not under FSDP (whose forward every process runs in step)."""
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
        if shard not in SHARDING:
            raise ValueError(f"shard must be one of {', '.join(SHARDING)}, not {shard!r}")
        self.rank, self.world = distributed()
        if self.world > 1 and device is None:
            import torch

            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
        self.engine = TorchRewardEngine(model_dir, batch_tokens, device, prefix_reuse="never", train=True)
        torch = self.torch = self.engine.torch
        self.model = self.engine.model
        self.center, self.max_grad_norm = center, max_grad_norm
        self.frozen_backbone = train_layers == 0
        self._freeze(train_layers)
        if gradient_checkpointing and not self.frozen_backbone:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.engine.trim = False
        self.fsdp = shard == "model" and self.world > 1
        self.state_cache = (
            self.engine.open_state_cache(state_cache) if state_cache and self.frozen_backbone and not self.fsdp else None
        )
        if self.fsdp:
            self._fully_shard()
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.sharded = shard == "optimizer" and self.world > 1
        if self.sharded:
            from torch.distributed.optim import ZeroRedundancyOptimizer

            self.optimizer = ZeroRedundancyOptimizer(self.parameters, optimizer_class=torch.optim.AdamW, lr=lr,
                                                     weight_decay=weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(self.parameters, lr=lr, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, schedule)
        )
        self.model.train()
        self.features: FrozenFeatures | None = None
        self._gold: tuple[Sequence[EncodedGroup], FrozenFeatures] | None = None

    def _freeze(self, train_layers: int | None) -> None:
        """Train only the head, the final norm and the top TRAIN_LAYERS blocks (all when None)."""
        if train_layers is None:
            return
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        trainable = [self.engine.head]
        layers = getattr(self.engine.backbone, "layers", None)
        if train_layers > 0:
            if layers is None or train_layers > len(layers):
                raise ValueError(f"train_layers {train_layers}: the model has {len(layers or [])} blocks")
            trainable += [*layers[len(layers) - train_layers :], getattr(self.engine.backbone, "norm", None)]
        for module in trainable:
            if module is not None:
                for parameter in module.parameters():
                    parameter.requires_grad_(True)

    def _fully_shard(self) -> None:
        """FSDP units: each decoder block, the head, and the backbone's remaining weights (embeddings,
        final norm); the engine calls the backbone and the head as modules, so their hooks gather them."""
        from torch.distributed.fsdp import fully_shard

        for layer in getattr(self.engine.backbone, "layers", None) or []:
            fully_shard(layer)
        fully_shard(self.engine.head)
        fully_shard(self.engine.backbone)
        self.engine.no_grad = self.torch.no_grad

    def cache_features(self, pairs: Sequence[TrainPair], progress: Progress | None = None) -> None:
        """Frozen-backbone mode: compute the replies' last-layer states of PAIRS once."""
        self.features = FrozenFeatures(self.engine, [pair.group for pair in pairs], progress, self.state_cache)

    def _rewards(self, pairs: Sequence[TrainPair], indexes: Sequence[int] | None) -> Any:
        """(pairs, 2) rewards of chosen and rejected under autograd."""
        if self.features is not None and indexes is not None:
            states = self.torch.cat([self.features.states[i] for i in indexes])
            return self.engine.head(states).float()[:, 0].view(-1, 2)
        device_type = "cuda" if self.engine.device.startswith("cuda") else "cpu"
        with self.torch.autocast(device_type, dtype=self.torch.bfloat16, enabled=device_type == "cuda"):
            return self.engine.rewards([pair.group for pair in pairs]).view(-1, 2)

    def step(self, pairs: Sequence[TrainPair], indexes: Sequence[int] | None = None,
             global_count: int | None = None) -> StepResult:
        """One optimizer step on this process's PAIRS of a global batch of GLOBAL_COUNT pairs
        (INDEXES: the pairs' positions in the training set, for cached features)."""
        torch = self.torch
        count = global_count or len(pairs)
        totals = torch.zeros(4, dtype=torch.float64)  # loss sum, margin sum, wins, tokens
        longest = lambda pair: longest_sequence(pair.group)  # noqa: E731
        cost = lambda batch: self.engine.batch_cost([pair.group for pair in batch])  # noqa: E731
        for batch in token_budget_batches(pairs, longest, cost, self.engine.batch_tokens):
            members = [pairs[i] for i in batch]
            rewards = self._rewards(members, None if indexes is None else [indexes[i] for i in batch])
            margins = torch.tensor([pair.margin for pair in members], dtype=rewards.dtype, device=rewards.device)
            gap = rewards[:, 0] - rewards[:, 1]
            losses = -torch.nn.functional.logsigmoid(gap - margins)
            if self.center:
                losses = losses + self.center * rewards.sum(1) ** 2
            (losses.sum() * (self.world / count)).backward()
            totals += torch.tensor([losses.sum().item(), gap.sum().item(),
                                    ((gap > 0).sum() + 0.5 * (gap == 0).sum()).item(),
                                    sum(pair.tokens for pair in members)], dtype=torch.float64)
        if self.world > 1:
            if not self.fsdp:  # FSDP reduce-scatters (averages) every gradient in backward itself
                self._all_reduce_gradients()
            torch.distributed.all_reduce(totals)
        norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm if self.max_grad_norm > 0 else math.inf)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss, margin, wins, tokens = totals.tolist()
        return StepResult(loss / count, margin / count, wins / count, float(norm), lr, count, int(tokens))

    def _all_reduce_gradients(self) -> None:
        """Sum every trainable gradient over the processes in one flat buffer (each process scaled
        its loss by world/count, so the sum is the global batch's mean gradient)."""
        torch = self.torch
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.parameters]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        offset = 0
        for parameter, grad in zip(self.parameters, grads, strict=True):
            parameter.grad = flat[offset : offset + grad.numel()].view_as(grad).clone()
            offset += grad.numel()

    def gold_rewards(self, groups: Sequence[EncodedGroup]) -> list[list[float]]:
        """Rewards of gold groups through the scoring engine's own path (eval mode, no grad); with a
        frozen backbone, the head on the groups' states computed on the first call."""
        if self.frozen_backbone:
            if self._gold is None or self._gold[0] is not groups:
                self._gold = (groups, FrozenFeatures(self.engine, groups, cache=self.state_cache))
            with self.torch.inference_mode():
                states = self.torch.cat(self._gold[1].states)
                return self.engine.head(states).float()[:, 0].view(-1, 2).tolist()
        with eval_mode(self.model):
            return self.engine.score(groups)

    def state(self) -> dict[str, Any] | None:
        """What resuming needs besides the data position: trainable weights, the whole optimizer state,
        schedule, RNG. Every process must call it (sharded state is gathered); rank 0 gets it, others None."""
        trainable = [name for name, p in self.model.named_parameters() if p.requires_grad]
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            full = self._full_model_state()  # empty on ranks other than 0
            weights = {name: full[name] for name in trainable} if self.rank == 0 else {}
            optimizer = get_optimizer_state_dict(self.model, self.optimizer, options=self._full_options())
        else:
            if self.sharded:
                self.optimizer.consolidate_state_dict(to=0)
            if self.rank != 0:
                return None
            parameters = dict(self.model.named_parameters())
            weights = {name: parameters[name].detach().clone() for name in trainable}
            optimizer = self.optimizer.state_dict()
        if self.rank != 0:
            return None
        return {"weights": weights, "optimizer": optimizer, "scheduler": self.scheduler.state_dict(),
                "rng": self.torch.get_rng_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Every process loads the whole state; a sharded optimizer or model keeps its own share."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            set_model_state_dict(self.model, state["weights"], options=StateDictOptions(full_state_dict=True, strict=False))
            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=self._full_options())
        else:
            parameters = dict(self.model.named_parameters())
            with self.torch.no_grad():
                for name, value in state["weights"].items():
                    parameters[name].copy_(value)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.torch.set_rng_state(state["rng"])

    def save_model(self, directory: str) -> None:
        """The model in HF layout (safetensors, fp32), with its tokenizer and chat template. Under FSDP
        every process must call it (the weights are gathered); rank 0 writes."""
        full = self._full_model_state() if self.fsdp else None
        if self.rank != 0:
            return
        self.model.save_pretrained(directory, state_dict=full, safe_serialization=True)
        self.engine.tokenizer.save_pretrained(directory)

    def _full_options(self) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def _full_model_state(self) -> dict[str, Any]:
        """The whole model's weights gathered from the FSDP shards (on CPU, rank 0 only)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.model, options=self._full_options())
