"""FileStore throughput: durable appends per second through the store API directly.

    .venv/bin/python bench/store_bench.py [--seconds 3] [--writers 1,32,256] [--size 100]
                                         [--dir /path/on/the/disk/to/measure]
    .venv/bin/python bench/store_bench.py --streams 100000   # many-streams check

Each writer owns one stream and appends `size`-byte records one at a time, awaiting
each (as the engine does per stream); every acknowledged append is fsynced. The peer
figure is this machine's raw rate of write+fdatasync of the same records to one file,
one at a time, measured in the same run: the ratio shows what group commit buys.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import tempfile
import time

import structlog

from durable_streams.server.store.base import Commit, StreamConfig, StreamState
from durable_streams.server.store.file import FileStore


def raw_fsync_rate(directory: str, size: int, seconds: float) -> float:
    path = os.path.join(directory, "raw-fsync.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    record = b"r" * size
    count, deadline = 0, time.monotonic() + seconds
    started = time.monotonic()
    try:
        while time.monotonic() < deadline:
            os.write(fd, record)
            os.fdatasync(fd)
            count += 1
    finally:
        os.close(fd)
        os.unlink(path)
    return count / (time.monotonic() - started)


async def store_rate(directory: str, writers: int, size: int, seconds: float, handles: int) -> tuple[float, FileStore]:
    data_dir = tempfile.mkdtemp(prefix=f"w{writers}-", dir=directory)
    store = FileStore(data_dir, max_file_handles=handles)
    await store.open()
    record = b"s" * size
    paths = [f"/bench/w{i}" for i in range(writers)]
    await asyncio.gather(*(store.create(StreamConfig(p, "application/octet-stream", time.time()), StreamState(tail=0)) for p in paths))
    flushes_before = store.flush_count
    count = 0
    deadline = time.monotonic() + seconds

    async def writer(path: str) -> None:
        nonlocal count
        tail = 0
        while time.monotonic() < deadline:
            tail += size
            await store.append(path, record, Commit(tail=tail))
            count += 1

    started = time.monotonic()
    await asyncio.gather(*(writer(p) for p in paths))
    elapsed = time.monotonic() - started
    store.bench_flushes = store.flush_count - flushes_before
    await store.close()
    shutil.rmtree(data_dir)
    return count / elapsed, store


async def many_streams(directory: str, streams: int) -> None:
    data_dir = tempfile.mkdtemp(prefix="many-", dir=directory)
    store = FileStore(data_dir)  # default max_file_handles=100
    await store.open()
    started = time.monotonic()
    group = 1000
    for start in range(0, streams, group):
        paths = [f"/many/{i}" for i in range(start, min(streams, start + group))]
        await asyncio.gather(*(store.create(StreamConfig(p, "text/plain", 0.0), StreamState(tail=len(p)), p.encode()) for p in paths))
        await asyncio.gather(*(store.append(p, b"!", Commit(tail=len(p) + 1)) for p in paths))
    written = time.monotonic() - started
    for start in range(0, streams, group):
        paths = [f"/many/{i}" for i in range(start, min(streams, start + group))]
        got = await asyncio.gather(*(store.read(p, 0, len(p) + 1) for p in paths))
        assert got == [p.encode() + b"!" for p in paths]
    fds = len(os.listdir("/proc/self/fd"))
    print(f"{streams} streams: created+appended in {written:.1f}s, read back in {time.monotonic() - started - written:.1f}s; "
          f"open data handles {store.open_handles} (bound 100), evictions {store.evictions}, process fds {fds}")
    await store.close()
    reopened = FileStore(data_dir)
    started = time.monotonic()
    count = len(await reopened.open())
    print(f"reopen: {count} streams in {time.monotonic() - started:.2f}s (after a clean close: checkpoint only)")
    await reopened.close()
    shutil.rmtree(data_dir)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--writers", default="1,32,256")
    parser.add_argument("--size", type=int, default=100, help="bytes per append")
    parser.add_argument("--dir", default=None, help="directory on the disk to measure (default: a temp dir)")
    parser.add_argument("--handles", type=int, default=100, help="max_file_handles")
    parser.add_argument("--streams", type=int, default=0, help="run the many-streams check instead")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    directory = args.dir or tempfile.gettempdir()
    if args.streams:
        await many_streams(directory, args.streams)
        return
    # The peer figure is measured right before each store run: on a shared machine the
    # device's fsync rate drifts, and the ratio is what compares.
    for writers in [int(w) for w in args.writers.split(",")]:
        raw = raw_fsync_rate(directory, args.size, args.seconds)
        rate, store = await store_rate(directory, writers, args.size, args.seconds, args.handles)
        batch = store.batch_records_total / max(1, store.flush_count)
        print(f"FileStore {writers:>4} writers: {rate:>9,.0f} durable appends/s; raw write+fdatasync "
              f"{raw:,.0f}/s -> {rate / raw:.2f}x ({store.bench_flushes} fsyncs, mean batch {batch:.1f})")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
