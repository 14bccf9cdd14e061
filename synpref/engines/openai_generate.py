"""The openai generation engine: any OpenAI-compatible HTTP endpoint (vLLM, SGLang, llama.cpp, OpenAI).

On a cluster the judge runs as a server per node and `annotate` talks to it over HTTP, so this
engine's job is to keep the server busy and to survive it: asyncio requests (aiohttp) with at most
CONCURRENCY in flight, a TIMEOUT per request, and up to MAX_RETRIES retries with exponential backoff
and full jitter on 429, 408, 5xx, dropped connections, truncated bodies and timeouts; a `Retry-After`
header (seconds or an HTTP date) is a lower bound on the wait. 400/413/422 fail that prompt at once
(its request is bad, e.g. longer than the context); 401/403/404 abort the call (`OpenAIEngineError`:
a wrong key, URL or model fails every prompt alike). The key is read from the environment variable
API_KEY_ENV and sent as a bearer token when it is set; a local server needs none.

Chat prompts go to /v1/chat/completions, raw text to /v1/completions. `generate` sends `n`, `seed`,
`stop` and `max_tokens`; at temperature 0 it asks once and repeats the text N times, as the torch
engine does. Stop strings are also cut client-side, so every engine returns the same thing.

`candidate_logprobs` reads the server's top-K next-token log-probabilities (chat: `logprobs: true,
top_logprobs: K`; completions: `logprobs: K`; K = 20, the most OpenAI and vLLM's default allow), one
request with `max_tokens: 1` per prompt, shared by every candidate. A candidate longer than one
listed token is followed token by token: the longest listed token that starts the rest of the
candidate is taken, and the next request continues the prompt with the text taken so far (raw text:
appended; chat: a trailing assistant message with `continue_final_message: true,
add_generation_prompt: false`, which vLLM, SGLang and llama.cpp continue and OpenAI's own API
rejects). Candidates sharing a prefix share its requests. The floor for what is not listed: at every
step the candidate's own next token may be one that is not listed, worth at most the smallest
listed log-probability there, so the value is the largest of the followed chain's sum (when every
piece was listed) and, for each step, the sum so far plus that step's floor. That is exact for a
listed token or a listed chain above the floors, and an upper bound otherwise: a candidate nothing
in the first list starts (or only a non-canonical short piece does, "L" for "London") gets the
first step's floor, so unlisted candidates tie instead of one winning by noise.
`echo` + `logprobs` scoring of prompt tokens is not used: llama.cpp ignores `echo`.

Failures. Each prompt ends with exactly one outcome. When every prompt succeeds the methods return
as the protocol says. When any prompt still fails after all retries, the call raises `PromptsFailed`
after every other prompt has finished: `.results` is the full list in input order with None at each
failed prompt, `.failures` maps those indexes to a reason ("HTTP 500: ... after 7 attempts"). The
caller records a failure for exactly those records and keeps the rest; nothing is dropped or repeated.
`stats` counts requests, retries (and `retry:<reason>`), failed prompts and tokens (prompt +
completion, as the server's `usage` counts them) over the engine's life; the methods' optional
`progress(prompts, tokens)` callback is called once per finished prompt, failed ones included.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from synpref.engines import Progress, Prompt

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # and every other 5xx
FATAL_STATUSES = frozenset({401, 403, 404})  # the same for every prompt: abort, do not record 10^6 failures
CHAT_CONTINUATION = {"continue_final_message": True, "add_generation_prompt": False}


class OpenAIEngineError(RuntimeError):
    """The endpoint cannot serve this call at all (bad URL, key or model; no logprobs offered)."""


class RequestFailed(Exception):
    """One prompt's request failed for good (after its retries, or with a non-retryable status)."""


class PromptsFailed(Exception):
    """Some prompts failed after all retries; every other prompt's result is in `results`."""

    def __init__(self, results: list[Any], failures: dict[int, str]):
        self.results = results  # input order, None at each failed index
        self.failures = failures  # index -> reason
        first = min(failures)
        super().__init__(f"{len(failures)} of {len(results)} prompts failed (prompt {first}: {failures[first]})")


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # HTTP dates are GMT
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def backoff_delay(
    attempt: int, base: float, cap: float, rng: random.Random, retry_after: float | None = None
) -> float:
    """Wait before retry ATTEMPT (0-based): full jitter in [0, min(cap, base * 2^attempt)], at least Retry-After."""
    jittered = rng.uniform(0.0, min(cap, base * 2.0**attempt))
    return jittered if retry_after is None else max(retry_after, jittered)


def next_token_top(choice: dict[str, Any]) -> dict[str, float]:
    """{token text: log-probability} of the first generated token, from any of the three formats seen.

    Chat (OpenAI, vLLM, llama.cpp) and llama.cpp's completions: `logprobs.content[0].top_logprobs`,
    a list of {token, logprob}. Legacy completions (OpenAI, vLLM): `logprobs.top_logprobs[0]`, a
    {token: logprob} dict. Texts listed twice (distinct ids, same text) keep the larger value.
    """
    logprobs = choice.get("logprobs") or {}
    listed: list[tuple[str, float]] = []
    if logprobs.get("content"):
        listed = [(item["token"], item["logprob"]) for item in logprobs["content"][0].get("top_logprobs") or []]
    elif logprobs.get("top_logprobs"):
        listed = list((logprobs["top_logprobs"][0] or {}).items())
    top: dict[str, float] = {}
    for token, value in listed:
        if value is not None and math.isfinite(value):
            top[token] = max(value, top.get(token, -math.inf))
    return top


def _cut(text: str, stop: Sequence[str]) -> str:
    """TEXT up to the earliest occurrence of any stop string."""
    found = [text.find(s) for s in stop if s in text]
    return text[: min(found)] if found else text


class OpenAIGenerationEngine:
    """A model behind an OpenAI-compatible server, e.g. `vllm serve MODEL` on this node.

    BASE_URL ends with /v1 (http://127.0.0.1:8000/v1). MODEL is the server's model name. Retry
    pacing is BACKOFF_BASE * 2^attempt seconds with full jitter, capped at BACKOFF_MAX; SEED fixes
    the jitter. TOP_LOGPROBS is K of the module docstring.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 16,
        timeout: float = 60.0,
        max_retries: int = 6,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        top_logprobs: int = 20,
        seed: int = 0,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, not {max_retries}")
        try:
            import aiohttp  # noqa: F401  (imported where used; checked here so the error comes first)
        except ModuleNotFoundError:
            raise OpenAIEngineError("the openai engine needs aiohttp: pip install 'synpref[openai]'") from None
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.top_logprobs = top_logprobs
        self.rng = random.Random(seed)
        self.stats: Counter[str] = Counter()  # requests, retries, retry:<reason>, failed_prompts, tokens

    # ---- the protocol -------------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Prompt],
        n: int = 1,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
        seed: int = 0,
        *,
        progress: Progress | None = None,
    ) -> list[list[str]]:
        """N completions of each prompt, each cut before its first stop string; see PromptsFailed."""
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n}")
        asked = 1 if temperature == 0 else n
        options: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed, "n": asked}
        if stop:
            options["stop"] = list(stop)

        async def one(client: _Client, prompt: Prompt) -> list[str]:
            body = await client.complete(prompt, options)
            choices = sorted(body.get("choices") or [], key=lambda choice: choice.get("index", 0))
            if len(choices) != asked:
                raise RequestFailed(f"the server returned {len(choices)} choices, not n={asked}")
            texts = [_cut(_choice_text(choice, prompt), stop) for choice in choices]
            return texts * (n // asked)

        return self._run(prompts, one, progress)

    def candidate_logprobs(
        self, prompts: Sequence[Prompt], candidates: Sequence[str], *, progress: Progress | None = None
    ) -> list[list[float]]:
        """log P(candidate | prompt) of each candidate from the server's top-K lists; see the docstring."""
        if any(not candidate for candidate in candidates):
            raise ValueError("a candidate is empty; its log-probability would be 0 by definition")
        options = {"max_tokens": 1, "temperature": 0.0}

        async def one(client: _Client, prompt: Prompt) -> list[float]:
            taken = [0.0] * len(candidates)  # log-probability of the pieces followed so far
            values = [-math.inf] * len(candidates)
            frontier: dict[str, list[int]] = {"": list(range(len(candidates)))} if candidates else {}
            while frontier:
                prefixes = list(frontier)
                tops = await asyncio.gather(*(client.top(prompt, prefix, options) for prefix in prefixes))
                following: dict[str, list[int]] = {}
                for prefix, top in zip(prefixes, tops, strict=True):
                    floor = min(top.values())
                    for index in frontier[prefix]:
                        # the bound if the rest's own next token is unlisted here
                        values[index] = max(values[index], taken[index] + floor)
                        rest = candidates[index][len(prefix) :]
                        pieces = [token for token in top if token and rest.startswith(token)]
                        if not pieces:
                            continue
                        piece = max(pieces, key=len)
                        taken[index] += top[piece]
                        if len(piece) == len(rest):
                            values[index] = max(values[index], taken[index])
                        else:
                            following.setdefault(prefix + piece, []).append(index)
                frontier = following
            return values

        return self._run(prompts, one, progress)

    # ---- the request loop ---------------------------------------------------------------------
    def _run(
        self,
        prompts: Sequence[Prompt],
        one: Callable[[_Client, Prompt], Awaitable[Any]],
        progress: Progress | None,
    ) -> list[Any]:
        prompts = list(prompts)
        if not prompts:
            return []
        results, failures = asyncio.run(self._gather(prompts, one, progress))
        if failures:
            self.stats["failed_prompts"] += len(failures)
            raise PromptsFailed(results, failures)
        return results

    async def _gather(
        self,
        prompts: list[Prompt],
        one: Callable[[_Client, Prompt], Awaitable[Any]],
        progress: Progress | None,
    ) -> tuple[list[Any], dict[int, str]]:
        import aiohttp

        results: list[Any] = [None] * len(prompts)
        failures: dict[int, str] = {}
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector, headers=self._headers()) as session:
            client = _Client(self, session, asyncio.Semaphore(self.concurrency))

            async def settle(index: int) -> None:
                tokens_before = client.tokens
                try:
                    results[index] = await one(client, prompts[index])
                except RequestFailed as error:
                    failures[index] = str(error)
                if progress is not None:
                    progress(1, client.tokens - tokens_before)

            tasks = [asyncio.ensure_future(settle(index)) for index in range(len(prompts))]
            try:
                await asyncio.gather(*tasks)
            finally:  # a fatal error in one prompt stops the others' requests too
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return results, failures

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}


class _Client:
    """One call's requests: the semaphore, the retry loop, and the two request shapes."""

    def __init__(self, engine: OpenAIGenerationEngine, session: Any, slots: asyncio.Semaphore):
        self.engine = engine
        self.session = session
        self.slots = slots
        self.tokens = 0  # usage.total_tokens of every answered request of this call (progress reads it)

    async def complete(self, prompt: Prompt, options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        """The response body of one completion request for PROMPT continued by PREFIX."""
        if isinstance(prompt, str):
            return await self.post("/completions", {"prompt": prompt + prefix, **options})
        messages = [dict(message) for message in prompt]
        body: dict[str, Any] = {**options}
        if prefix:
            messages.append({"role": "assistant", "content": prefix})
            body.update(CHAT_CONTINUATION)
        return await self.post("/chat/completions", {"messages": messages, **body})

    async def top(self, prompt: Prompt, prefix: str, options: dict[str, Any]) -> dict[str, float]:
        """{token: logprob} of the K most likely next tokens after PROMPT + PREFIX."""
        k = self.engine.top_logprobs
        wanted = {"logprobs": k} if isinstance(prompt, str) else {"logprobs": True, "top_logprobs": k}
        body = await self.complete(prompt, {**options, **wanted}, prefix)
        choices = body.get("choices") or []
        top = next_token_top(choices[0]) if choices else {}
        if not top:
            raise OpenAIEngineError(
                f"{self.engine.base_url} returned no top-{k} logprobs for model {self.engine.model!r}: "
                "the server does not offer them (vLLM: raise --max-logprobs; use --mode generate)"
            )
        return top

    async def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The JSON body of one successful request, after as many retries as the engine allows."""
        import aiohttp

        engine = self.engine
        url = engine.base_url + path
        payload = {"model": engine.model, **payload}
        timeout = aiohttp.ClientTimeout(total=engine.timeout)
        attempts = engine.max_retries + 1
        for attempt in range(attempts):
            try:
                async with self.slots:
                    engine.stats["requests"] += 1
                    body = await self._attempt(url, payload, timeout)
                self.tokens += int((body.get("usage") or {}).get("total_tokens") or 0)
                engine.stats["tokens"] += int((body.get("usage") or {}).get("total_tokens") or 0)
                return body
            except _Retry as retry:
                if attempt + 1 == attempts:
                    raise RequestFailed(f"{retry.reason} after {attempts} attempts") from None
                engine.stats["retries"] += 1
                engine.stats["retry:" + retry.reason.split(":")[0]] += 1
                delay = backoff_delay(
                    attempt, engine.backoff_base, engine.backoff_max, engine.rng, retry.retry_after
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _attempt(self, url: str, payload: dict[str, Any], timeout: Any) -> dict[str, Any]:
        import aiohttp

        try:
            async with self.session.post(url, json=payload, timeout=timeout) as response:
                status = response.status
                text = await response.text()
                if status == 200:
                    try:
                        return _json(text)
                    except ValueError:
                        raise _Retry("bad JSON: a truncated or garbled body") from None
                detail = " ".join(text.split())[:200]
                if status in RETRY_STATUSES or status >= 500:
                    raise _Retry(f"HTTP {status}: {detail}", parse_retry_after(response.headers.get("Retry-After")))
                if status in FATAL_STATUSES:
                    hint = f" (is ${self.engine.api_key_env} right?)" if status in (401, 403) else ""
                    raise OpenAIEngineError(f"{url} answered HTTP {status}{hint}: {detail}")
                raise RequestFailed(f"HTTP {status}: {detail}")
        except asyncio.TimeoutError:  # aiohttp's own timeouts derive from it
            raise _Retry(f"timeout: no answer in {self.engine.timeout:g} s") from None
        except aiohttp.ClientConnectorError as error:  # nothing listening (yet): a restarting server
            raise _Retry(f"connection failed: {error}") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            raise _Retry(f"connection dropped: {type(error).__name__}") from None


def _json(text: str) -> dict[str, Any]:
    import orjson

    body = orjson.loads(text)
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body


def _choice_text(choice: dict[str, Any], prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return choice.get("text") or ""
    return (choice.get("message") or {}).get("content") or ""
