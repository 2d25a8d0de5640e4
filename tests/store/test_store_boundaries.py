"""Append boundaries (`StreamStore.next_boundary`): where each append and a create's
initial data ended. Both stores keep them; the file store keeps them across restarts,
checkpoints (index files) and the loss of its index files (an upgraded data_dir)."""

from __future__ import annotations

import json
import os
import time
import zlib

import pytest

from durable_streams.server.store.base import Commit, StreamConfig, StreamState
from durable_streams.server.store.file import FileStore
from durable_streams.server.store.file import checkpoint
from durable_streams.server.store.memory import MemoryStore

PATH = "/v1/stream/b"
FORK = "/v1/stream/fork"
# Stream PATH: created with "ab", then "cde", a close-only commit, "fg": ends 2, 5, 7.
ENDS = [2, 5, 7]
# Stream FORK (base 10): created empty, then "xyz": end 13.
FORK_ENDS = [13]


def file_store(data_dir, **kw) -> FileStore:
    return FileStore(str(data_dir), max_file_handles=4, checkpoint_on_close=False, **kw)


async def write(store) -> None:
    await store.create(StreamConfig(PATH, "text/plain", time.time()), StreamState(tail=2), b"ab")
    await store.append(PATH, b"cde", Commit(tail=5))
    await store.append(PATH, b"", Commit(tail=5, close=False, stream_seq="1"))  # no data: no append end
    await store.create(StreamConfig(FORK, "text/plain", time.time(), base_offset=10), StreamState(tail=10))
    await store.append(FORK, b"xyz", Commit(tail=13))
    await store.append(PATH, b"fg", Commit(tail=7))


async def ends_of(store, path: str, base: int, tail: int) -> list[int]:
    """Each position's answer, checked against the walk from one boundary to the next."""
    found = []
    for position in range(base, tail):
        boundary = await store.next_boundary(path, position)
        assert position < boundary <= tail
        if not found or found[-1] != boundary:
            found.append(boundary)
    return found


async def assert_ends(store, ends=ENDS, fork_ends=FORK_ENDS) -> None:
    assert await ends_of(store, PATH, 0, 7) == ends
    assert await ends_of(store, FORK, 10, 13) == fork_ends


async def test_memory_store_keeps_boundaries():
    store = MemoryStore()
    await store.open()
    await write(store)
    await assert_ends(store)


async def test_file_store_keeps_boundaries_open_and_after_replay(tmp_path):
    store = file_store(tmp_path)
    await store.open()
    await write(store)
    await assert_ends(store)
    await store.close()  # no checkpoint: the next open rebuilds them from the log
    store = file_store(tmp_path)
    await store.open()
    assert store.recovery.records > 0
    await assert_ends(store)
    await store.close()


@pytest.mark.parametrize("replay_after", [False, True])
async def test_boundaries_survive_checkpoints(tmp_path, replay_after):
    store = file_store(tmp_path)
    await store.open()
    await write(store)
    await store.checkpoint()  # moves them to the index files
    await assert_ends(store)
    await store.append(PATH, b"hij", Commit(tail=10))
    await store.checkpoint()  # appends one more to the index file
    await store.append(PATH, b"k", Commit(tail=11))
    ends = ENDS + [10, 11]
    assert await ends_of(store, PATH, 0, 11) == ends
    await store.close()
    store = file_store(tmp_path)
    await store.open()
    assert store.recovery.records == 1  # "k" from the log, the rest from the index
    assert await ends_of(store, PATH, 0, 11) == ends
    if replay_after:
        await store.checkpoint()
        await store.close()
        store = file_store(tmp_path)
        await store.open()
        assert store.recovery.records == 0
        assert await ends_of(store, PATH, 0, 11) == ends
    await store.close()


def index_files(data_dir) -> list[str]:
    return [os.path.join(root, name) for root, _, names in os.walk(os.path.join(data_dir, "streams"))
            for name in names if name.endswith(".idx")]


async def test_a_missing_index_only_makes_boundaries_lenient(tmp_path):
    store = file_store(tmp_path)
    await store.open()
    await write(store)
    await store.checkpoint()
    await store.append(PATH, b"hij", Commit(tail=10))
    await store.close()
    for name in index_files(tmp_path):
        os.unlink(name)
    store = file_store(tmp_path)
    await store.open()
    # Below the checkpoint, the first boundary known: the one from the log.
    assert await ends_of(store, PATH, 0, 10) == [10]
    await store.close()


async def test_a_checkpoint_from_before_boundaries_opens(tmp_path):
    store = file_store(tmp_path)
    await store.open()
    await write(store)
    await store.checkpoint()
    await store.close()
    for name in index_files(tmp_path):
        os.unlink(name)
    _rewrite_as_old_checkpoint(tmp_path)
    store = file_store(tmp_path)
    await store.open()
    # Of what is below the checkpoint only its tail is known to end an append.
    await assert_ends(store, ends=[7], fork_ends=[13])
    await store.append(PATH, b"hij", Commit(tail=10))
    await store.checkpoint()  # the index starts from what is known
    await store.close()
    store = file_store(tmp_path)
    await store.open()
    assert await ends_of(store, PATH, 0, 10) == [7, 10]
    await store.close()


def _rewrite_as_old_checkpoint(data_dir) -> None:
    path = os.path.join(data_dir, checkpoint.FILE_NAME)
    with open(path, "rb") as f:
        blob = f.read()
    body = json.loads(blob[checkpoint.HEADER.size:])
    body["streams"] = [entry[:3] for entry in body["streams"]]  # the old shape
    raw = json.dumps(body, separators=(",", ":")).encode()
    with open(path, "wb") as f:
        f.write(checkpoint.HEADER.pack(checkpoint.MAGIC, len(raw), zlib.crc32(raw)) + raw)


async def test_delete_removes_the_index_file(tmp_path):
    store = file_store(tmp_path)
    await store.open()
    await write(store)
    await store.checkpoint()
    assert len(index_files(tmp_path)) == 2
    await store.delete(PATH)
    assert len(index_files(tmp_path)) == 1
    await store.close()


async def test_index_entries_past_the_checkpoint_count_are_cut(tmp_path):
    # Left by a checkpoint whose index writes landed but whose checkpoint file did not.
    store = file_store(tmp_path)
    await store.open()
    await write(store)
    await store.checkpoint()
    await store.append(PATH, b"hij", Commit(tail=10))
    await store.close()
    (index,) = [name for name in index_files(tmp_path) if os.path.getsize(name) == 8 * len(ENDS)]
    with open(index, "ab") as f:
        f.write((9).to_bytes(8, "little"))  # not trusted: the checkpoint counts 3
    store = file_store(tmp_path)
    await store.open()
    assert os.path.getsize(index) == 8 * len(ENDS)
    assert await ends_of(store, PATH, 0, 10) == ENDS + [10]
    await store.close()
