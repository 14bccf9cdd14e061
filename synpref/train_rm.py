"""`synpref train-rm`: Bradley-Terry reward-model training, checkpoints picked on gold data.

Curation Stage 1 trains an RM on silver pairs and keeps the checkpoint most accurate on the gold
(human-verified) pairs; Stage 2 needs a gold RM; the product is an RM trained on the curated set.

    train_reward_model(TrainConfig(model="rm/", train=["silver.jsonl.zst"], gold=["gold.jsonl.zst"],
                                   output="out/"))

OUTDIR after a run:
    best/             the checkpoint with the highest gold accuracy, HF layout, + training.json
    train-log.jsonl   one line per step (loss, lr, grad norm, margin, accuracy, tokens/s, pairs/s)
                      and per gold evaluation (gold_accuracy)
    train-log.png     loss and gold accuracy by step
    checkpoint/       resume state while training (removed at the end)
    .done             completion marker: a re-run does nothing

Resume: every `save_every` steps, and when SIGTERM arrives (SLURM preemption), the trainable
weights, optimizer, schedule, RNG, step and best-so-far go to checkpoint/state.pt atomically; the
same command resumes there. The data order depends only on the seed and the epoch, so a resumed
run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson

from synpref import __version__
from synpref.engines.torch_train import RewardModelTrainer, StepResult, TrainPair
from synpref.eval.pairs import field_value, pair_results
from synpref.io import AppendStream, AtomicFile, expand_paths, files_sha256, write_atomic
from synpref.models.formatting import PairFormatter, context_length
from synpref.records import Record, is_pair
from synpref.stage import Stage, StageOptions


@dataclass
class TrainConfig:
    """Everything that decides the trained weights (a resumed run must match it) plus where to write."""

    model: str
    train: list[str]
    gold: list[str]
    output: str
    lr: float = 4e-6
    epochs: int = 1
    global_batch: int = 256
    max_length: int | None = None
    schedule: str = "linear"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    margin_field: str | None = None
    center: float = 0.0
    train_layers: int | None = None
    gradient_checkpointing: bool = False
    batch_tokens: int | None = None
    eval_every: int = 50
    save_every: int | None = None  # default: eval_every
    seed: int = 0
    device: str | None = None
    sharding: str = "none"  # none | optimizer (ZeRO-1) | model (FSDP): see engines/torch_train.py
    progress: bool | None = None
    state_cache: str | None = None  # frozen backbone: last-layer states shared with `synpref score`

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resume must share (not the device, progress, save cadence or state cache)."""
        skip = ("device", "progress", "save_every", "output", "state_cache")
        keep = {k: v for k, v in asdict(self).items() if k not in skip}
        keep["inputs"] = {"train": [_input_hash(p) for p in self.train], "gold": [_input_hash(p) for p in self.gold]}
        return keep


def _input_hash(path: str) -> str:
    """SHA-256 of an input: a file's bytes, or of a folder every file the stream layer reads from it
    (relative names and bytes, in reading order)."""
    files = expand_paths([path])
    names = [None if name == path else os.path.relpath(name, path) for name in files]
    return f"sha256:{files_sha256(files, names)}"


def load_pairs(paths: list[str], formatter: PairFormatter, counts: Counter[str], margin_field: str | None,
               progress: bool | None) -> list[TrainPair]:
    """Every pair of PATHS encoded by the shared formatter; longer ones truncated as `score` truncates
    them and counted (`truncated`), never dropped; records that are not pairs are counted and skipped."""
    pairs: list[TrainPair] = []
    stage = Stage("train-rm", StageOptions(inputs=list(paths), progress=progress))
    for record in stage.records():
        if not is_pair(record):
            counts["skipped_not_pair"] += 1
            continue
        group = formatter.encode_group(record.get("conversation") or [], [record["chosen"], record["rejected"]])
        if group.truncated:
            counts["truncated"] += 1
        pairs.append(TrainPair(group, _margin(record, margin_field)))
    return pairs


def _margin(record: Record, field_name: str | None) -> float:
    if field_name is None:
        return 0.0
    value = field_value(record, field_name)
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"record {record.get('id')!r}: --margin field {field_name!r} is {value!r}, not a number") from None


class _Preempted(Exception):
    """SIGTERM arrived: the trainer checkpointed and stops; the same command resumes."""


class TrainingRun:
    """One `train-rm` run over OUTDIR: data, trainer, gold evaluation, checkpoints and the log."""

    def __init__(self, config: TrainConfig, echo: Callable[[str], None] = print):
        self.config, self.echo = config, echo
        self.out = config.output
        self.counts: Counter[str] = Counter()
        os.makedirs(self.out, exist_ok=True)

    # -- paths -------------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    def run(self) -> dict[str, Any]:
        if os.path.exists(self.path(".done")):
            with open(self.path(".done"), "rb") as handle:
                summary = orjson.loads(handle.read())
            self.echo(f"synpref train-rm: {self.out} is already trained (best gold accuracy "
                      f"{summary['best_gold_accuracy']:.4f} at step {summary['best_step']}); nothing to do")
            return summary
        config = self.config
        fingerprint = config.fingerprint()
        import torch

        torch.manual_seed(config.seed)
        from transformers import AutoConfig

        from synpref.models.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(config.model)
        model_config = AutoConfig.from_pretrained(config.model, local_files_only=True)
        formatter = PairFormatter(tokenizer, config.max_length or context_length(model_config, tokenizer))
        train = load_pairs(config.train, formatter, self.counts, config.margin_field, config.progress)
        gold_counts: Counter[str] = Counter()
        gold = load_pairs(config.gold, formatter, gold_counts, None, config.progress)
        self.gold_groups = [pair.group for pair in gold]
        if not train or not gold:
            raise ValueError(f"need pairs to train on and gold pairs to select with (train {len(train)}, "
                             f"gold {len(gold)})")
        steps_per_epoch = -(-len(train) // config.global_batch)
        total = steps_per_epoch * config.epochs
        warmup = int(round(config.warmup_ratio * total))
        self.trainer = RewardModelTrainer(
            config.model, config.lr, total, warmup, config.schedule, config.weight_decay, config.max_grad_norm,
            config.center, config.train_layers, config.gradient_checkpointing, config.batch_tokens, config.device,
            config.sharding, config.state_cache,
        )
        trainer = self.trainer
        if trainer.frozen_backbone:
            self.echo(f"synpref train-rm: frozen backbone: computing last-layer states of {len(train)} pairs once")
            bar = Stage("train-rm", StageOptions(progress=config.progress)).progress_bar(unit="pair", total=len(train))
            trainer.cache_features(train, lambda pairs, tokens: bar.update(pairs))
            bar.close()
        self._finish_best_swap()
        state = self._resume(fingerprint)
        step, best = state.get("step", 0), state.get("best", {"accuracy": -1.0, "step": -1})
        log = AppendStream(self.path("train-log.jsonl"), plain=True) if trainer.rank == 0 else None
        if log is not None:
            log.keep_lines(state.get("log_lines", 0))
        stop = _StopFlag()
        bar = Stage("train-rm", StageOptions(progress=config.progress)).progress_bar(
            unit="pair", total=total * config.global_batch, initial=step * config.global_batch)
        try:
            if step == 0:
                best = self._evaluate(gold, 0, best, fingerprint, log)
            started, done_pairs, done_tokens = time.perf_counter(), 0, 0
            while step < total:
                epoch, position = divmod(step, steps_per_epoch)
                order = np.random.RandomState(config.seed + epoch).permutation(len(train))
                indexes = order[position * config.global_batch : (position + 1) * config.global_batch].tolist()
                mine = indexes[trainer.rank :: trainer.world]
                result = trainer.step([train[i] for i in mine], mine, len(indexes))
                step += 1
                done_pairs += result.pairs
                done_tokens += result.tokens
                elapsed = time.perf_counter() - started
                bar.update(result.pairs)
                bar.set_postfix_str(f"loss {result.loss:.4f}", refresh=False)
                if log is not None:
                    log.append([_step_line(step, epoch, result, elapsed, done_pairs, done_tokens)])
                if step % config.eval_every == 0 or step == total:
                    best = self._evaluate(gold, step, best, fingerprint, log)
                if step % (config.save_every or config.eval_every) == 0 or stop.requested:
                    self._checkpoint(step, best, fingerprint, log)
                if stop.requested and step < total:
                    raise _Preempted
        finally:
            bar.close()
            stop.restore()
            if log is not None:
                log.close()
        summary = {"best_step": best["step"], "best_gold_accuracy": best["accuracy"], "steps": total,
                   "train_pairs": len(train), "gold_pairs": len(gold), "counts": dict(self.counts),
                   "gold_counts": dict(gold_counts)}
        if trainer.rank == 0:
            self._plot()
            write_atomic(self.path(".done"), orjson.dumps(summary))
            shutil.rmtree(self.path("checkpoint"), ignore_errors=True)
        return summary

    # -- gold evaluation and checkpoints -------------------------------------------------------------
    def _evaluate(self, gold: list[TrainPair], step: int, best: dict[str, Any], fingerprint: dict[str, Any],
                  log: AppendStream | None) -> dict[str, Any]:
        """Gold accuracy (ties 1/2) through the scoring path; a new best is saved to OUTDIR/best. Rank 0
        evaluates; under FSDP every process does (the forward gathers weights from all of them) and
        reaches the same accuracy."""
        if self.trainer.rank != 0 and not self.trainer.fsdp:
            self._barrier()
            return best
        rewards = np.array(self.trainer.gold_rewards(self.gold_groups))
        accuracy = float(pair_results(rewards[:, 0], rewards[:, 1]).mean())
        if log is not None:
            log.append([orjson.dumps({"step": step, "gold_accuracy": accuracy, "gold_pairs": len(gold)})])
        if accuracy > best["accuracy"]:
            best = {"accuracy": accuracy, "step": step}
            self._save_best(step, accuracy, fingerprint)
        self._barrier()
        return best

    def _save_best(self, step: int, accuracy: float, fingerprint: dict[str, Any]) -> None:
        """Write the model to OUTDIR/.best.partial, then swap it in for OUTDIR/best."""
        temp, final, old = self.path(".best.partial"), self.path("best"), self.path(".best.old")
        if self.trainer.rank == 0:
            shutil.rmtree(temp, ignore_errors=True)
        self.trainer.save_model(temp)  # under FSDP every process gathers; rank 0 writes
        if self.trainer.rank != 0:
            return
        metadata = {"synpref": __version__, "base_model": self.config.model, "step": step, "gold_accuracy": accuracy,
                    "options": fingerprint, "counts": dict(self.counts)}
        write_atomic(os.path.join(temp, "training.json"), orjson.dumps(metadata, option=orjson.OPT_INDENT_2))
        if os.path.exists(final):
            os.replace(final, old)
        os.replace(temp, final)
        shutil.rmtree(old, ignore_errors=True)

    def _finish_best_swap(self) -> None:
        """A kill between the two renames of `_save_best` leaves only .best.old: it is the best."""
        if not os.path.exists(self.path("best")) and os.path.exists(self.path(".best.old")):
            os.replace(self.path(".best.old"), self.path("best"))

    def _checkpoint(self, step: int, best: dict[str, Any], fingerprint: dict[str, Any],
                    log: AppendStream | None) -> None:
        trainer_state = self.trainer.state()  # every process: sharded state is gathered on rank 0
        if trainer_state is None:
            self._barrier()
            return
        import torch

        os.makedirs(self.path("checkpoint"), exist_ok=True)
        state = {"step": step, "best": best, "fingerprint": fingerprint,
                 "log_lines": len(log) if log is not None else 0, **trainer_state}
        with AtomicFile(self.path("checkpoint", "state.pt")) as handle:
            torch.save(state, handle)
        self._barrier()

    def _resume(self, fingerprint: dict[str, Any]) -> dict[str, Any]:
        path = self.path("checkpoint", "state.pt")
        if not os.path.exists(path):
            return {}
        import torch

        state = torch.load(path, weights_only=False)
        if state["fingerprint"] != fingerprint:
            differ = sorted(k for k in fingerprint if fingerprint[k] != state["fingerprint"].get(k))
            raise ValueError(f"{self.out} holds a checkpoint of another run (different {', '.join(differ)}); "
                             "use another output directory or delete it")
        self.trainer.load_state(state)
        self.echo(f"synpref train-rm: resuming {self.out} at step {state['step']}")
        return state

    def _barrier(self) -> None:
        if self.trainer.world > 1:
            import torch

            torch.distributed.barrier()

    def _plot(self) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.echo("synpref train-rm: matplotlib is not installed; no train-log.png")
            return
        with open(self.path("train-log.jsonl"), "rb") as handle:
            entries = [orjson.loads(line) for line in handle]
        steps = [(e["step"], e["loss"]) for e in entries if "loss" in e]
        gold = [(e["step"], e["gold_accuracy"]) for e in entries if "gold_accuracy" in e]
        figure, loss_axis = plt.subplots(figsize=(7, 4))
        if steps:
            loss_axis.plot(*zip(*steps, strict=True), color="tab:blue", label="train loss")
        loss_axis.set_xlabel("step")
        loss_axis.set_ylabel("loss", color="tab:blue")
        accuracy_axis = loss_axis.twinx()
        accuracy_axis.plot(*zip(*gold, strict=True), "o-", color="tab:red", label="gold accuracy")
        accuracy_axis.set_ylabel("gold accuracy", color="tab:red")
        figure.suptitle(f"synpref train-rm {os.path.basename(os.path.normpath(self.out))}")
        figure.tight_layout()
        with AtomicFile(self.path("train-log.png")) as handle:
            figure.savefig(handle, format="png", dpi=110)
        plt.close(figure)


def _step_line(step: int, epoch: int, result: StepResult, elapsed: float, pairs: int, tokens: int) -> bytes:
    """One step of the training log; pairs/s and tokens/s are running means of this process's run."""
    return orjson.dumps({"step": step, "epoch": epoch, "loss": result.loss, "lr": result.lr,
                         "grad_norm": result.grad_norm, "margin": result.margin, "accuracy": result.accuracy,
                         "pairs": result.pairs, "tokens": result.tokens,
                         "pairs_per_s": pairs / elapsed, "tokens_per_s": tokens / elapsed})


class _StopFlag:
    """Turns SIGTERM into a request to checkpoint and stop after the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def train_reward_model(config: TrainConfig, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, evaluate on gold, keep the best; resumes a run interrupted in the same OUTDIR."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        import torch

        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        return TrainingRun(config, echo).run()
    except _Preempted:
        raise SystemExit(143) from None
    finally:
        if distributed:
            import torch

            torch.distributed.destroy_process_group()
