"""`durable-stream`: a command-line client for Durable Streams servers.

The HTTP side lives in `stream_client.StreamClient`; this module is the command line:
argument parsing, stdin/stdout handling, error lines, exit codes.

Base URL from `STREAM_URL` (or `--url`), Authorization header from `STREAM_AUTH` (or `--auth`).
"""


import argparse
import asyncio
import json
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp

from .stream_client import (
    DEFAULT_BASE_URL,
    RETRYABLE_ERRORS,
    NotAStreamEndpointError,
    Producer,
    ReadChunk,
    StreamClient,
    StreamError,
    StreamIdError,
    is_json_content_type,
)

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

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
            loop.call_soon_threadsafe(lambda error=exc: future.done() or future.set_exception(error))
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
    except (StreamError, StreamIdError, NotAStreamEndpointError, UsageError, ValueError, *RETRYABLE_ERRORS,
            aiohttp.ClientError) as exc:
        print(_error_line(exc), file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
