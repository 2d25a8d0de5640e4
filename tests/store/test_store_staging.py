"""Appended bytes are staged in memory after their log record is durable and written to
the data files in bulk: reads must see every acknowledged byte at every moment."""

from __future__ import annotations

import os

import pytest

from durable_streams.server.store.base import Commit, StreamConfig, StreamState
from durable_streams.server.store.file import FileStore
from durable_streams.server.store.file.storage import Storage


def _storage(tmp_path) -> Storage:
    storage = Storage(str(tmp_path), 10)
    storage.make_dirs()
    return storage


def test_reads_join_file_bytes_and_staged_bytes(tmp_path) -> None:
    storage = _storage(tmp_path)
    storage.write_data("ab" * 16, 0, b"0123")
    storage.stage_data("ab" * 16, 4, b"4567")
    storage.stage_data("ab" * 16, 8, b"89")
    assert storage.staged.bytes == 6
    for start in range(10):
        for end in range(start, 11):
            assert storage.read_data("ab" * 16, start, end - start) == b"0123456789"[start:end], (start, end)
    storage.write_staged()
    assert storage.staged.bytes == 0
    assert open(storage.pool.path_of("ab" * 16), "rb").read() == b"0123456789"
    assert storage.read_data("ab" * 16, 2, 7) == b"2345678"
    storage.close()


def test_a_stream_with_only_staged_bytes_has_no_file_yet(tmp_path) -> None:
    storage = _storage(tmp_path)
    storage.stage_data("cd" * 16, 0, b"hello")
    assert not os.path.exists(storage.pool.path_of("cd" * 16))
    assert storage.read_data("cd" * 16, 1, 3) == b"ell"
    storage.discard_file("cd" * 16)  # a delete drops what was staged
    assert storage.staged.bytes == 0
    storage.write_staged()
    assert not os.path.exists(storage.pool.path_of("cd" * 16))
    storage.close()


def test_out_of_order_stage_writes_earlier_bytes_first(tmp_path) -> None:
    storage = _storage(tmp_path)
    storage.stage_data("ef" * 16, 0, b"abc")
    storage.stage_data("ef" * 16, 10, b"xyz")  # not contiguous: the staged part goes out first
    assert open(storage.pool.path_of("ef" * 16), "rb").read(3) == b"abc"
    assert storage.read_data("ef" * 16, 10, 3) == b"xyz"
    storage.close()


@pytest.mark.asyncio
async def test_staged_bytes_are_served_and_a_checkpoint_writes_them_out(tmp_path) -> None:
    store = FileStore(str(tmp_path / "d"), 4)
    await store.open()
    store._writer._write_staged = lambda: None  # never written out, but by a checkpoint
    config = StreamConfig("/s", "application/octet-stream", 1.0, 0, {})
    await store.create(config, StreamState(tail=0))
    storage = store._storage
    tail, expected = 0, b""
    for i in range(200):
        data = f"<{i}>".encode()
        tail += len(data)
        expected += data
        await store.append("/s", data, Commit(tail=tail))
        assert await store.read("/s", 0, tail) == expected
        assert await store.read("/s", tail - len(data) - 1 if i else 0, tail) == expected[-len(data) - (1 if i else 0):]
    assert storage.staged.bytes == len(expected)
    incarnation = storage.catalog.by_path["/s"].incarnation
    await store.checkpoint()
    assert storage.staged.bytes == 0
    with open(storage.pool.path_of(incarnation), "rb") as f:
        assert f.read() == expected
    await store.close()


@pytest.mark.asyncio
async def test_staged_bytes_survive_a_stop_without_checkpoint(tmp_path) -> None:
    """The log holds staged bytes: a store halted before writing them out (as a crash
    would) recovers them."""
    store = FileStore(str(tmp_path / "d"), 4, checkpoint_on_close=False)
    await store.open()
    store._writer._write_staged = lambda: None
    await store.create(StreamConfig("/s", "text/plain", 1.0, 0, {}), StreamState(tail=0))
    await store.append("/s", b"abc", Commit(tail=3))
    await store.append("/s", b"def", Commit(tail=6))
    await store.close()
    again = FileStore(str(tmp_path / "d"), 4)
    streams = await again.open()
    assert [s.state.tail for s in streams] == [6]
    assert await again.read("/s", 0, 6) == b"abcdef"
    await again.close()
