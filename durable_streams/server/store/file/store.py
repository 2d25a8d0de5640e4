"""FileStore: the durable StreamStore behind `data_dir` (asyncio facade).

Writes go to the group-commit writer thread and are awaited on asyncio futures;
reads run `os.pread` on pooled descriptors in a small thread pool; nothing blocks
the event loop on file I/O.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_right
from concurrent.futures import ThreadPoolExecutor

from ..base import Commit, Document, StoredStream, StoreError, StreamConfig, StreamState, StreamStore
from .documents import DocumentFiles
from .fsutil import store_error
from .lock import DataDirLock
from .recovery import RecoveryReport, recover
from .storage import Storage
from .writer import GroupCommitWriter, Job, WriterMetrics

READ_THREADS = 4
DEFAULT_CHECKPOINT_BYTES = 64 << 20
# Operators (and the HTTP crash test) tune the checkpoint interval here until the
# Caddyfile has a subdirective for it: log bytes written between two checkpoints.
CHECKPOINT_BYTES_ENV = "DURABLE_STREAMS_CHECKPOINT_BYTES"


def checkpoint_bytes_from_env() -> int:
    raw = os.environ.get(CHECKPOINT_BYTES_ENV, "")
    if not raw:
        return DEFAULT_CHECKPOINT_BYTES
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{CHECKPOINT_BYTES_ENV} must be a positive number of bytes, got {raw!r}")
    return int(raw)


class FileStore(StreamStore):
    durable = True

    def __init__(
        self,
        data_dir: str,
        max_file_handles: int = 100,
        *,
        checkpoint_bytes: int | None = None,  # None: $DURABLE_STREAMS_CHECKPOINT_BYTES or 64 MiB
        touch_flush_interval: float = 1.0,
        checkpoint_on_close: bool = True,
    ) -> None:
        if max_file_handles < 1:
            raise ValueError("max_file_handles must be at least 1")
        self.data_dir = os.path.abspath(data_dir)
        self.max_file_handles = max_file_handles
        self.checkpoint_bytes = checkpoint_bytes if checkpoint_bytes is not None else checkpoint_bytes_from_env()
        self.touch_flush_interval = touch_flush_interval
        # A checkpoint at close makes the next start replay nothing; tests turn it off to
        # leave a log behind, as a crash would.
        self.checkpoint_on_close = checkpoint_on_close
        self.recovery: RecoveryReport | None = None
        self._lock = DataDirLock(self.data_dir)
        self._storage = Storage(self.data_dir, max_file_handles)
        self._documents = DocumentFiles(self.data_dir)
        self._writer: GroupCommitWriter | None = None
        self._metrics = WriterMetrics()  # survives close, for the metrics exporter
        self._reads: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._touched: dict[str, float] = {}
        self._touch_timer: asyncio.TimerHandle | None = None

    # --- metrics (plain attributes/properties for the metrics exporter) ---

    @property
    def open_handles(self) -> int:
        return self._storage.pool.open_handles

    @property
    def evictions(self) -> int:
        return self._storage.pool.evictions

    @property
    def metrics(self) -> WriterMetrics:
        return self._metrics

    @property
    def flush_count(self) -> int:
        return self.metrics.flush_count

    @property
    def flush_seconds_total(self) -> float:
        return self.metrics.flush_seconds_total

    @property
    def batch_records_total(self) -> int:
        return self.metrics.batch_records_total

    @property
    def batch_records_max(self) -> int:
        return self.metrics.batch_records_max

    # --- lifecycle ---

    async def open(self) -> list[StoredStream]:
        if self._writer is not None:
            raise RuntimeError("FileStore is already open")
        loop = asyncio.get_running_loop()
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            self._lock.acquire()
        except OSError as exc:
            raise store_error(exc, f"cannot use data_dir {self.data_dir}") from exc
        try:
            self.recovery, streams = await loop.run_in_executor(None, self._recover)
        except BaseException as exc:
            self._storage.close()
            self._lock.release()
            if isinstance(exc, OSError):
                raise store_error(exc, f"recovery of {self.data_dir} failed") from exc
            raise
        self._loop = loop
        self._reads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="ds-store-read")
        self._writer = GroupCommitWriter(self._storage, loop, self.checkpoint_bytes, self._metrics)
        self._writer.start()
        self._writer.submit(Job("sweep"))  # orphan files: off the start-up path
        return streams

    def _recover(self) -> tuple[RecoveryReport, list[StoredStream]]:
        report = recover(self._storage)
        return report, [entry.snapshot() for entry in self._storage.catalog.by_path.values()]

    async def close(self) -> None:
        writer = self._writer
        if writer is None:
            return
        if self._touch_timer is not None:
            self._touch_timer.cancel()
        self._flush_touches()
        self._writer = None  # refuse new jobs: none may queue behind the stop
        stop = Job("stop" if self.checkpoint_on_close else "halt", future=self._loop.create_future())
        writer.submit(stop)
        try:
            await stop.future
        except StoreError:
            pass  # logged by the writer; the log still holds everything
        await asyncio.get_running_loop().run_in_executor(None, writer.join)
        self._reads.shutdown(wait=True)
        self._storage.close()
        self._lock.release()

    async def checkpoint(self) -> None:
        """Force a checkpoint now (tests, operators); normally driven by log size."""
        await self._submit(Job("checkpoint"))

    # --- writes ---

    async def create(self, config: StreamConfig, state: StreamState, data: bytes = b"") -> None:
        await self._submit(Job("create", config.path, config=config, state=state.copy(), data=bytes(data)))

    def append(self, path: str, data: bytes, commit: Commit) -> asyncio.Future:
        return self._queue(Job("append", path, data=bytes(data), commit=commit))

    async def mark_soft_deleted(self, path: str) -> None:
        await self._submit(Job("soft_delete", path))

    async def delete(self, path: str) -> None:
        self._touched.pop(path, None)
        await self._submit(Job("delete", path))

    async def retain(self, path: str, floor: int, marks: tuple[tuple[int, float], ...]) -> int:
        """The floor goes through the log like an append (one record, group-committed);
        once it is durable the writer punches the data file's blocks below it."""
        job = Job("retain", path, retain=(floor, tuple(marks)))
        await self._queue(job)
        return job.reclaimed

    def touch(self, path: str, when: float) -> None:
        if when > self._touched.get(path, 0.0):
            self._touched[path] = when
        if self._touch_timer is None and self._loop is not None:
            self._touch_timer = self._loop.call_later(self.touch_flush_interval, self._flush_touches)

    def _flush_touches(self) -> None:
        self._touch_timer = None
        if self._touched and self._writer is not None:
            touches, self._touched = self._touched, {}
            self._writer.submit(Job("touch", touches=touches))  # no waiter: written lazily

    # --- documents (documents.py) ---

    async def documents(self, kind: str) -> dict[str, Document]:
        return await self._document_io(self._documents.load, kind)

    async def put_document(self, kind: str, name: str, body: bytes, *, replaces: int) -> int:
        return await self._document_io(self._documents.put, kind, name, bytes(body), replaces)

    async def delete_document(self, kind: str, name: str) -> None:
        await self._document_io(self._documents.delete, kind, name)

    async def _document_io(self, operation, *args):
        if self._writer is None:
            raise RuntimeError("FileStore is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reads, operation, *args)
        except OSError as exc:
            raise store_error(exc, f"cannot write a {args[0]} document in {self.data_dir}") from exc

    async def _submit(self, job: Job) -> None:
        await self._queue(job)

    def _queue(self, job: Job) -> asyncio.Future:
        if self._writer is None:
            raise RuntimeError("FileStore is not open")
        job.future = self._loop.create_future()
        self._writer.submit(job)
        return job.future

    # --- reads ---

    async def read(self, path: str, start: int, end: int) -> bytes:
        entry = self._storage.catalog.by_path.get(path)
        if entry is None:
            raise KeyError(path)
        if start >= end:
            return b""
        base = entry.config.base_offset
        return await self._loop.run_in_executor(
            self._reads, self._read_sync, entry.incarnation, start - base, end - start
        )

    async def next_boundary(self, path: str, position: int) -> int:
        entry = self._storage.catalog.by_path.get(path)
        if entry is None:
            raise KeyError(path)
        fresh = entry.boundaries  # before `indexed`: a checkpoint moves them in that order
        i = bisect_right(fresh, position)
        if i < len(fresh) and i > 0:
            return fresh[i]
        if i == 0 and entry.indexed:  # may be below the checkpoint: in the index file
            found = await self._loop.run_in_executor(
                self._reads, self._next_indexed_sync, entry.incarnation, entry.indexed, position
            )
            if found is not None:
                return found
        return fresh[i] if i < len(fresh) else entry.state.tail

    def _next_indexed_sync(self, incarnation: str, count: int, position: int) -> int | None:
        try:
            return self._storage.next_indexed_boundary(incarnation, count, position)
        except OSError as exc:
            raise store_error(exc, "read failed") from exc

    def _read_sync(self, incarnation: str, position: int, length: int) -> bytes:
        try:
            return self._storage.read_data(incarnation, position, length)
        except EOFError as exc:
            raise StoreError(f"data file {exc} is shorter than its committed length (damaged)") from None
        except OSError as exc:
            raise store_error(exc, "read failed") from exc

