"""A small async HTTP client for the Durable Streams protocol (aiohttp), used by the
`durable-stream` command line and usable on its own."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

DEFAULT_BASE_URL = "http://localhost:4437/v1/stream"

# Statuses worth retrying: the server is restarting, overloaded or behind a proxy that lost it.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Network failures that leave the stream untouched: resume from the last confirmed offset.
RETRYABLE_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


# --------------------------------------------------------------------------------------
# HTTP client
# --------------------------------------------------------------------------------------


class StreamError(Exception):
    """The server answered with an error status."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class StreamIdError(ValueError):
    """A stream id that cannot be turned into a URL path."""


class NotAStreamEndpointError(Exception):
    """A success answer without the protocol's headers: something serves the URL, but not a
    Durable Streams handler. Typically the base URL lacks the server's stream prefix and a
    catch-all answered, such as Caddy's empty 200 when no route matches."""

    def __init__(self, url: str, detail: str, suggested_base_url: str | None):
        hint = f"is the base URL {suggested_base_url}?" if suggested_base_url else "check the base URL"
        super().__init__(f"{url} is not a Durable Streams endpoint ({detail}); {hint}")
        self.url = url


def is_json_content_type(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";", 1)[0].strip().lower() == "application/json"


def likely_base_url(base_url: str) -> str | None:
    """The conventional stream prefix under `base_url`, unless it already ends with it."""
    prefix = urlsplit(DEFAULT_BASE_URL).path
    base_url = base_url.rstrip("/")
    if base_url.endswith(prefix):
        return None
    return base_url.removesuffix("/v1") + prefix  # completes a base cut short at /v1, not doubles it


def stream_path_for(stream_id: str) -> str:
    """Percent-encode a stream id segment by segment; slashes separate segments."""
    segments = stream_id.strip("/").split("/")
    if not stream_id.strip("/") or any(s in ("", ".", "..") for s in segments):
        raise StreamIdError(f"invalid stream id {stream_id!r}: empty, '.' or '..' path segment")
    return "/".join(quote(s, safe="-._~:@!$&'()*+,;=") for s in segments)


@dataclass(frozen=True)
class StreamInfo:
    """What HEAD tells about a stream."""

    url: str
    content_type: str
    next_offset: str
    closed: bool
    ttl: str | None
    expires_at: str | None


@dataclass(frozen=True)
class ReadChunk:
    """One confirmed piece of a read: its data and the offset to continue from."""

    data: bytes
    content_type: str
    next_offset: str
    up_to_date: bool
    closed: bool


@dataclass
class Producer:
    """Idempotent-producer identity. The epoch is taken from the clock so a new process
    never reuses an old (epoch, seq) tuple; a fencing answer (403) moves it past the
    server's epoch."""

    producer_id: str
    epoch: int
    seq: int = 0

    @classmethod
    def fresh(cls, producer_id: str) -> Producer:
        return cls(producer_id, epoch=int(time.time() * 1000))

    def headers(self) -> dict[str, str]:
        return {"Producer-Id": self.producer_id, "Producer-Epoch": str(self.epoch), "Producer-Seq": str(self.seq)}


class Backoff:
    """Exponential backoff with jitter, reset after a success."""

    def __init__(self, first: float = 0.1, limit: float = 5.0):
        self.first, self.limit, self.delay = first, limit, first

    async def wait(self) -> None:
        await asyncio.sleep(self.delay * random.uniform(0.5, 1.0))
        self.delay = min(self.delay * 2, self.limit)

    def reset(self) -> None:
        self.delay = self.first


def _header_true(headers: Any, name: str) -> bool:
    return headers.get(name, "").strip().lower() == "true"


async def _error_from(resp: aiohttp.ClientResponse) -> StreamError:
    """Turn an error response into a StreamError with the server's own reason when it gave one."""
    try:
        text = (await resp.read()).decode("utf-8", "replace").strip()
    except RETRYABLE_ERRORS:
        text = ""
    reason = ""
    if text.startswith("{"):
        try:
            body = json.loads(text)
            error = body.get("error", body) if isinstance(body, dict) else body
            if isinstance(error, dict):
                error = error.get("message") or error.get("code") or ""
            reason = str(error)
        except ValueError:
            pass
    reason = reason or (text.splitlines()[0][:200] if text else "")
    if not reason:
        try:
            reason = HTTPStatus(resp.status).phrase
        except ValueError:
            reason = resp.reason or "error"
    return StreamError(resp.status, reason, dict(resp.headers))


class StreamClient:
    """Async client for one server (base URL). Stream ids are relative to the base URL and
    may contain slashes."""

    def __init__(self, base_url: str, auth: str | None = None, *, read_timeout: float = 120.0):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid base URL {base_url!r}: expected http(s)://host[:port]/path")
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        # Long-polls legitimately wait for the server's timeout (30 s by default); past this,
        # a silent connection is taken as dead and the read resumes on a new one.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> StreamClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def url_for(self, stream_id: str) -> str:
        return f"{self.base_url}/{stream_path_for(stream_id)}"

    def path_for(self, stream_id: str) -> str:
        """The URL path of a stream, as fork headers name their source."""
        return urlsplit(self.url_for(stream_id)).path

    def _check_protocol_answer(self, resp: aiohttp.ClientResponse, url: str) -> None:
        """Every success of PUT, POST, HEAD and GET carries Stream-Next-Offset (DELETE's 204 has
        nothing to check); without it, nothing was stored or read, whatever the status says."""
        if 200 <= resp.status < 300 and "Stream-Next-Offset" not in resp.headers:
            raise self._not_an_endpoint(url, f"its {resp.status} answer has no Stream-Next-Offset header")

    def _not_an_endpoint(self, url: str, detail: str) -> NotAStreamEndpointError:
        return NotAStreamEndpointError(url, detail, likely_base_url(self.base_url))

    def _request(self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any):
        assert self._session is not None, "use `async with StreamClient(...)`"
        all_headers = dict(headers or {})
        if self.auth:
            all_headers["Authorization"] = self.auth
        # aiohttp adds `Content-Type: application/octet-stream` to every PUT/POST; the protocol
        # gives an absent Content-Type its own meaning (inherit for forks, ignored on close).
        skip = () if "Content-Type" in all_headers else ("Content-Type",)
        return self._session.request(method, url, headers=all_headers, skip_auto_headers=skip, **kwargs)

    async def create(
        self,
        stream_id: str,
        *,
        content_type: str | None = None,
        ttl: int | None = None,
        expires_at: str | None = None,
        data: bytes = b"",
        forked_from: str | None = None,
        fork_offset: str | None = None,
    ) -> tuple[str, bool]:
        """Create a stream (or a fork of `forked_from`). Returns (URL, created) where created
        is False when an identical stream already existed."""
        headers: dict[str, str] = {}
        if content_type:
            headers["Content-Type"] = content_type
        if ttl is not None:
            headers["Stream-TTL"] = str(ttl)
        if expires_at:
            headers["Stream-Expires-At"] = expires_at
        if forked_from is not None:
            headers["Stream-Forked-From"] = self.path_for(forked_from)
            if fork_offset is not None:
                headers["Stream-Fork-Offset"] = fork_offset
        url = self.url_for(stream_id)
        async with self._request("PUT", url, headers, data=data or None) as resp:
            self._check_protocol_answer(resp, url)
            if resp.status not in (200, 201):
                raise await _error_from(resp)
            return url, resp.status == 201

    async def append(
        self,
        stream_id: str,
        data: bytes,
        *,
        content_type: str,
        producer: Producer | None = None,
        close: bool = False,
    ) -> str:
        """Append one body; returns the new tail offset. With a producer, network failures
        and 5xx answers are retried with the same (epoch, seq): the server drops duplicates."""
        backoff = Backoff()
        attempts = 0
        while True:
            headers = {"Content-Type": content_type} if data else {}
            if close:
                headers["Stream-Closed"] = "true"
            if producer is not None:
                headers.update(producer.headers())
            error: BaseException
            url = self.url_for(stream_id)
            try:
                async with self._request("POST", url, headers, data=data or None) as resp:
                    self._check_protocol_answer(resp, url)
                    if resp.status in (200, 204):
                        if producer is not None:
                            producer.seq += 1
                        return resp.headers["Stream-Next-Offset"]
                    error = await _error_from(resp)
            except RETRYABLE_ERRORS as exc:
                error = exc
            fenced = isinstance(error, StreamError) and error.status == 403 and "Producer-Epoch" in error.headers
            transient = not isinstance(error, StreamError) or error.status in RETRYABLE_STATUSES
            if producer is None or attempts >= 5 or not (fenced or transient):
                raise error
            attempts += 1
            if fenced:
                # A newer epoch took over this producer id: claim the next one, restart its sequence.
                producer.epoch = int(error.headers["Producer-Epoch"]) + 1
                producer.seq = 0
            else:
                await backoff.wait()

    async def close(self, stream_id: str) -> str:
        """Close a stream (no more appends). Returns the final offset."""
        return await self.append(stream_id, b"", content_type="", close=True)

    async def head(self, stream_id: str) -> StreamInfo:
        url = self.url_for(stream_id)
        async with self._request("HEAD", url) as resp:
            self._check_protocol_answer(resp, url)
            if resp.status != 200:
                raise await _error_from(resp)
            h = resp.headers
            return StreamInfo(
                url=url,
                content_type=h.get("Content-Type", "application/octet-stream"),
                next_offset=h["Stream-Next-Offset"],
                closed=_header_true(h, "Stream-Closed"),
                ttl=h.get("Stream-TTL"),
                expires_at=h.get("Stream-Expires-At"),
            )

    async def delete(self, stream_id: str) -> None:
        async with self._request("DELETE", self.url_for(stream_id)) as resp:
            if resp.status not in (200, 204):
                raise await _error_from(resp)

    async def read(
        self, stream_id: str, offset: str = "-1", *, follow: bool = True, live: str = "long-poll",
        on_retry: Callable[[BaseException, str], None] | None = None,
    ) -> AsyncIterator[ReadChunk]:
        """Read from `offset`: catch up, then (with `follow`) wait for new data until the
        stream is closed. After a first successful response, dropped connections and server
        restarts are survived: the read resumes from the last confirmed offset, with backoff."""
        backoff = Backoff()
        connected = failing = False
        while True:
            try:
                if follow and live == "sse":
                    pages = self._read_sse(stream_id, offset)
                else:
                    pages = self._read_long_poll(stream_id, offset, follow)
                async for chunk in pages:
                    connected, failing = True, False
                    backoff.reset()
                    offset = chunk.next_offset
                    yield chunk
                return
            except (*RETRYABLE_ERRORS, StreamError) as exc:
                retryable = not isinstance(exc, StreamError) or exc.status in RETRYABLE_STATUSES
                if not (connected and retryable):
                    raise
                if on_retry is not None and not failing:  # once per outage, not once per attempt
                    on_retry(exc, offset)
                failing = True
                await backoff.wait()

    async def _read_long_poll(self, stream_id: str, offset: str, follow: bool) -> AsyncIterator[ReadChunk]:
        url = self.url_for(stream_id)
        cursor: str | None = None
        live = False
        while True:
            params = {"offset": offset}
            if live:
                params["live"] = "long-poll"
                if cursor:
                    params["cursor"] = cursor
            async with self._request("GET", url, params=params) as resp:
                self._check_protocol_answer(resp, url)
                if resp.status not in (200, 204):
                    raise await _error_from(resp)
                # Read the whole page before yielding: its next offset is only valid for all of it.
                data = await resp.read() if resp.status == 200 else b""
                h = resp.headers
                chunk = ReadChunk(
                    data=data,
                    content_type=h.get("Content-Type", "application/octet-stream"),
                    next_offset=h["Stream-Next-Offset"],
                    up_to_date=_header_true(h, "Stream-Up-To-Date"),
                    closed=_header_true(h, "Stream-Closed"),
                )
                cursor = h.get("Stream-Cursor", cursor)
            yield chunk
            offset = chunk.next_offset
            if chunk.closed or (chunk.up_to_date and not follow):
                return
            live = live or chunk.up_to_date

    async def _read_sse(self, stream_id: str, offset: str) -> AsyncIterator[ReadChunk]:
        url = self.url_for(stream_id)
        # An SSE response is `text/event-stream`: the stream's own type (JSON or not) comes from HEAD.
        content_type = (await self.head(stream_id)).content_type
        cursor: str | None = None
        while True:
            params = {"offset": offset, "live": "sse"}
            if cursor:
                params["cursor"] = cursor
            async with self._request("GET", url, params=params) as resp:
                if resp.status != 200:
                    raise await _error_from(resp)
                # SSE carries its offsets in control events, not headers: the content type is the sign.
                if resp.content_type != "text/event-stream":
                    raise self._not_an_endpoint(
                        url, f"its answer to an SSE read is {resp.content_type}, not text/event-stream")
                base64_data = resp.headers.get("Stream-SSE-Data-Encoding", "").lower() == "base64"
                # Data events are held until the control event that confirms their offset, so a
                # connection lost in between replays them instead of losing or doubling them.
                pending: list[bytes] = []
                async for event, payload in _sse_events(resp.content):
                    if event == "data":
                        pending.append(base64.b64decode(payload) if base64_data else payload.encode("utf-8"))
                    elif event == "control":
                        control = json.loads(payload)
                        offset = control.get("streamNextOffset", offset)
                        cursor = control.get("streamCursor", cursor)
                        closed = bool(control.get("streamClosed"))
                        yield ReadChunk(
                            data=_join_sse_payloads(pending, content_type),
                            content_type=content_type,
                            next_offset=offset,
                            up_to_date=bool(control.get("upToDate")) or closed,
                            closed=closed,
                        )
                        pending = []
                        if closed:
                            return
            # The server ends SSE connections periodically (CDN collapsing): reconnect from `offset`.


def _join_sse_payloads(payloads: list[bytes], content_type: str) -> bytes:
    """Several JSON data events (each an array) merge into one array, as a catch-up read returns."""
    if not is_json_content_type(content_type) or len(payloads) < 2:
        return b"".join(payloads)
    messages: list[Any] = []
    for payload in payloads:
        messages.extend(json.loads(payload))
    return json.dumps(messages).encode("utf-8")


async def _sse_events(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, str]]:
    """Parse a text/event-stream into (event, data) pairs (WHATWG rules: one optional space
    after the colon is dropped, multi-line data is joined with newlines)."""
    event, data_lines = "message", []
    while True:
        raw = await content.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data_lines:
                yield event, "\n".join(data_lines)
            event, data_lines = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data_lines.append(value)
