"""StreamEngine built directly over a store, no sockets: every engine test runs over
the MemoryStore, a FileStore in tmp_path and a PostgresStore on a fresh database (one
node: tests/postgres has the cross-node ones), with a fake clock for TTL and expiry
(the loop clock, which `wait` deadlines use, stays real)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "postgres"))
from engine_support import FakeClock  # noqa: E402
from pg_fixtures import pg_cluster, pg_dsn  # noqa: E402,F401

from durable_streams.server.engine.streams import StreamEngine  # noqa: E402
from durable_streams.server.store.base import StreamStore  # noqa: E402
from durable_streams.server.store.file import FileStore  # noqa: E402
from durable_streams.server.store.memory import MemoryStore  # noqa: E402


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "file", "postgres"])
def make_store(request, tmp_path) -> Callable[[], StreamStore]:
    """A factory of stores over one place: the same MemoryStore each time, or a new
    FileStore over the same data_dir, or a new PostgresStore on the same database
    (for tests that reopen an engine)."""
    if request.param == "memory":
        memory = MemoryStore()
        return lambda: memory
    if request.param == "postgres":
        from durable_streams.server.store.postgres import PostgresStore

        dsn = request.getfixturevalue("pg_dsn")
        return lambda: PostgresStore(dsn)
    data_dir = str(tmp_path / "data")
    return lambda: FileStore(data_dir)


@pytest.fixture
async def engine(make_store, clock) -> AsyncIterator[StreamEngine]:
    engine = StreamEngine(make_store(), clock=clock)
    await engine.open()
    try:
        yield engine
    finally:
        await engine.close()
