"""A real server on 127.0.0.1 (ephemeral port) per test, built from the test launcher,
and an aiohttp client session."""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from launcher import serving  # noqa: E402

from durable_streams.server.config.model import DurableStreams  # noqa: E402
from durable_streams.server.protocol.handler import DurableStreamsHandler  # noqa: E402

_names = itertools.count()


class Server:
    def __init__(self, base_url: str, handler: DurableStreamsHandler) -> None:
        self.base_url = base_url
        self.handler = handler

    def url(self, path: str) -> str:
        return self.base_url + path

    @staticmethod
    def new_path(prefix: str = "s") -> str:
        return f"/v1/stream/{prefix}-{next(_names)}"


@contextlib.asynccontextmanager
async def running(**settings) -> AsyncIterator[Server]:
    handler = DurableStreamsHandler(DurableStreams(**settings))
    async with serving(handler) as port:
        yield Server(f"http://127.0.0.1:{port}", handler)


@pytest.fixture
def start_server():
    """`async with start_server(**DurableStreams fields) as server: ...`"""
    return running


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running(long_poll_timeout=1.0) as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # A guard against a hung server, not a performance expectation.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session
