"""Crash-test workload (run as a subprocess by test_store_crash.py, killed with SIGKILL).

Usage: python crash_worker.py DATA_DIR ROUND SEED

Concurrent tasks append to their own streams through FileStore: binary and
newline-delimited JSON bytes, producer tuples, Stream-Seq values, closes, deletes and
re-creates, fork-like streams with a base_offset. Every operation is announced on
stdout before it is submitted ("begin") and confirmed after the store acknowledged it
("ack"), one JSON object per line, flushed at once, so the parent knows exactly what
was acknowledged when the kill came.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time

from durable_streams.server.store.base import Commit, ProducerState, StreamConfig, StreamState
from durable_streams.server.store.file import FileStore

TASKS = 24


def emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def payload(rng: random.Random, content_type: str, n: int) -> bytes:
    if content_type == "application/json":
        return b"".join(
            json.dumps({"n": n, "k": i, "pad": "x" * rng.randrange(40)}).encode() + b"\n"
            for i in range(rng.randrange(1, 4))
        )
    size = rng.choice([0, 1, 17, 512, 4096, rng.randrange(100_000)])
    return rng.randbytes(size)


async def run_task(store: FileStore, index: int, round_no: int, rng: random.Random, known) -> None:
    path = f"/v1/stream/t{index}"
    entry = known.get(path)
    state = entry.state if entry else None
    content_type = entry.config.content_type if entry else None
    producer_id = f"p{index}"
    n = 0
    while True:
        n += 1
        if state is None:
            content_type = rng.choice(["application/octet-stream", "application/json"])
            base = rng.choice([0, 0, rng.randrange(1, 5000)])  # some are fork-like
            data = payload(rng, content_type, n) if rng.random() < 0.5 else b""
            emit({"ev": "begin", "op": "create", "path": path, "base": base, "ct": content_type, "data": data.hex()})
            state = StreamState(tail=base + len(data))
            settings = {"forked_from": "/v1/stream/src", "round": round_no} if base else {}
            await store.create(StreamConfig(path, content_type, time.time(), base, settings), state, data)
            emit({"ev": "ack", "op": "create", "path": path})
            continue
        if state.closed or rng.random() < 0.02:
            emit({"ev": "begin", "op": "delete", "path": path})
            await store.delete(path)
            emit({"ev": "ack", "op": "delete", "path": path})
            state = None
            continue
        data = payload(rng, content_type, n)
        close = rng.random() < 0.03
        producer = None
        if rng.random() < 0.5:
            previous = state.producers.get(producer_id)
            seq = previous.seq + 1 if previous and previous.epoch == round_no else 0
            producer = (producer_id, ProducerState(round_no, seq, time.time()))
        stream_seq = None
        if rng.random() < 0.3:
            stream_seq = f"{int(state.stream_seq or 0) + 1:08d}"
        closed_by = (producer_id, round_no, producer[1].seq) if close and producer else None
        commit = Commit(state.tail + len(data), close, closed_by, stream_seq, producer)
        emit({
            "ev": "begin", "op": "append", "path": path, "data": data.hex(), "tail": commit.tail,
            "close": close, "closed_by": list(closed_by) if closed_by else None, "stream_seq": stream_seq,
            "producer": [producer_id, round_no, producer[1].seq] if producer else None,
        })
        await store.append(path, data, commit)
        emit({"ev": "ack", "op": "append", "path": path})
        state.tail = commit.tail
        state.closed = state.closed or close
        if stream_seq is not None:
            state.stream_seq = stream_seq
        if producer is not None:
            state.producers[producer_id] = producer[1]


async def main() -> None:
    data_dir, round_no, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = FileStore(data_dir, max_file_handles=8, checkpoint_bytes=256 << 10)
    known = {s.config.path: s for s in await store.open()}
    emit({"ev": "opened", "pid": os.getpid()})
    rng = random.Random(seed)
    await asyncio.gather(*(
        run_task(store, i, round_no, random.Random(rng.random()), known) for i in range(TASKS)
    ))


if __name__ == "__main__":
    import logging

    import structlog

    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    asyncio.run(main())
