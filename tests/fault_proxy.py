"""A fault-injecting HTTP proxy on loopback, for testing clients of a real server behind it.

Each request is read whole, then, by a draw seeded with (seed, request body, how many times that
body arrived before), either forwarded to the upstream server or answered with a fault:
429 with `Retry-After`, 500, a connection closed before any answer ("drop"), the upstream's answer
cut off halfway through its body ("cut"), or no answer until the client gives up ("stall", only on
a body's first arrival and only when `stall_first` is set). Bodies that `doomed(payload)` picks
always get 500: the client must give up on exactly those. Every arrival is logged with its time and
outcome. One request per connection (`Connection: close`), so faults never leak into the next request.
Runs its own event loop in a thread; use it as a context manager.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FAULTS = ("429", "500", "drop", "cut")


@dataclass
class Arrival:
    time: float
    key: str  # sha256 of the body: the same request retried has the same key
    nth: int  # 0 for a body's first arrival
    outcome: str  # "ok" or one of FAULTS, "stall", "doomed"
    payload: Any
    headers: dict[str, str]  # lower-cased names


class FaultProxy:
    def __init__(
        self,
        upstream: tuple[str, int],
        rates: dict[str, float],
        seed: int = 0,
        retry_after: str = "1",
        doomed: Callable[[Any], bool] = lambda payload: False,
        stall_first: bool = False,
        stall_seconds: float = 30.0,
    ):
        unknown = set(rates) - set(FAULTS)
        if unknown or sum(rates.values()) > 1:
            raise ValueError(f"rates must be fractions of {FAULTS} summing to at most 1, not {rates}")
        self.upstream = upstream
        self.rates = rates
        self.seed = seed
        self.retry_after = retry_after
        self.doomed = doomed
        self.stall_first = stall_first
        self.stall_seconds = stall_seconds
        self.log: list[Arrival] = []
        self._seen: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for arrival in self.log:
            counts[arrival.outcome] = counts.get(arrival.outcome, 0) + 1
        return counts

    def _decide(self, key: str, nth: int, payload: Any) -> str:
        if self.doomed(payload):
            return "doomed"
        if self.stall_first and nth == 0:
            return "stall"
        draw = random.Random(f"{self.seed}:{key}:{nth}").random()
        for fault in FAULTS:
            draw -= self.rates.get(fault, 0.0)
            if draw < 0:
                return fault
        return "ok"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            key = hashlib.sha256(body).hexdigest()
            nth = self._seen.get(key, 0)
            self._seen[key] = nth + 1
            payload = json.loads(body) if body else None
            outcome = self._decide(key, nth, payload)
            self.log.append(Arrival(time.monotonic(), key, nth, outcome, payload, headers))
            if outcome == "429":
                writer.write(_response(429, "Too Many Requests", {"Retry-After": self.retry_after}))
            elif outcome in ("500", "doomed"):
                writer.write(_response(500, "Internal Server Error"))
            elif outcome == "stall":
                await asyncio.sleep(self.stall_seconds)
            elif outcome != "drop":
                answer = await self._forward(lines[0], headers, body)
                writer.write(answer[: _cut_point(answer)] if outcome == "cut" else answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _forward(self, request_line: str, headers: dict[str, str], body: bytes) -> bytes:
        """The upstream's whole answer, re-headed with `Connection: close`."""
        reader, writer = await asyncio.open_connection(*self.upstream)
        kept = {k: v for k, v in headers.items() if k not in ("connection", "keep-alive", "host")}
        kept |= {"host": f"{self.upstream[0]}:{self.upstream[1]}", "connection": "close"}
        writer.write((request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in kept.items()) + "\r\n").encode())
        writer.write(body)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        head, _, rest = answer.partition(b"\r\n\r\n")
        status, *fields = head.split(b"\r\n")
        fields = [f for f in fields if f.split(b":")[0].strip().lower() not in (b"connection", b"keep-alive")]
        return b"\r\n".join([status, *fields, b"Connection: close"]) + b"\r\n\r\n" + rest


def _response(status: int, reason: str, extra: dict[str, str] | None = None) -> bytes:
    body = json.dumps({"error": {"message": f"injected {status}", "code": status}}).encode()
    fields = {"Content-Type": "application/json", "Content-Length": str(len(body)), "Connection": "close"}
    fields |= extra or {}
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode() + b"\r\n" + body


def _cut_point(answer: bytes) -> int:
    """Halfway through the body: the headers promise more than ever arrives."""
    head_end = answer.index(b"\r\n\r\n") + 4
    return head_end + max(1, (len(answer) - head_end) // 2)
