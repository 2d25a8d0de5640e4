"""The StreamStore contract (store/base.py), run against every store implementation.

Durable stores are also closed and reopened, and must hand back the same streams and
state; the memory store is checked on what it can show (bytes while open).
"""

from __future__ import annotations

import importlib
import time

import pytest

from durable_streams.server.store.base import (
    Commit,
    ProducerState,
    StreamConfig,
    StreamState,
)
from durable_streams.server.store.file import FileStore


def _memory_store(tmp_path):
    try:
        module = importlib.import_module("durable_streams.server.store.memory")
    except ModuleNotFoundError:
        pytest.skip("MemoryStore not written yet")
    return module.MemoryStore()


def _file_store(tmp_path):
    return FileStore(str(tmp_path / "data"), max_file_handles=4)


@pytest.fixture(params=["memory", "file"])
def make_store(request, tmp_path):
    factory = {"memory": _memory_store, "file": _file_store}[request.param]
    return lambda: factory(tmp_path)


@pytest.fixture
async def store(make_store):
    s = make_store()
    assert await s.open() == []
    yield s
    await s.close()


async def reopened(store, make_store):
    """For a durable store, close and reopen it; returns (store, {path: StoredStream})."""
    if not store.durable:
        return store, None
    await store.close()
    fresh = make_store()
    streams = {s.config.path: s for s in await fresh.open()}
    return fresh, streams


def config(path, base=0, **settings):
    return StreamConfig(path=path, content_type="application/octet-stream", created_at=time.time(),
                        base_offset=base, settings=settings)


async def test_create_read_append(store, make_store):
    await store.create(config("/s/a", ttl=60), StreamState(tail=5), b"hello")
    await store.append("/s/a", b" world", Commit(tail=11))
    assert await store.read("/s/a", 0, 11) == b"hello world"
    assert await store.read("/s/a", 3, 8) == b"lo wo"
    assert await store.read("/s/a", 11, 11) == b""
    store, streams = await reopened(store, make_store)
    try:
        assert await store.read("/s/a", 0, 11) == b"hello world"
        if streams is not None:
            (only,) = streams.values()
            assert only.config.settings == {"ttl": 60}
            assert only.state.tail == 11 and not only.state.closed
    finally:
        await store.close()


async def test_commit_state_travels_with_data(store, make_store):
    await store.create(config("/s/p"), StreamState(tail=0))
    p1 = ProducerState(epoch=2, seq=7, updated_at=100.5)
    await store.append("/s/p", b"abc", Commit(tail=3, stream_seq="0001", producer=("w1", p1)))
    p2 = ProducerState(epoch=2, seq=8, updated_at=101.0)
    await store.append("/s/p", b"", Commit(tail=3, close=True, closed_by=("w1", 2, 8), producer=("w1", p2)))
    assert await store.read("/s/p", 0, 3) == b"abc"
    store, streams = await reopened(store, make_store)
    try:
        if streams is not None:
            state = streams["/s/p"].state
            assert state.tail == 3
            assert state.closed and state.closed_by == ("w1", 2, 8)
            assert state.stream_seq == "0001"
            assert state.producers == {"w1": p2}
    finally:
        await store.close()


async def test_fork_base_offset(store, make_store):
    await store.create(config("/s/src"), StreamState(tail=10), b"0123456789")
    await store.create(config("/s/fork", base=4, forked_from="/s/src"), StreamState(tail=7), b"XYZ")
    await store.append("/s/fork", b"!!", Commit(tail=9))
    assert await store.read("/s/fork", 4, 9) == b"XYZ!!"
    assert await store.read("/s/fork", 6, 8) == b"Z!"
    store, streams = await reopened(store, make_store)
    try:
        assert await store.read("/s/fork", 4, 9) == b"XYZ!!"
        if streams is not None:
            assert streams["/s/fork"].config.base_offset == 4
            assert streams["/s/fork"].config.settings == {"forked_from": "/s/src"}
    finally:
        await store.close()


async def test_soft_delete_keeps_bytes(store, make_store):
    await store.create(config("/s/soft"), StreamState(tail=3), b"abc")
    await store.mark_soft_deleted("/s/soft")
    assert await store.read("/s/soft", 0, 3) == b"abc"
    store, streams = await reopened(store, make_store)
    try:
        assert await store.read("/s/soft", 0, 3) == b"abc"
        if streams is not None:
            assert streams["/s/soft"].state.soft_deleted
    finally:
        await store.close()


async def test_delete_then_recreate_never_resurrects(store, make_store):
    await store.create(config("/s/r"), StreamState(tail=8), b"old-data")
    await store.append("/s/r", b"-more", Commit(tail=13, producer=("p", ProducerState(0, 0, 1.0))))
    await store.delete("/s/r")
    await store.create(config("/s/r"), StreamState(tail=3), b"new")
    assert await store.read("/s/r", 0, 3) == b"new"
    store, streams = await reopened(store, make_store)
    try:
        assert await store.read("/s/r", 0, 3) == b"new"
        if streams is not None:
            assert list(streams) == ["/s/r"]
            assert streams["/s/r"].state.tail == 3 and streams["/s/r"].state.producers == {}
    finally:
        await store.close()


async def test_delete_removes_stream(store, make_store):
    await store.create(config("/s/gone"), StreamState(tail=1), b"x")
    await store.create(config("/s/kept"), StreamState(tail=1), b"y")
    await store.delete("/s/gone")
    store, streams = await reopened(store, make_store)
    try:
        if streams is not None:
            assert list(streams) == ["/s/kept"]
    finally:
        await store.close()


async def test_touch_is_persisted_lazily(store, make_store):
    await store.create(config("/s/t"), StreamState(tail=0, last_access=10.0))
    store.touch("/s/t", 500.0)
    store.touch("/s/t", 400.0)  # an older access never moves the clock back
    store, streams = await reopened(store, make_store)
    try:
        if streams is not None:
            assert streams["/s/t"].state.last_access == 500.0
    finally:
        await store.close()


async def test_returned_state_is_a_copy(store, make_store):
    state = StreamState(tail=1)
    await store.create(config("/s/c"), state, b"a")
    state.tail = 999  # the engine owns its objects; the store must have kept its own
    state.producers["x"] = ProducerState(1, 1, 1.0)
    store, streams = await reopened(store, make_store)
    try:
        if streams is not None:
            assert streams["/s/c"].state.tail == 1 and streams["/s/c"].state.producers == {}
    finally:
        await store.close()


def test_state_copy_carries_every_field_and_shares_no_mutable_part():
    # copy() lists the fields by hand (it runs per append); a field added to StreamState
    # and forgotten there would silently reset on every copy.
    import dataclasses

    values = {"tail": 7, "closed": True, "closed_by": ("p", 1, 2), "stream_seq": "s9",
              "producers": {"p": ProducerState(1, 2, 3.0)}, "soft_deleted": True,
              "last_access": 4.0, "floor": 5, "marks": ((5, 1.0), (6, 2.0))}
    assert set(values) == {f.name for f in dataclasses.fields(StreamState)}, "new field: add it to values and to copy()"
    original = StreamState(**values)
    copied = original.copy()
    assert copied == original
    copied.producers["q"] = ProducerState(0, 0, 0.0)
    assert "q" not in original.producers
