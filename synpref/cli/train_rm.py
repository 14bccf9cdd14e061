from __future__ import annotations

import click

from synpref.cli.options import add_options, max_length_option, state_cache_option
from synpref.engines.torch_train import SCHEDULES
from synpref.io import StreamError

TRAINING_OPTIONS = [
    click.option("-m", "--model", required=True, type=click.Path(exists=True, file_okay=False),
                 help="Reward model to start from (HF layout, e.g. from `synpref rm init`)."),
    click.option("--train", "train", multiple=True, required=True, type=click.Path(exists=True, dir_okay=True),
                 help="Training pairs (any stream layout; repeat for several files)."),
    click.option("--gold", "gold", multiple=True, required=True, type=click.Path(exists=True, dir_okay=True),
                 help="Gold (human-verified) pairs that pick the best checkpoint (repeatable)."),
    click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
                 help="Run directory: best/, train-log.jsonl, train-log.png; the same command resumes it."),
    click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=4e-6, show_default=True,
                 help="Peak learning rate (the paper: 4e-6 for small models, 1e-6 for 8B, 3e-6 final runs)."),
    click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True, help="Passes over --train."),
    click.option("--global-batch", type=click.IntRange(min=1), default=256, show_default=True,
                 help="Pairs per optimizer step, over all processes; micro-batches accumulate to it."),
    max_length_option("Truncate longer pairs exactly as `synpref score` does (oldest turns first, then the "
                      "oldest tokens); truncated pairs are counted, never dropped. Default: the model's context."),
    click.option("--schedule", type=click.Choice(SCHEDULES), default="linear", show_default=True,
                 help="After warmup: linear decay to 0 (the paper's development runs), constant (its final "
                      "runs: ~35% less compute, same results) or cosine."),
    click.option("--warmup-ratio", type=click.FloatRange(0, 1), default=0.03, show_default=True,
                 help="Share of the steps with a linear warmup (OpenRLHF's default)."),
    click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True, help="AdamW."),
    click.option("--max-grad-norm", type=click.FloatRange(min=0), default=1.0, show_default=True,
                 help="Clip the gradient norm (0: no clipping)."),
    click.option("--margin", "margin_field", metavar="FIELD",
                 help="Loss -log sigmoid(r_c - r_r - margin) with the margin read from this dotted record field "
                      "(e.g. extra.margin); default: no margin."),
    click.option("--center-rewards", "center", type=click.FloatRange(min=0), default=0.0, show_default=True,
                 help="Add this times (r_c + r_r)^2 to the loss (TRL's center_rewards_coefficient; 0.01 there)."),
    click.option("--train-layers", type=click.IntRange(min=0),
                 help="Train only the top K decoder blocks, the final norm and the head (default: all). 0 "
                      "freezes the backbone: its last-layer states are computed once and only the head "
                      "trains, which is what a 2-core CPU can afford."),
    click.option("--gradient-checkpointing", is_flag=True, help="Recompute activations in backward (less memory)."),
    click.option("--batch-tokens", type=click.IntRange(min=1),
                 help="Tokens per micro-batch: on CPU the packed row size (default 1024), on CUDA padded tokens "
                      "(default 8192)."),
    click.option("--eval-every", type=click.IntRange(min=1), default=50, show_default=True,
                 help="Gold evaluation every N steps (and at step 0 and at the end)."),
    click.option("--save-every", type=click.IntRange(min=1),
                 help="Resume checkpoint every N steps (default: --eval-every); SIGTERM also saves one."),
    click.option("--seed", type=int, default=0, show_default=True, help="Data order and dropout."),
    click.option("--device", help="torch device (default: cuda when available, else cpu)."),
    click.option("--sharding", type=click.Choice(["none", "optimizer", "model"]), default="none", show_default=True,
                 help="Under torchrun, split the training state over the processes (the steps are unchanged): "
                      "optimizer = ZeRO stage 1 (the paper's final runs), each process keeps the AdamW state of "
                      "1/world of the weights; model = FSDP (ZeRO-3), weights, gradients and AdamW state split, "
                      "for models that do not fit one GPU."),
    click.option("--progress/--no-progress", default=None, help="tqdm bar (pairs/s). Default: when stderr is a terminal."),
    state_cache_option(),
]


@click.command("train-rm")
def train_rm(**options) -> None:
    """Train a Bradley-Terry reward model on pairs; keep the checkpoint most accurate on gold pairs.

    Loss: -log sigmoid(r(chosen) - r(rejected) - margin), AdamW, warmup then --schedule, gradient
    accumulation to --global-batch pairs. Defaults follow the Skywork-Reward-V2 recipe (lr 4e-6, one
    epoch, global batch 256, warmup then linear decay, no system prompt added, no duplicated BOS:
    the chat template as `synpref score` renders it). Training runs the forward `synpref score`
    runs: on CPU several pairs per packed unpadded row, each conversation once with both replies
    behind a block mask; on CUDA length-sorted token-budget batches under bf16 autocast.

    \b
    Gold accuracy (ties count 1/2) is measured at step 0, every --eval-every steps and at the end;
    the best checkpoint goes to OUTDIR/best (safetensors, tokenizer, chat template, training.json
    with input hashes, step, gold accuracy and options), ready for `synpref score -m OUTDIR/best`.
    OUTDIR/train-log.jsonl logs every step (loss, lr, grad norm, reward margin, accuracy, pairs/s,
    tokens/s) and every evaluation; OUTDIR/train-log.png plots them.

    \b
    Resume: SIGTERM (e.g. SLURM preemption) saves a checkpoint after the current step and exits
    143; after SIGTERM or SIGKILL the same command continues from the last checkpoint (weights,
    optimizer, schedule, RNG, data position) and ends with the weights of an uninterrupted run. A
    finished OUTDIR is left alone. Under torchrun every process takes its share of each global
    batch and gradients are summed once per step (data parallel); --sharding optimizer|model also
    splits the AdamW state (ZeRO-1) or the whole model (FSDP). See bin/train-rm.sbatch.

    \b
    Examples:
        synpref train-rm -m rm/ --train silver.jsonl.zst --gold gold.jsonl.zst -o runs/rm1
        synpref train-rm -m rm/ --train pairs/ --gold gold.jsonl.zst -o runs/head --train-layers 0 --lr 1e-3
        torchrun --nproc-per-node 8 -m synpref train-rm -m rm/ --train silver/ --gold gold.jsonl.zst -o runs/rm2
        synpref score -m runs/rm1/best --name rm1 < held-out.jsonl.zst | synpref eval pairs --length-baseline
    """
    from synpref.train_rm import TrainConfig, train_reward_model

    options["train"], options["gold"] = list(options["train"]), list(options["gold"])
    try:
        summary = train_reward_model(TrainConfig(**options), echo=lambda text: click.echo(text, err=True))
    except (ValueError, FileNotFoundError, StreamError) as error:
        raise click.ClickException(str(error)) from None
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary["counts"].items()))
    click.echo(f"synpref train-rm: {summary['train_pairs']} pairs, {summary['steps']} steps; best gold accuracy "
               f"{summary['best_gold_accuracy']:.4f} at step {summary['best_step']} -> {options['output']}/best"
               + (f" ({counts})" if counts else ""), err=True)


train_rm = add_options(train_rm, TRAINING_OPTIONS)
