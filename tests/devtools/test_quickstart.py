"""The upstream quickstart, verbatim, against `durable-streams-server dev`; and the CLI against
a URL that answers HTTP but is not a Durable Streams endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

SERVER = [sys.executable, "-m", "durable_streams.server.cli.main"]
STARTUP_GUARD_SECONDS = 30.0  # against a server that never listens, not a performance expectation


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_listening(proc: asyncio.subprocess.Process, port: int) -> None:
    deadline = asyncio.get_running_loop().time() + STARTUP_GUARD_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        if proc.returncode is not None:
            raise AssertionError(f"dev exited early ({proc.returncode})")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError("dev did not start listening")


@pytest.fixture
async def dev_server() -> AsyncIterator[str]:
    """`durable-streams-server dev` as a user starts it (on a free port); yields its origin."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *SERVER, "dev", "--port", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await wait_listening(proc, port)
        yield f"http://localhost:{port}"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_upstream_quickstart_works_verbatim_against_dev(dev_server, run_cli, start_cli):
    # export STREAM_URL=http://localhost:4437 (dev's port here is a free one)
    created = await run_cli("create", "my-stream", base_url=dev_server)
    assert (created.returncode, created.text, created.stderr) == (0, f"{dev_server}/my-stream\n", "")
    written = await run_cli("write", "my-stream", "Hello, world!", base_url=dev_server)
    assert (written.returncode, written.stderr) == (0, "")

    # `read` follows the stream live, as documented: it prints the data, then waits for more.
    reader = await start_cli("read", "my-stream", base_url=dev_server)
    assert await reader.read_exactly(13) == b"Hello, world!"
    await reader.stop()

    caught_up = await run_cli("read", "my-stream", "--no-follow", base_url=dev_server)
    assert (caught_up.returncode, caught_up.stdout) == (0, b"Hello, world!")


async def test_dev_still_serves_the_v1_stream_prefix_as_plain_paths(dev_server, run_cli):
    base_url = f"{dev_server}/v1/stream"
    assert (await run_cli("create", "x", "--content-type", "text/plain", base_url=base_url)).returncode == 0
    assert (await run_cli("write", "x", "under the prefix", base_url=base_url)).returncode == 0
    # The prefix is part of the stream's path: /v1/stream/x and /x are different streams.
    assert (await run_cli("read", "v1/stream/x", "--no-follow", base_url=dev_server)).stdout == b"under the prefix"
    missing = await run_cli("head", "x", base_url=dev_server)
    assert missing.returncode == 1 and missing.stderr.startswith("error: 404 ")


@contextlib.asynccontextmanager
async def answering_everything(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[str]:
    """A plain HTTP server on loopback giving every request to `handler`; yields its origin."""
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def catch_all_origin() -> AsyncIterator[str]:
    """Answers an empty 200 to everything, as Caddy does when no route matches."""
    async def empty_ok(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async with answering_everything(empty_ok) as origin:
        yield origin


@pytest.mark.parametrize("command", [
    ["create", "my-stream"],
    ["write", "my-stream", "Hello, world!"],
    ["write", "my-stream", "Hello, world!", "--content-type", "text/plain"],
    ["write", "my-stream", "--producer", "p1", "--content-type", "text/plain", "Hello"],
    ["read", "my-stream"],
    ["read", "my-stream", "--no-follow"],
    ["read", "my-stream", "--live", "sse"],
    ["head", "my-stream"],
    ["close", "my-stream"],
])
async def test_a_url_that_is_not_an_endpoint_fails_with_one_line_naming_it(catch_all_origin, command, run_cli):
    result = await run_cli(*command, base_url=catch_all_origin)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr == (
        f"error: {catch_all_origin}/my-stream is not a Durable Streams endpoint"
        " (its 200 answer has no Stream-Next-Offset header);"
        f" is the base URL {catch_all_origin}/v1/stream?\n")


async def test_a_base_url_already_at_the_usual_prefix_gets_no_suggestion(catch_all_origin, run_cli):
    result = await run_cli("create", "s", base_url=f"{catch_all_origin}/v1/stream")
    assert result.returncode == 1
    assert result.stderr.endswith("not a Durable Streams endpoint (its 200 answer has no Stream-Next-Offset"
                                  " header); check the base URL\n"), result.stderr


async def test_an_sse_answer_that_is_not_an_event_stream_is_not_an_endpoint(run_cli):
    # HEAD looks right; the SSE read's answer does not.
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=200, headers={"Stream-Next-Offset": "0_0"}, content_type="text/html")

    async with answering_everything(answer) as origin:
        result = await run_cli("read", "s", "--live", "sse", base_url=f"{origin}/v1/stream")
    assert result.returncode == 1
    assert result.stderr == (f"error: {origin}/v1/stream/s is not a Durable Streams endpoint"
                             " (its answer to an SSE read is text/html, not text/event-stream); check the base URL\n")
