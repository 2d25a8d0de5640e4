"""`durable-stream`: a command-line client for Durable Streams servers.

Two parts, kept apart on purpose:
- `StreamClient`, a small async HTTP client for the protocol (aiohttp), usable on its own;
- the command line (`main`): argument parsing, stdin/stdout handling, error lines, exit codes.

Base URL from `STREAM_URL` (or `--url`), Authorization header from `STREAM_AUTH` (or `--auth`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import select
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

DEFAULT_BASE_URL = "http://localhost:4437/v1/stream"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

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


def is_json_content_type(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";", 1)[0].strip().lower() == "application/json"


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
            try:
                async with self._request("POST", self.url_for(stream_id), headers, data=data or None) as resp:
                    if resp.status in (200, 204):
                        if producer is not None:
                            producer.seq += 1
                        return resp.headers.get("Stream-Next-Offset", "")
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
            if resp.status != 200:
                raise await _error_from(resp)
            h = resp.headers
            return StreamInfo(
                url=url,
                content_type=h.get("Content-Type", "application/octet-stream"),
                next_offset=h.get("Stream-Next-Offset", ""),
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
                if resp.status not in (200, 204):
                    raise await _error_from(resp)
                # Read the whole page before yielding: its next offset is only valid for all of it.
                data = await resp.read() if resp.status == 200 else b""
                h = resp.headers
                chunk = ReadChunk(
                    data=data,
                    content_type=h.get("Content-Type", "application/octet-stream"),
                    next_offset=h.get("Stream-Next-Offset", offset),
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


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


class UsageError(Exception):
    """Bad input on the command line or stdin: reported without an HTTP status."""


def json_messages(text: str) -> list[Any]:
    """Messages of a JSON write. One document, or JSON Lines (one document per line); each
    document's top-level array is flattened one level, as the protocol does for a POST."""
    try:
        documents = [json.loads(text)]
    except ValueError as whole_error:
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            documents = [json.loads(line) for line in lines]
        except ValueError:
            raise UsageError(f"invalid JSON: {whole_error}") from None
        if len(documents) < 2:
            raise UsageError(f"invalid JSON: {whole_error}") from None
    messages: list[Any] = []
    for document in documents:
        messages.extend(document if isinstance(document, list) else [document])
    if not messages:
        raise UsageError("nothing to write: the JSON input holds no message (empty array)")
    return messages


# stdin is read with os.read on its descriptor, never through sys.stdin's buffered object: the
# reading thread may still be blocked at exit, and a buffered reader's lock would abort Python.


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_available(fd: int, limit: int) -> bytes:
    """Block for the first bytes, then take what is already waiting, up to `limit`: piped input
    becomes one append per burst instead of one per pipe buffer."""
    data = bytearray(os.read(fd, limit))
    while data and len(data) < limit:
        ready, _, _ = select.select([fd], [], [], 0)
        if not ready:
            break
        more = os.read(fd, limit - len(data))
        if not more:
            break
        data += more
    return bytes(data)


async def _in_daemon_thread(function: Callable[[], Any]) -> Any:
    """Run a blocking call (stdin) without holding up Ctrl-C or interpreter exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def run() -> None:
        try:
            result = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(lambda: future.done() or future.set_exception(exc))
        else:
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(result))

    threading.Thread(target=run, daemon=True).start()
    return await future


class Progress:
    """Bytes copied so far, on stderr; throttled. Shown when stdout is redirected and stderr is a
    terminal once the copy is large, or always with --progress."""

    LARGE = 1 << 20

    def __init__(self, mode: str):
        interactive = sys.stderr.isatty()
        if mode == "auto":
            self.enabled = not sys.stdout.isatty() and interactive
            self.threshold = self.LARGE
        else:
            self.enabled = mode == "always"
            self.threshold = 0
        self.end = "\r" if interactive else "\n"
        self.total = 0
        self.last_shown = 0.0
        self.shown = False

    def add(self, count: int) -> None:
        self.total += count
        now = time.monotonic()
        if self.enabled and self.total >= self.threshold and now - self.last_shown >= 0.25:
            self.last_shown = now
            self.shown = True
            sys.stderr.write(f"{_human_bytes(self.total)} copied{self.end}")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write(f"{_human_bytes(self.total)} copied\n")
            sys.stderr.flush()


def _human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit} ({count} B)"
        value /= 1024
    return f"{count} B"


def _messages_of(chunk: ReadChunk) -> Iterable[Any]:
    return json.loads(chunk.data) if chunk.data.strip() else []


async def cmd_create(client: StreamClient, args: argparse.Namespace) -> None:
    url, created = await client.create(
        args.stream_id, content_type=args.content_type, ttl=args.ttl, expires_at=args.expires_at
    )
    if not created:
        print(f"note: {args.stream_id} already exists with this configuration", file=sys.stderr)
    print(url)


async def cmd_write(client: StreamClient, args: argparse.Namespace) -> None:
    content_type = args.content_type or (await client.head(args.stream_id)).content_type
    producer = Producer.fresh(args.producer) if args.producer else None

    async def append(body: bytes) -> None:
        await client.append(args.stream_id, body, content_type=content_type, producer=producer)

    if args.content:
        text = " ".join(args.content)
        if is_json_content_type(content_type):
            await append(json.dumps(json_messages(text)).encode("utf-8"))
        else:
            await append(text.encode("utf-8"))
        return
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("nothing to write: give the content as arguments or pipe it to stdin")
    stdin = sys.stdin.fileno()
    if is_json_content_type(content_type):
        raw = await _in_daemon_thread(lambda: _read_all(stdin))
        await append(json.dumps(json_messages(raw.decode("utf-8"))).encode("utf-8"))
        return
    # Raw bytes: append each burst of input as it arrives, so `tail -f log | durable-stream write`
    # streams instead of waiting for end of input.
    wrote = False
    while chunk := await _in_daemon_thread(lambda: _read_available(stdin, 1 << 20)):
        await append(chunk)
        wrote = True
    if not wrote:
        raise UsageError("nothing to write: stdin was empty")


async def cmd_read(client: StreamClient, args: argparse.Namespace) -> None:
    out = sys.stdout.buffer
    progress = Progress(args.progress)

    def on_retry(exc: BaseException, offset: str) -> None:
        reason = str(exc) or type(exc).__name__
        print(f"connection lost ({reason}); resuming from offset {offset}", file=sys.stderr)

    chunks = client.read(
        args.stream_id, args.offset, follow=not args.no_follow, live=args.live, on_retry=on_retry
    )
    try:
        async for chunk in chunks:
            if not chunk.data:
                continue
            if is_json_content_type(chunk.content_type):
                lines = "".join(json.dumps(m, ensure_ascii=False, separators=(",", ":")) + "\n" for m in _messages_of(chunk))
                out.write(lines.encode("utf-8"))
            else:
                out.write(chunk.data)
            out.flush()
            progress.add(len(chunk.data))
    finally:
        progress.finish()


async def cmd_head(client: StreamClient, args: argparse.Namespace) -> None:
    info = await client.head(args.stream_id)
    fields = {
        "url": info.url,
        "content-type": info.content_type,
        "next-offset": info.next_offset,
        "closed": "true" if info.closed else "false",
        "ttl": info.ttl,
        "expires-at": info.expires_at,
    }
    for name, value in fields.items():
        if value is not None:
            print(f"{name}: {value}")


async def cmd_close(client: StreamClient, args: argparse.Namespace) -> None:
    print(await client.close(args.stream_id))


async def cmd_delete(client: StreamClient, args: argparse.Namespace) -> None:
    await client.delete(args.stream_id)


async def cmd_fork(client: StreamClient, args: argparse.Namespace) -> None:
    url, created = await client.create(
        args.stream_id, forked_from=args.source, fork_offset=args.offset, ttl=args.ttl
    )
    if not created:
        print(f"note: {args.stream_id} already exists as this fork", file=sys.stderr)
    print(url)


def build_parser() -> argparse.ArgumentParser:
    # Global options are accepted before and after the subcommand; SUPPRESS keeps a
    # subcommand's parser from overwriting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help="server base URL where streams live (default: $STREAM_URL or %s)" % DEFAULT_BASE_URL)
    common.add_argument("--auth", default=argparse.SUPPRESS,
                        help="Authorization header value, e.g. 'Bearer TOKEN' (default: $STREAM_AUTH)")

    parser = argparse.ArgumentParser(
        prog="durable-stream",
        description="Create, write, read and manage Durable Streams.",
        parents=[common],
        epilog="Stream ids are relative to the base URL and may contain slashes (a/b/c).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[..., Any], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.add_argument("stream_id", metavar="STREAM_ID")
        sub.set_defaults(handler=handler)
        return sub

    def content_type_options(sub: argparse.ArgumentParser, default_help: str) -> None:
        group = sub.add_mutually_exclusive_group()
        group.add_argument("--content-type", metavar="TYPE", help=default_help)
        group.add_argument("--json", dest="content_type", action="store_const", const="application/json",
                           help="shorthand for --content-type application/json")

    create = command("create", cmd_create, "create a stream (prints its URL)")
    content_type_options(create, "content type of the stream (default: application/octet-stream)")
    create.add_argument("--ttl", type=int, metavar="SECONDS", help="delete after this many idle seconds")
    create.add_argument("--expires-at", metavar="RFC3339", help="delete at this time")

    write = command("write", cmd_write, "append the arguments (joined by spaces) or stdin to a stream")
    write.add_argument("content", nargs="*", metavar="CONTENT")
    content_type_options(write, "content type to send (default: the stream's, asked with HEAD)")
    write.add_argument("--producer", metavar="ID",
                       help="write as idempotent producer ID (Producer-Id/Epoch/Seq; safe retries)")

    read = command("read", cmd_read, "print a stream: catch up, then follow new data until it is closed")
    read.add_argument("--offset", default="-1", help="start offset (default: -1, the beginning; 'now': the end)")
    read.add_argument("--no-follow", action="store_true", help="stop once caught up")
    read.add_argument("--live", choices=("long-poll", "sse"), default="long-poll",
                      help="how to follow new data (default: long-poll)")
    read.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                      help="bytes copied on stderr (auto: when stdout is redirected and stderr is a terminal)")

    command("head", cmd_head, "show a stream's metadata")
    command("close", cmd_close, "close a stream: no more appends (prints the final offset)")
    command("delete", cmd_delete, "delete a stream")

    fork = command("fork", cmd_fork, "create STREAM_ID as a fork of another stream (prints its URL)")
    fork.add_argument("--from", dest="source", required=True, metavar="SOURCE_ID", help="stream to fork")
    fork.add_argument("--offset", help="fork point (default: the source's current end)")
    fork.add_argument("--ttl", type=int, metavar="SECONDS", help="delete after this many idle seconds")
    return parser


async def run(args: argparse.Namespace) -> None:
    base_url = getattr(args, "url", None) or os.environ.get("STREAM_URL") or DEFAULT_BASE_URL
    auth = getattr(args, "auth", None) or os.environ.get("STREAM_AUTH") or None
    async with StreamClient(base_url, auth) as client:
        await args.handler(client, args)


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, StreamError):
        return f"error: {exc.status} {exc.reason}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"error: cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, asyncio.TimeoutError):
        return "error: the server did not answer in time"
    return f"error: {exc or type(exc).__name__}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse gives `write`'s CONTENT... only the words before the first option; words after
    # an option (`write s --json '{"a": 1}'`) come back unparsed and belong to the content.
    if extra and args.command == "write" and not any(word.startswith("-") for word in extra):
        args.content += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (StreamError, StreamIdError, UsageError, ValueError, *RETRYABLE_ERRORS, aiohttp.ClientError) as exc:
        print(_error_line(exc), file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
