"""Recovery from damage done by hand: torn and corrupt log tails, stray bytes in data
files, truncated data files, damaged checkpoints. Recovery serves exactly the complete
records and keeps the store writable."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from durable_streams.server.store.base import Commit, ProducerState, StoreError, StreamConfig, StreamState
from durable_streams.server.store.file import FileStore
from durable_streams.server.store.file.checkpoint import CorruptCheckpoint
from durable_streams.server.store.file.wal import list_generations, wal_name
from durable_streams.server.store.file.writer import Job

PATH = "/v1/stream/r"
CHUNKS = [b"first-chunk|", b"second|", b"third-and-last"]


def make(data_dir, **kw):
    return FileStore(str(data_dir), max_file_handles=4, checkpoint_on_close=False, **kw)


async def write_three(data_dir) -> None:
    """Create a stream and append three chunks, leaving them in the log (no checkpoint)."""
    store = make(data_dir)
    await store.open()
    await store.create(StreamConfig(PATH, "text/plain", time.time()), StreamState(tail=0))
    tail = 0
    for seq, chunk in enumerate(CHUNKS):
        tail += len(chunk)
        await store.append(PATH, chunk, Commit(tail=tail, producer=("p", ProducerState(0, seq, 1.0))))
    await store.close()


def current_log(data_dir) -> str:
    wal_dir = os.path.join(data_dir, "wal")
    return os.path.join(wal_dir, wal_name(list_generations(wal_dir)[-1]))


async def reopen(data_dir):
    store = make(data_dir)
    streams = {s.config.path: s for s in await store.open()}
    return store, streams


async def assert_serves(data_dir, chunks) -> None:
    """The stream holds exactly `chunks`, with the producer state of the last one, and
    stays writable across another restart."""
    store, streams = await reopen(data_dir)
    tail = sum(map(len, chunks))
    state = streams[PATH].state
    assert state.tail == tail
    assert state.producers["p"].seq == len(chunks) - 1
    assert await store.read(PATH, 0, tail) == b"".join(chunks)
    await store.append(PATH, b"+after", Commit(tail=tail + 6))
    await store.close()
    store, streams = await reopen(data_dir)
    assert await store.read(PATH, 0, tail + 6) == b"".join(chunks) + b"+after"
    await store.close()


async def test_log_replay_restores_everything(tmp_path):
    await write_three(tmp_path)
    store, _ = await reopen(tmp_path)
    assert store.recovery.records == 1 + len(CHUNKS)
    await store.close()
    await assert_serves(tmp_path, CHUNKS)


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
async def test_torn_log_tail_is_cut(tmp_path, cut):
    await write_three(tmp_path)
    log_path = current_log(tmp_path)
    os.truncate(log_path, os.path.getsize(log_path) - cut)
    await assert_serves(tmp_path, CHUNKS[:2])


@pytest.mark.parametrize("garbage", [b"\0" * 64, b"\xff\x00\x00\x00garbage", os.urandom(300)])
async def test_garbage_after_log_tail_is_ignored(tmp_path, garbage):
    await write_three(tmp_path)
    with open(current_log(tmp_path), "ab") as f:
        f.write(garbage)
    await assert_serves(tmp_path, CHUNKS)


async def test_corrupt_last_record_is_dropped(tmp_path):
    await write_three(tmp_path)
    log_path = current_log(tmp_path)
    with open(log_path, "r+b") as f:
        f.seek(os.path.getsize(log_path) - 3)  # inside the last record's data
        f.write(b"XYZ")
    await assert_serves(tmp_path, CHUNKS[:2])


def data_file(data_dir) -> str:
    (found,) = [
        os.path.join(root, name)
        for root, _, names in os.walk(os.path.join(data_dir, "streams"))
        for name in names
        if name.endswith(".data")
    ]
    return found


@pytest.mark.parametrize("checkpointed", [False, True])
async def test_stray_bytes_in_data_file_are_never_served(tmp_path, checkpointed):
    # Bytes past the tail are what a write leaves when its log record never made it.
    await write_three(tmp_path)
    store, _ = await reopen(tmp_path)  # recovery writes the data file out of the log
    await store.close()
    if checkpointed:
        store, _ = await reopen(tmp_path)
        await store.checkpoint()
        await store.close()
    with open(data_file(tmp_path), "ab") as f:
        f.write(b"UNACKNOWLEDGED")
    await assert_serves(tmp_path, CHUNKS)


async def test_truncated_data_file_is_reported_not_served(tmp_path):
    await write_three(tmp_path)
    store, _ = await reopen(tmp_path)
    await store.checkpoint()  # the log no longer holds the bytes
    await store.close()
    os.truncate(data_file(tmp_path), 5)
    store, streams = await reopen(tmp_path)
    try:
        assert streams[PATH].state.tail == sum(map(len, CHUNKS))
        assert await store.read(PATH, 0, 5) == CHUNKS[0][:5]
        with pytest.raises(StoreError, match="shorter than its committed length"):
            await store.read(PATH, 0, 10)
    finally:
        await store.close()


async def test_damaged_checkpoint_refuses_to_start(tmp_path):
    await write_three(tmp_path)
    store, _ = await reopen(tmp_path)
    await store.checkpoint()
    await store.close()
    path = os.path.join(tmp_path, "checkpoint")
    with open(path, "r+b") as f:
        f.seek(30)
        f.write(b"#")
    store = make(tmp_path)
    with pytest.raises(CorruptCheckpoint, match="is damaged"):
        await store.open()
    # The failed open released the data_dir: a fixed checkpoint can be tried again.
    os.unlink(path)
    store = make(tmp_path)
    await store.open()
    await store.close()


async def test_half_written_checkpoint_is_ignored(tmp_path):
    # A crash while writing a checkpoint leaves checkpoint.tmp; the old state stands.
    await write_three(tmp_path)
    with open(os.path.join(tmp_path, "checkpoint.tmp"), "wb") as f:
        f.write(b"DSCKPT\0\1 torn")
    await assert_serves(tmp_path, CHUNKS)
    assert not os.path.exists(os.path.join(tmp_path, "checkpoint.tmp"))


async def test_empty_next_log_generation_is_tolerated(tmp_path):
    # A crash right after a new log file was created, before its header was written.
    await write_three(tmp_path)
    gens = list_generations(os.path.join(tmp_path, "wal"))
    open(os.path.join(tmp_path, "wal", wal_name(gens[-1] + 1)), "wb").close()
    await assert_serves(tmp_path, CHUNKS)


async def test_recovery_replays_only_the_log_since_the_checkpoint(tmp_path):
    await write_three(tmp_path)
    store, _ = await reopen(tmp_path)
    await store.checkpoint()
    await store.append(PATH, b"tail", Commit(tail=sum(map(len, CHUNKS)) + 4))
    await store.close()
    store, _ = await reopen(tmp_path)
    assert store.recovery.records == 1
    await store.close()


def stream_files(data_dir) -> list[str]:
    return [name for _, _, names in os.walk(os.path.join(data_dir, "streams")) for name in names]


async def test_delete_reclaims_and_stays_deleted_across_a_crash(tmp_path):
    await write_three(tmp_path)
    store, _ = await reopen(tmp_path)
    await store.delete(PATH)
    assert stream_files(tmp_path) == []  # storage reclaimed at once
    await store.create(StreamConfig(PATH, "text/plain", time.time()), StreamState(tail=3), b"new")
    await store.close()  # no checkpoint: the log holds create, appends, delete, create
    store, streams = await reopen(tmp_path)
    try:
        assert streams[PATH].state.tail == 3 and streams[PATH].state.producers == {}
        assert await store.read(PATH, 0, 3) == b"new"
        assert len(stream_files(tmp_path)) == 1
    finally:
        await store.close()


async def test_orphan_data_files_are_removed(tmp_path):
    # Left by a crash between writing a create's bytes and its log record.
    await write_three(tmp_path)
    orphan = os.path.join(tmp_path, "streams", "ab", "ab" + "0" * 30 + ".data")
    orphan_index = os.path.join(tmp_path, "streams", "cd", "cd" + "0" * 30 + ".idx")  # an unlink lost
    for name in (orphan, orphan_index):
        with open(name, "wb") as f:
            f.write(b"never acknowledged")
    store, streams = await reopen(tmp_path)
    await store.checkpoint()  # runs after the start-up sweep in the writer's queue
    await store.close()
    assert not os.path.exists(orphan)
    assert not os.path.exists(orphan_index)
    assert list(streams) == [PATH]


async def test_touch_survives_a_crash(tmp_path):
    await write_three(tmp_path)
    store = make(tmp_path, touch_flush_interval=0.01)
    await store.open()
    flushes = store.flush_count
    store.touch(PATH, 12345.0)
    for _ in range(1000):  # the lazy flush (not close) must write it: wait for its fsync
        if store.flush_count > flushes:
            break
        await asyncio.sleep(0.01)
    store._writer.submit(Job("halt"))  # die without close(): no touch flush, no checkpoint
    await asyncio.get_running_loop().run_in_executor(None, store._writer.join)
    store._storage.close()
    store._lock.release()
    store, streams = await reopen(tmp_path)
    assert streams[PATH].state.last_access == 12345.0
    await store.close()
