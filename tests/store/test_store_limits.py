"""Operating limits of the FileStore: one process per data_dir, bounded descriptors
with many streams, a full disk."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import subprocess
import sys
import time

import pytest

from durable_streams.server.store.base import Commit, StoreError, StoreFull, StreamConfig, StreamState
from durable_streams.server.store.file import DataDirInUse, FileStore


def cfg(path: str) -> StreamConfig:
    return StreamConfig(path, "application/octet-stream", time.time())


async def test_second_store_on_same_data_dir_is_refused(tmp_path):
    first = FileStore(str(tmp_path))
    await first.open()
    try:
        second = FileStore(str(tmp_path))
        with pytest.raises(DataDirInUse, match=rf"data_dir {tmp_path} is in use by another process \(pid {os.getpid()}\)"):
            await second.open()
    finally:
        await first.close()
    third = FileStore(str(tmp_path))  # released on close
    await third.open()
    await third.close()


def test_other_process_is_refused_while_we_hold_the_dir(tmp_path):
    async def hold_and_probe():
        store = FileStore(str(tmp_path))
        await store.open()
        try:
            probe = (
                "import asyncio, sys\n"
                "from durable_streams.server.store.file import FileStore\n"
                "try:\n"
                f"    asyncio.run(FileStore({str(tmp_path)!r}).open())\n"
                "except Exception as e:\n"
                "    print(e); sys.exit(3)\n"
            )
            return await asyncio.to_thread(
                subprocess.run, [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
            )
        finally:
            await store.close()

    result = asyncio.run(hold_and_probe())
    assert result.returncode == 3
    assert f"is in use by another process (pid {os.getpid()})" in result.stdout


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_many_streams_stay_within_the_descriptor_bound(tmp_path):
    # 5,000 here to stay quick; 100,000 streams with the default 100 handles is run by
    # bench/store_bench.py --streams 100000.
    streams, bound = 5000, 10
    before = open_fds()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Leave room for the bound, the read threads' pins, the log, lock, loop and pytest:
    # a leak of descriptors per stream would hit EMFILE long before 5,000.
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, before + 64), hard))
    try:
        store = FileStore(str(tmp_path), max_file_handles=bound, checkpoint_bytes=256 << 10)
        await store.open()
        paths = [f"/v1/stream/many-{i}" for i in range(streams)]
        for start in range(0, streams, 500):
            group = paths[start : start + 500]
            await asyncio.gather(*(store.create(cfg(p), StreamState(tail=4), p[-4:].encode()) for p in group))
            await asyncio.gather(*(store.append(p, b"!", Commit(tail=5)) for p in group))
            assert store.open_handles <= bound
        for start in range(0, streams, 500):
            group = paths[start : start + 500]
            got = await asyncio.gather(*(store.read(p, 0, 5) for p in group))
            assert got == [p[-4:].encode() + b"!" for p in group]
            assert store.open_handles <= bound
        assert store.evictions > streams
        assert open_fds() <= before + bound + 16
        await store.close()
        store = FileStore(str(tmp_path), max_file_handles=bound)
        assert len(await store.open()) == streams
        assert await store.read(paths[1234], 0, 5) == b"1234!"
        await store.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class FailNext:
    """Fault seam of the writer: fail the next `count` log writes or fsyncs with `error`."""

    def __init__(self, stage: str, error: int, count: int = 1) -> None:
        self.stage, self.error, self.count = stage, error, count

    def __call__(self, stage: str) -> None:
        if stage == self.stage and self.count:
            self.count -= 1
            raise OSError(self.error, os.strerror(self.error))


@pytest.mark.parametrize("stage", ["write", "fsync"])
@pytest.mark.parametrize(("error", "raised"), [(errno.ENOSPC, StoreFull), (errno.EIO, StoreError)])
async def test_failed_batch_leaves_stream_consistent_and_writable(tmp_path, stage, error, raised):
    store = FileStore(str(tmp_path), checkpoint_on_close=False)
    await store.open()
    await store.create(cfg("/s"), StreamState(tail=3), b"abc")
    store._writer.fault_hook = FailNext(stage, error, count=2)
    for _ in range(2):  # still failing: the same append keeps being refused cleanly
        with pytest.raises(raised) as info:
            await store.append("/s", b"LOST", Commit(tail=7, close=True))
        assert type(info.value) is raised  # the protocol answers 507 or 503 (protocol/errors.py)
    await store.append("/s", b"def", Commit(tail=6))  # space is back
    assert await store.read("/s", 0, 6) == b"abcdef"
    await store.close()
    store = FileStore(str(tmp_path))
    (stream,) = await store.open()
    assert stream.state.tail == 6 and not stream.state.closed
    assert await store.read("/s", 0, 6) == b"abcdef"
    await store.close()


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here (needs root); the fault-seam tests cover ENOSPC")
    try:
        yield str(mnt)
    finally:
        # lazy: a failed test may leave the store's files open, which would keep it mounted
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True, timeout=30)


async def test_real_full_disk(small_tmpfs):
    store = FileStore(small_tmpfs, checkpoint_bytes=128 << 10, checkpoint_on_close=False)
    await store.open()
    await store.create(cfg("/filler"), StreamState(tail=300_000), b"f" * 300_000)
    await store.create(cfg("/s"), StreamState(tail=0))
    chunk, tail = b"x" * 40_000, 0
    with pytest.raises(StoreFull):
        for _ in range(100):
            await store.append("/s", chunk, Commit(tail=tail + len(chunk)))
            tail += len(chunk)
    await store.delete("/filler")  # space comes back
    await store.checkpoint()
    await store.append("/s", b"end", Commit(tail=tail + 3))
    assert await store.read("/s", 0, tail + 3) == chunk * (tail // len(chunk)) + b"end"
    await store.close()
    store = FileStore(small_tmpfs)
    (stream,) = await store.open()
    assert stream.config.path == "/s" and stream.state.tail == tail + 3
    assert await store.read("/s", 0, tail + 3) == chunk * (tail // len(chunk)) + b"end"
    await store.close()


async def test_failed_create_leaves_nothing_behind(tmp_path):
    store = FileStore(str(tmp_path))
    await store.open()
    store._writer.fault_hook = FailNext("fsync", errno.ENOSPC)
    with pytest.raises(StoreFull):
        await store.create(cfg("/c"), StreamState(tail=5), b"first")
    data_files = [n for _, _, names in os.walk(tmp_path / "streams") for n in names]
    assert data_files == []
    with pytest.raises(KeyError):
        await store.read("/c", 0, 5)
    await store.create(cfg("/c"), StreamState(tail=6), b"second")  # the path is free
    assert await store.read("/c", 0, 6) == b"second"
    await store.close()


async def test_failed_checkpoint_loses_nothing(tmp_path, monkeypatch):
    from durable_streams.server.store.file import checkpoint

    def no_space(data_dir, blob):
        raise OSError(errno.ENOSPC, "No space left on device")

    store = FileStore(str(tmp_path), checkpoint_bytes=2048, checkpoint_on_close=False)
    await store.open()
    await store.create(cfg("/k"), StreamState(tail=0))
    monkeypatch.setattr(checkpoint, "write", no_space)
    tail = 0
    for n in range(100):  # far past the checkpoint threshold: checkpoints keep failing
        chunk = f"{n:03d}|".encode()
        tail += len(chunk)
        await store.append("/k", chunk, Commit(tail=tail))
    with pytest.raises(StoreFull):
        await store.checkpoint()
    await store.close()
    monkeypatch.undo()
    store = FileStore(str(tmp_path))
    (stream,) = await store.open()
    assert stream.state.tail == tail
    assert await store.read("/k", 0, tail) == b"".join(f"{n:03d}|".encode() for n in range(100))
    await store.close()
