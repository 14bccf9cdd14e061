"""Reward models: load one from a local directory, or make one from a causal LM (`synpref rm init`).

A reward model here is a transformers `AutoModelForSequenceClassification` with one output, saved
in Hugging Face layout (safetensors, tokenizer, chat template), so transformers, synpref's torch
engine and vLLM's classification runner all read the reward at the last token of the same ids.
Nothing is ever fetched from a hub: a missing path is an error.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from synpref.models.formatting import PairFormatter, default_system_prompt
from synpref.models.tokenizer import load_tokenizer

INIT_SEED = 0


def _require(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model path does not exist: {path} (models load from local paths only)")
    return path


def load_reward_model(
    model_dir: str | os.PathLike, dtype: Any = None, device: str = "cpu"
) -> tuple[Any, Any]:
    """(model, tokenizer) of a one-output sequence-classification model in MODEL_DIR, in eval mode."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = _require(model_dir)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if config.num_labels != 1:
        raise ValueError(f"{path}: a reward model needs num_labels=1, this one has {config.num_labels}")
    model = AutoModelForSequenceClassification.from_pretrained(
        path, local_files_only=True, dtype=dtype or torch.float32
    )
    return model.to(device).eval(), load_tokenizer(path)


def load_causal_lm(path: str | os.PathLike) -> tuple[Any, Any]:
    """(causal LM in fp32, tokenizer) from a model directory or a .gguf file (its dequantized copy
    in the cache, made on first use: see `converted_gguf`)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = _require(path)
    if path.endswith(".gguf"):
        path = converted_gguf(path)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return model, load_tokenizer(path)


def cache_root() -> str:
    """Where synpref keeps what it derives from local files: $SYNPREF_CACHE, else ~/.cache/synpref."""
    return os.environ.get("SYNPREF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "synpref")


def converted_gguf(path: str) -> str:
    """A .gguf dequantized once into an fp32 HF directory (safetensors + tokenizer) in the cache.

    transformers dequantizes a GGUF on every load (~20 s for SmolLM2-135M, with its own bar); a
    pipeline of stages would pay that in every process. Keyed by the file's real path, size and
    modification time and the transformers version; the directory appears by one rename, so
    processes converting side by side never read a half-written copy.
    """
    import transformers

    stat = os.stat(path)
    key = hashlib.blake2b(f"{os.path.realpath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0"
                          f"{transformers.__version__}".encode(), digest_size=8).hexdigest()
    parent = os.path.join(cache_root(), "gguf")
    directory = os.path.join(parent, f"{Path(path).stem}-{key}")
    if os.path.isdir(directory):
        return directory
    try:
        os.makedirs(parent, exist_ok=True)
        temporary = tempfile.mkdtemp(prefix=".converting-", dir=parent)
    except OSError as error:
        raise OSError(f"cannot write the GGUF conversion cache {parent} ({error.strerror or error}): "
                      "set SYNPREF_CACHE to a writable folder") from None
    try:
        save_dequantized_gguf(path, temporary)
        try:
            os.rename(temporary, directory)
        except OSError:
            if not os.path.isdir(directory):  # not just another process finishing first
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return directory


def save_dequantized_gguf(path: str, directory: str) -> None:
    """The GGUF's model dequantized and saved as a plain fp32 HF directory with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    folder, name = os.path.dirname(path) or ".", os.path.basename(path)
    dequantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = dequantized.config
    if hasattr(config, "quantization_config"):  # the weights are dequantized: the saved model is plain
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantized.state_dict())
    model.generation_config = dequantized.generation_config
    model.save_pretrained(directory, safe_serialization=True)
    load_tokenizer(path).save_pretrained(directory)


def _without_default_system_prompt(tokenizer: Any) -> None:
    """Drop a default system prompt the chat template writes by itself (the recipe adds none).

    The template is edited only where the default appears as one literal; the result is checked.
    """
    default = default_system_prompt(tokenizer)
    if default is None:
        return
    template = tokenizer.chat_template

    # e.g. SmolLM2: {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n...' }}{% endif %}
    edited = template
    for literal in (default, default.replace("\n", "\\n")):
        block = (
            r"\{%-?[^%]*?'system'[^%]*?-?%\}\{\{[^}]*?"
            + re.escape(literal)
            + r"[^}]*?\}\}\{%-?\s*endif\s*-?%\}"
        )
        edited = re.sub(block, "", edited, count=1)
    tokenizer.chat_template = edited
    if edited == template or default_system_prompt(tokenizer) is not None:
        tokenizer.chat_template = template
        raise ValueError(
            f"the chat template inserts a default system prompt ({default!r}) that could not be removed"
        )


def _pad_token(tokenizer: Any) -> None:
    """A pad token that formatted text never contains, so 'last non-pad token' is the last real one."""
    formatter = PairFormatter(tokenizer)
    sample = set(formatter.encode([{"role": "user", "content": "Hi"}], "Hello"))
    for candidate in (tokenizer.pad_token, tokenizer.unk_token, tokenizer.eos_token, tokenizer.bos_token):
        if candidate is not None and tokenizer.convert_tokens_to_ids(candidate) not in sample:
            tokenizer.pad_token = candidate
            return
    raise ValueError("no special token is free to serve as padding; add one to the tokenizer first")


def init_reward_model(
    from_path: str | os.PathLike, out_dir: str | os.PathLike, seed: int = INIT_SEED
) -> Path:
    """Turn a causal LM (directory or GGUF) into a reward model saved in OUT_DIR, HF layout.

    The backbone weights are copied; the new scalar head is drawn from N(0, initializer_range) with
    SEED, so the same inputs always give the same model. Returns OUT_DIR.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    lm, tokenizer = load_causal_lm(from_path)
    _without_default_system_prompt(tokenizer)
    _pad_token(tokenizer)
    config = lm.config
    config.num_labels = 1
    config.id2label, config.label2id = {0: "reward"}, {"reward": 0}
    config.pad_token_id = tokenizer.pad_token_id
    config.architectures = None
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    backbone = getattr(model, model.base_model_prefix)
    missing, unexpected = backbone.load_state_dict(
        getattr(lm, lm.base_model_prefix).state_dict(), strict=False
    )
    if missing or unexpected:
        raise ValueError(f"backbone weights do not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
    head = reward_head(model)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        head.weight.normal_(0.0, getattr(config, "initializer_range", 0.02), generator=generator)
        if head.bias is not None:
            head.bias.zero_()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def reward_head(model: Any) -> Any:
    """The scalar head of a sequence-classification model (`score` in Llama/Qwen/Mistral-style models)."""
    head = getattr(model, "score", None)
    if head is None:
        raise ValueError(
            f"{type(model).__name__} has no `score` head; synpref supports decoder reward models"
        )
    return head


def sigmoid(value: float) -> float:
    """The Bradley-Terry probability of a reward gap, p = 1 / (1 + e^-gap), without overflow."""
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    small = math.exp(value)
    return small / (1.0 + small)
