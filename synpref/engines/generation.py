"""One constructor for every `GenerationEngine`, so `annotate` picks torch, vLLM or an
OpenAI-compatible server with `--engine` and never imports any of them itself.

    engine = generation_engine("torch", "smollm2/", device="cpu")
    engine = generation_engine("vllm", "Qwen2.5-72B-Instruct/", tensor_parallel_size=8)
    engine = generation_engine("openai", "Qwen/Qwen2.5-72B-Instruct", base_url="http://node:8000/v1")

Every engine is imported when it is asked for: the torch engine needs torch and transformers, the
vLLM one vLLM, the OpenAI one (`synpref.engines.openai_generate`) only an HTTP client. For the
tokens/s of progress bars an engine keeps `usage = {"prompt_tokens": N, "completion_tokens": M}`
(torch, vLLM) or `stats["tokens"]` (openai). A prompt an engine could not serve is a ValueError for
that prompt, None in its place, or an exception raised after the other prompts finished that carries
`.results` (None at each failed prompt) and `.failures` (index -> reason); `synpref.annotate`
records each as that record's failure. Any other exception stops the run.
"""

from __future__ import annotations

import importlib
from typing import Any

from synpref.engines import GenerationEngine

ENGINES = ("torch", "vllm", "openai")
OPENAI_ENGINE = "synpref.engines.openai_generate", "OpenAIGenerationEngine"


def generation_engine(
    engine: str,
    model: str,
    *,
    device: str | None = None,
    batch_tokens: int | None = None,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 16,
    timeout: float = 60.0,
    max_retries: int = 6,
    **vllm_options: Any,
) -> GenerationEngine:
    """The ENGINE ("torch", "vllm" or "openai") serving MODEL: a model directory or .gguf file for
    torch, a directory for vLLM, the served model's name for an OpenAI-compatible server at BASE_URL.

    Options that belong to another engine are refused rather than ignored.
    """
    if engine == "torch":
        _refuse(engine, vllm_options=vllm_options, base_url=base_url)
        from synpref.engines.torch_generate import TorchGenerationEngine

        return TorchGenerationEngine(model, device=device, batch_tokens=batch_tokens)
    if engine == "vllm":
        _refuse(engine, device=device, batch_tokens=batch_tokens, base_url=base_url)
        from synpref.engines.vllm_generate import VllmGenerationEngine

        return VllmGenerationEngine(model, **vllm_options)
    if engine == "openai":
        _refuse(engine, device=device, batch_tokens=batch_tokens, vllm_options=vllm_options)
        if not base_url:
            raise ValueError("the openai engine needs base_url, the server's OpenAI-compatible root "
                             "(for example http://localhost:8000/v1)")
        module, name = OPENAI_ENGINE
        try:
            engine_class = getattr(importlib.import_module(module), name)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
            raise ValueError("the openai engine is not part of this synpref installation") from None
        return engine_class(model, base_url, api_key_env=api_key_env, concurrency=concurrency,
                            timeout=timeout, max_retries=max_retries)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")


def _refuse(engine: str, **options: Any) -> None:
    given = [name for name, value in options.items() if value]
    if given:
        raise ValueError(f"the {engine} engine takes no {', '.join(given)}")
