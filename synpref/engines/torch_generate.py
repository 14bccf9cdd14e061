"""The torch generation engine: transformers + torch, no grad, fp32 on CPU and bf16 on CUDA.

Two paths for `annotate`. Reading (`candidate_logprobs`) is one forward per batch where generating
is one per new token, so on CPU a decision among one-token answers ("1"/"2") is one forward of the
prompt and a log-softmax at its last position. Generating runs a KV-cached decoding loop over left-padded
batches, greedy or seeded sampling, and stops once every row has hit EOS or a stop string. Batches
come from `synpref.engines.batching`, costed as padded tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from synpref.engines import Prompt
from synpref.engines.batching import padded_cost, token_budget_batches

# Padded tokens per batch (generation counts prompt + max_tokens per row, which bounds the KV cache).
# CPU, SmolLM2-135M, 1 thread: reading 16 hh decision prompts (~170 tokens) ran 1.23 prompts/s at 512,
# 1.09 at 1024, 0.72 at 2048 (big activations leave the cache); greedy decoding of 8 short prompts
# ran 27 tokens/s at 512, 29 at 1024, 26 at 2048 and 8.6 one prompt at a time.
DEFAULT_BATCH_TOKENS = {"cuda": 16384, "cpu": 1024}


class TorchGenerationEngine:
    """A causal LM from a model directory or a .gguf file (dequantized), on CPU or CUDA.

    A prompt is either raw text (tokenized as is, with the tokenizer's own special tokens) or chat
    messages rendered with the tokenizer's chat template and the assistant header appended.
    """

    def __init__(self, model_path: str, device: str | None = None, batch_tokens: int | None = None):
        import torch

        from synpref.models.reward import load_causal_lm

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        model, self.tokenizer = load_causal_lm(model_path)
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.batch_tokens = (
            batch_tokens or DEFAULT_BATCH_TOKENS["cuda" if self.device.startswith("cuda") else "cpu"]
        )
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids = eos_ids - {None}
        # transformers 5 renamed `past_key_values` (argument and output field) to `cache`
        self._cache_name = (
            "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        )
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids, default=0)

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: raw text as is, chat messages through the chat template."""
        if isinstance(prompt, str):
            return self.tokenizer(prompt).input_ids
        text = self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False).input_ids  # the template wrote the specials

    def _encode_all(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        encoded = [self.encode(prompt) for prompt in prompts]
        if not all(encoded):
            raise ValueError("a prompt tokenizes to no tokens: there is nothing to condition on")
        return encoded

    def _left_padded(self, rows: Sequence[list[int]]) -> tuple[Any, Any, Any]:
        """(input ids, attention mask, position ids) of rows padded on the left, so they end together."""
        torch = self.torch
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            ids[index, width - len(row) :] = torch.tensor(row)
            mask[index, width - len(row) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row counts from 0 at its first real token
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def candidate_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        """log P(candidate | prompt) summed over the candidate's tokens, in input order.

        Each candidate is tokenized alone (no special tokens) and appended to the prompt's ids. When
        every candidate is one token, one forward of each prompt serves all of them.
        """
        encoded = self._encode_all(prompts)
        tokens = [self.tokenizer(candidate, add_special_tokens=False).input_ids for candidate in candidates]
        if any(not ids for ids in tokens):
            raise ValueError(
                "a candidate tokenizes to no tokens; its log-probability would be 0 by definition"
            )
        if not encoded or not tokens:
            return [[] for _ in encoded]
        if all(len(ids) == 1 for ids in tokens):
            return self._next_token_logprobs(encoded, [ids[0] for ids in tokens])
        rows = [(prompt, candidate) for prompt in range(len(encoded)) for candidate in range(len(tokens))]
        sums = self._sequence_logprobs(
            [encoded[p] + tokens[c] for p, c in rows], [len(tokens[c]) for _, c in rows]
        )
        return [sums[p * len(tokens) : (p + 1) * len(tokens)] for p in range(len(encoded))]

    def _next_token_logprobs(self, encoded: list[list[int]], token_ids: list[int]) -> list[list[float]]:
        torch = self.torch
        results: list[list[float]] = [[] for _ in encoded]
        wanted = torch.tensor(token_ids, device=self.device)
        cost = lambda batch: padded_cost([len(ids) for ids in batch])  # noqa: E731
        with torch.inference_mode():
            for batch in token_budget_batches(encoded, len, cost, self.batch_tokens):
                ids, mask, positions = self._left_padded([encoded[i] for i in batch])
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1
                ).logits[:, -1]
                logprobs = logits.float().log_softmax(-1)[:, wanted].tolist()
                for index, row in zip(batch, logprobs, strict=True):
                    results[index] = row
        return results

    def _sequence_logprobs(self, rows: list[list[int]], tails: list[int]) -> list[float]:
        """Summed log-probabilities of the last TAILS[i] tokens of each row given what precedes them."""
        torch = self.torch
        results = [0.0] * len(rows)
        cost = lambda batch: padded_cost(list(map(len, batch)))  # noqa: E731
        with torch.inference_mode():
            for batch in token_budget_batches(rows, len, cost, self.batch_tokens):
                ids, mask, positions = self._left_padded([rows[i] for i in batch])
                longest = max(tails[i] for i in batch)
                # Rows end together: the logits predicting every tail are among the last `longest` + 1.
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=longest + 1
                ).logits[:, :-1]
                logprobs = logits.float().log_softmax(-1).gather(-1, ids[:, -longest:, None])[..., 0]
                for row, index in enumerate(batch):
                    results[index] = logprobs[row, longest - tails[index] :].sum().item()
        return results

    def generate(self, prompts: Sequence[Prompt], n: int = 1, max_tokens: int = 256, temperature: float = 0.0,
                 stop: Sequence[str] = (), seed: int = 0) -> list[list[str]]:
        """N completions of each prompt, each cut before its first stop string.

        Greedy at temperature 0 (decoded once, repeated N times); otherwise sampled from the
        temperature-scaled softmax with a generator seeded by SEED, so the same call repeats.
        """
        torch = self.torch
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n}")
        copies = 1 if temperature == 0 else n
        encoded = self._encode_all(prompts)
        rows = [ids for ids in encoded for _ in range(copies)]
        texts: list[str] = [""] * len(rows)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        cost = lambda batch: padded_cost([len(ids) + max_tokens for ids in batch])  # noqa: E731
        with torch.inference_mode():
            for batch in token_budget_batches(rows, len, cost, self.batch_tokens):
                outputs = self._decode([rows[i] for i in batch], max_tokens, temperature, stop, generator)
                for index, text in zip(batch, outputs, strict=True):
                    texts[index] = text
        return [texts[p * copies : (p + 1) * copies] * (n // copies) for p in range(len(encoded))]

    def _decode(
        self, rows: list[list[int]], max_tokens: int, temperature: float, stop: Sequence[str], generator: Any
    ) -> list[str]:
        """Completions of one left-padded batch, decoded with a KV cache until every row is done."""
        torch = self.torch
        ids, mask, positions = self._left_padded(rows)
        generated: list[list[int]] = [[] for _ in rows]
        done = [False] * len(rows)
        cache = None
        for _ in range(max_tokens):
            output = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_name: cache},
            )
            cache = getattr(output, self._cache_name)
            logits = output.logits[:, -1].float()
            if temperature == 0:
                picked = logits.argmax(-1)
            else:
                probabilities = (logits / temperature).softmax(-1)
                picked = torch.multinomial(probabilities, 1, generator=generator)[:, 0]
            for row, token in enumerate(picked.tolist()):
                if done[row]:
                    continue
                if token in self.eos_ids:
                    done[row] = True
                    continue
                generated[row].append(token)
                done[row] = bool(stop) and any(s in self._text(generated[row]) for s in stop)
            if all(done):
                break
            ids = picked[:, None]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            positions = positions[:, -1:] + 1
        return [_cut(self._text(tokens), stop) for tokens in generated]

    def _text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


def _cut(text: str, stop: Sequence[str]) -> str:
    """TEXT up to the earliest occurrence of any stop string."""
    found = [text.find(s) for s in stop if s in text]
    return text[: min(found)] if found else text
