"""pytest plugin: a Durable Streams server for your tests.

Fixtures:
- `durable_streams_server`: a running in-memory server (one per test session), with `.url`
  (base URL where streams live), `.origin`, `.host`, `.port`. It runs on a background thread,
  so it serves synchronous and asynchronous tests alike.
- `durable_stream_url`: a factory returning a fresh, unique stream URL on that server
  (the stream is not created).

Enabled automatically by the package's `pytest11` entry point, or explicitly with
`pytest_plugins = ["durable_streams.server.pytest_plugin"]` / `-p durable_streams.server.pytest_plugin`.
Override `durable_streams_server` in a conftest.py to change its settings.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import BlockingDurableStreamTestServer


@pytest.fixture(scope="session")
def durable_streams_server() -> Iterator[BlockingDurableStreamTestServer]:
    # Imported here: the plugin loads in every pytest run of an environment that has this
    # package; only sessions that use the fixture pay for the server's imports.
    from .testing import BlockingDurableStreamTestServer

    with BlockingDurableStreamTestServer() as server:
        yield server


@pytest.fixture
def durable_stream_url(
    durable_streams_server: BlockingDurableStreamTestServer, request: pytest.FixtureRequest
) -> Callable[..., str]:
    """`durable_stream_url()` -> `{server.url}/{test name}-{random}`; `durable_stream_url("name")`
    uses "name" as the prefix instead. Every call gives a new URL."""
    test_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-") or "stream"

    def make(prefix: str | None = None) -> str:
        return f"{durable_streams_server.url}/{prefix or test_name}-{uuid.uuid4().hex[:12]}"

    return make
