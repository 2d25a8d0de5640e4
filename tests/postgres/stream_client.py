"""A small Durable Streams client for the multi-node tests: JSON streams (one message
per append, so every delivery can be counted), catch-up reads, long-poll and SSE
readers that follow a stream until they hold an expected number of messages."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

JSON = "application/json"


def session(timeout: float = 30.0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout),
                                 connector=aiohttp.TCPConnector(limit=0))


def producer_headers(producer: str, seq: int, epoch: int = 0) -> dict[str, str]:
    return {"Producer-Id": producer, "Producer-Epoch": str(epoch), "Producer-Seq": str(seq)}


async def create(http: aiohttp.ClientSession, base: str, path: str, **headers: str) -> int:
    async with http.put(base + path, headers={"Content-Type": JSON, **headers}) as r:
        await r.read()
        return r.status


async def append(http: aiohttp.ClientSession, base: str, path: str, message, headers: dict | None = None) -> int:
    """POST one JSON message; the status once the whole response was read."""
    async with http.post(base + path, data=json.dumps(message).encode(),
                         headers={"Content-Type": JSON, **(headers or {})}) as r:
        await r.read()
        return r.status


async def read_all(http: aiohttp.ClientSession, base: str, path: str) -> list:
    """Every message of the stream (a catch-up read from the start, paged if need be)."""
    messages, offset = [], "-1"
    while True:
        async with http.get(base + path, params={"offset": offset}) as r:
            body = await r.read()
            assert r.status == 200, (r.status, body[:200])
            messages.extend(json.loads(body) if body else [])
            offset = r.headers["Stream-Next-Offset"]
            if r.headers.get("Stream-Up-To-Date") == "true":
                return messages


class Reader:
    """Follows a stream live (long-poll or SSE) into `messages`, with the time each
    arrived; `until(n)` waits for n messages."""

    def __init__(self, http: aiohttp.ClientSession, base: str, path: str, mode: str) -> None:
        assert mode in ("long-poll", "sse")
        self.http, self.base, self.path, self.mode = http, base, path, mode
        self.messages: list = []
        self.arrived: list[float] = []
        self.requests = 0
        self.broken = 0  # responses cut (node killed), retried
        self.offset = "-1"
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> "Reader":
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _got(self, batch: list) -> None:
        now = time.monotonic()
        self.messages.extend(batch)
        self.arrived.extend([now] * len(batch))
        self._changed.set()

    async def until(self, count: int, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if self._task is not None and self._task.done():
                self._task.result()  # raise what stopped the reader
                raise AssertionError(f"{self.mode} reader ended with {len(self.messages)}/{count}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.mode} reader on {self.base} has {len(self.messages)}/{count} "
                                     f"messages after {timeout}s: {self.messages}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))
            except asyncio.TimeoutError:
                pass
        return self.messages

    async def _run(self) -> None:
        while True:
            self.requests += 1
            try:
                if self.mode == "long-poll":
                    await self._long_poll()
                else:
                    await self._sse()
            except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
                self.broken += 1  # the node went away: again from the last offset, as clients do
                await asyncio.sleep(0.1)

    async def _long_poll(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        async with self.http.get(self.base + self.path, params={"offset": self.offset, "live": "long-poll"},
                                 timeout=timeout) as r:
            body = await r.read()
            assert r.status in (200, 204), (r.status, body[:200])
            if r.status == 200 and body:
                self._got(json.loads(body))
            self.offset = r.headers.get("Stream-Next-Offset", self.offset)

    async def _sse(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        async with self.http.get(self.base + self.path, params={"offset": self.offset, "live": "sse"},
                                 timeout=timeout) as r:
            assert r.status == 200, (r.status, await r.text())
            event, data, batch = None, [], []
            async for raw in r.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:])
                elif line == "":
                    if event == "data":
                        batch.extend(json.loads("\n".join(data)))
                    elif event == "control":
                        # the offset after the data: only now is the data the reader's
                        control = json.loads("\n".join(data))
                        self.offset = control.get("streamNextOffset", self.offset)
                        self._got(batch)
                        batch = []
                    event, data = None, []
