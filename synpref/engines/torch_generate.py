"""The torch generation engine: transformers + torch, no grad, fp32 on CPU and bf16 on CUDA.

Two paths for `annotate`. Reading (`candidate_logprobs`) is one forward per batch where generating
is one per new token, so on CPU a decision among one-token answers ("1"/"2") is one forward of the
prompt and a log-softmax at its last position. Generating runs a KV-cached decoding loop over left-padded
batches, greedy or seeded sampling, and stops once every row has hit EOS or a stop string. Batches
come from `synpref.engines.batching`, costed as padded tokens.

Shared heads: prompts of one call that begin with the same tokens (a judge prompt in both candidate
orders, one pair's questions about each of its fields, N samples of one prompt) are grouped
(`shared_heads`) and their common head is computed once: one forward of the heads, the KV cache
copied per row, one forward of the tails behind it. A group forms only where it saves at least
MIN_SHARED_HEAD tokens per extra row; everything else takes the plain left-padded path.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any

from synpref.engines import Prompt
from synpref.engines.batching import padded_cost, token_budget_batches

# Padded tokens per batch (generation counts prompt + max_tokens per row, which bounds the KV cache).
# CPU, SmolLM2-135M, 1 thread: reading 16 hh decision prompts (~170 tokens) ran 1.23 prompts/s at 512,
# 1.09 at 1024, 0.72 at 2048 (big activations leave the cache); greedy decoding of 8 short prompts
# ran 27 tokens/s at 512, 29 at 1024, 26 at 2048 and 8.6 one prompt at a time.
DEFAULT_BATCH_TOKENS = {"cuda": 16384, "cpu": 1024}
# A shorter common head is not worth the second forward and the cache copy; groups stay small enough
# for the grouping (quadratic in a group's size) to cost nothing beside the model.
MIN_SHARED_HEAD = 32
MAX_GROUP = 64

Groups = list[tuple[list[int], list[list[int]]]]  # (shared head, the tails after it) of one batch


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
        # tokens read and written so far, named as OpenAI-compatible servers report them (progress bars)
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        self.min_shared_head = MIN_SHARED_HEAD  # a huge value turns head sharing off (benchmarks, tests)

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
        self.usage["prompt_tokens"] += sum(map(len, encoded))
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
        with torch.inference_mode():
            for rows, groups in self._batches(encoded, extra_tokens=0):
                logits, *_ = self._read(groups, use_cache=False)
                logprobs = logits.float().log_softmax(-1)[:, wanted].tolist()
                for index, row in zip(rows, logprobs, strict=True):
                    results[index] = row
        return results

    def _batches(self, encoded: list[list[int]], extra_tokens: int) -> Iterator[tuple[list[int], Groups]]:
        """(row indexes, their (head, tails) groups) of each batch within the token budget.

        Rows without a shared head go in plain left-padded batches (head empty); groups that share
        one go together, costed as their heads once plus every row's tail, and EXTRA_TOKENS per row
        (generation's new tokens, which the KV cache of every row holds).
        """
        plain, shared = [], []
        for head, members in shared_heads(encoded, self.min_shared_head):
            (shared if head else plain).append((head, members))
        rows = [members[0] for _, members in plain]
        cost = lambda batch: padded_cost([len(ids) + extra_tokens for ids in batch])  # noqa: E731
        for batch in token_budget_batches([encoded[i] for i in rows], len, cost, self.batch_tokens):
            indexes = [rows[i] for i in batch]
            yield indexes, [([], [encoded[i]]) for i in indexes]

        def shared_cost(batch: list[tuple[int, list[int]]]) -> int:
            tails = [len(encoded[i]) - head for head, members in batch for i in members]
            return len(batch) * max(head for head, _ in batch) + len(tails) * (max(tails) + extra_tokens)

        for batch in token_budget_batches(shared, lambda g: len(encoded[g[1][0]]), shared_cost, self.batch_tokens):
            groups = [shared[i] for i in batch]
            yield ([i for _, members in groups for i in members],
                   [(encoded[members[0]][:head], [encoded[i][head:] for i in members]) for head, members in groups])

    def _read(self, groups: Groups, use_cache: bool) -> tuple[Any, Any, Any, Any]:
        """One batch of prompts given as (head, tails) groups, through the model: (logits at each row's
        last token, the KV cache, the attention mask and each row's last position), rows in group order.

        With empty heads this is one left-padded forward. Otherwise the heads run once, their cache is
        copied to every row of their group, and the left-padded tails run behind it (the tails' padding
        sits between head and tail, masked, with positions counted over real tokens only).
        """
        torch = self.torch
        tails = [tail for _, group_tails in groups for tail in group_tails]
        if not any(head for head, _ in groups):
            ids, mask, positions = self._left_padded(tails)
            output = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                use_cache=use_cache, logits_to_keep=1)
            cache = getattr(output, self._cache_name) if use_cache else None
            return output.logits[:, -1], cache, mask, positions[:, -1:]
        head_ids, head_mask, head_positions = self._left_padded([head for head, _ in groups])
        output = self.model(input_ids=head_ids, attention_mask=head_mask, position_ids=head_positions,
                            use_cache=True, logits_to_keep=1)
        cache = getattr(output, self._cache_name)
        owner = torch.tensor([g for g, (_, group_tails) in enumerate(groups) for _ in group_tails],
                             device=self.device)
        cache.reorder_cache(owner)  # index_select: each row gets its own copy of its head's keys/values
        tail_ids, tail_mask, _ = self._left_padded(tails)
        mask = torch.cat([head_mask[owner], tail_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, head_ids.shape[1] :]
        output = self.model(input_ids=tail_ids, attention_mask=mask, position_ids=positions,
                            use_cache=True, logits_to_keep=1, **{self._cache_name: cache})
        return output.logits[:, -1], getattr(output, self._cache_name), mask, positions[:, -1:]

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
        with torch.inference_mode():
            for batch, groups in self._batches(rows, extra_tokens=max_tokens):
                outputs = self._decode(groups, max_tokens, temperature, stop, generator)
                for index, text in zip(batch, outputs, strict=True):
                    texts[index] = text
        return [texts[p * copies : (p + 1) * copies] * (n // copies) for p in range(len(encoded))]

    def _decode(
        self, groups: Groups, max_tokens: int, temperature: float, stop: Sequence[str], generator: Any
    ) -> list[str]:
        """Completions of one batch, decoded with a KV cache until every row is done."""
        torch = self.torch
        count = sum(len(tails) for _, tails in groups)
        generated: list[list[int]] = [[] for _ in range(count)]
        done = [False] * count
        logits, cache, mask, positions = self._read(groups, use_cache=True)
        for step in range(max_tokens):
            logits = logits.float()
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
            if all(done) or step == max_tokens - 1:
                break
            mask = torch.cat([mask, mask.new_ones((count, 1))], dim=1)
            positions = positions + 1
            output = self.model(
                input_ids=picked[:, None],
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_name: cache},
            )
            cache = getattr(output, self._cache_name)
            logits = output.logits[:, -1]
        self.usage["completion_tokens"] += sum(map(len, generated))
        return [_cut(self._text(tokens), stop) for tokens in generated]

    def _text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


def _cut(text: str, stop: Sequence[str]) -> str:
    """TEXT up to the earliest occurrence of any stop string."""
    found = [text.find(s) for s in stop if s in text]
    return text[: min(found)] if found else text


def _common_length(first: list[int], second: list[int]) -> int:
    for position, (a, b) in enumerate(zip(first, second, strict=False)):
        if a != b:
            return position
    return min(len(first), len(second))


def shared_heads(
    rows: Sequence[list[int]], min_head: int = MIN_SHARED_HEAD, max_group: int = MAX_GROUP
) -> list[tuple[int, list[int]]]:
    """Rows grouped by a common head worth computing once: (head length, row indexes) per group,
    head length 0 for a row that shares none.

    A group of k rows with head h costs h + k x (longest row - h) tokens (its tails are padded to
    the longest) where reading its rows alone costs their lengths; the difference is what it saves.
    Sorted rows put every set of rows with a common prefix side by side, and dynamic programming cuts
    that order into the runs (of at most MAX_GROUP rows, heads of at least MIN_SHARED_HEAD tokens)
    that save the most, so one judge prompt's two orders group by their long common head and
    prompts with long, different tails stay apart. A head leaves each row at least one token of tail.
    """
    order = sorted(range(len(rows)), key=lambda index: rows[index])
    lengths = [len(rows[index]) for index in order]
    common = [0] + [_common_length(rows[a], rows[b]) for a, b in zip(order, order[1:], strict=False)]
    best = [0] * (len(order) + 1)  # tokens saved by the best cut of the first k sorted rows
    cut: list[tuple[int, int]] = [(0, 0)] * (len(order) + 1)  # (run start, head) of the run ending there
    for end in range(1, len(order) + 1):
        best[end], cut[end] = best[end - 1], (end - 1, 0)
        head = longest = total = lengths[end - 1]
        head -= 1
        for start in range(end - 2, max(-1, end - 1 - max_group), -1):
            head = min(head, common[start + 1], lengths[start] - 1)
            if head < min_head:
                break
            longest, total = max(longest, lengths[start]), total + lengths[start]
            saved = total - (end - start) * longest + (end - start - 1) * head
            if saved > 0 and best[start] + saved > best[end]:
                best[end], cut[end] = best[start] + saved, (start, head)
    groups, end = [], len(order)
    while end:
        start, head = cut[end]
        groups.append((head, order[start:end]))
        end = start
    return groups[::-1]
