"""Fixtures for the ops tests: a handler served by the project's HTTP server on a real
ephemeral port, and an aiohttp client session."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from durable_streams.server.http import HTTPServer
from durable_streams.server.http.server import Handler


@contextlib.asynccontextmanager
async def _serving(handler: Handler) -> AsyncIterator[str]:
    server = HTTPServer(handler)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    await server.listen(sock)
    port = sock.getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.shutdown(1.0)


@pytest.fixture
def serve() -> Callable[[Handler], contextlib.AbstractAsyncContextManager[str]]:
    """`async with serve(handler) as base_url:` runs `handler` on 127.0.0.1 port 0."""
    return _serving


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
