"""Group commit: one thread owns every write and fsync of a data_dir.

The event loop queues jobs and awaits asyncio futures. The thread takes everything
queued, writes the batch as one log write, issues ONE fsync of the log for the whole
batch, whatever the number of streams in it, stages the appended bytes for their data
files (staging.py) and resolves all its futures with one call_soon_threadsafe. Appends
that arrive during an fsync form the next batch, so throughput grows with the number
of concurrent writers. Staged bytes go to the data files in bulk once STAGE_BYTES are
staged, STAGE_SECONDS after the oldest was staged, or when no job came for STAGE_SECONDS.

A failed batch is cut from the log and fails every job in it; nothing of it is
applied or staged.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog

from ..base import Commit, StoreError, StreamConfig, StreamState
from .fsutil import store_error
from .records import Kind, Record, commit_to_json, config_to_json, encode, state_to_json
from .storage import Storage

log = structlog.get_logger("durable_streams.store.file")

MAX_BATCH_JOBS = 4096
MAX_BATCH_BYTES = 32 << 20
STAGE_BYTES = 4 << 20
STAGE_SECONDS = 0.05


@dataclass(slots=True)
class Job:
    op: str  # create | append | retain | soft_delete | delete | touch | checkpoint | sweep | stop | halt
    path: str = ""
    future: asyncio.Future | None = None
    config: StreamConfig | None = None
    state: StreamState | None = None
    data: bytes = b""
    commit: Commit | None = None
    touches: dict[str, float] | None = None  # a touch job's; None, not a dict made per append
    retain: tuple[int, tuple] = (0, ())  # (floor, marks) of a retain job
    reclaimed: int = 0  # set by the writer: bytes a retain job handed back to the file system


@dataclass(slots=True)
class WriterMetrics:
    flush_count: int = 0  # fsyncs of the log: one per batch
    flush_seconds_total: float = 0.0
    flush_seconds_max: float = 0.0
    batch_records_total: int = 0
    batch_records_max: int = 0
    failed_batches: int = 0
    checkpoints: int = 0


class GroupCommitWriter:
    def __init__(
        self, storage: Storage, loop: asyncio.AbstractEventLoop, checkpoint_bytes: int, metrics: WriterMetrics
    ) -> None:
        self.storage = storage
        self.loop = loop
        self.checkpoint_bytes = checkpoint_bytes
        self.metrics = metrics
        # Test seam: called before each log write/fsync; may raise OSError to simulate a device error.
        self.fault_hook = None
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ds-store-writer", daemon=True)
        self._held: Job | None = None  # drained job that did not fit in the batch
        self._next_checkpoint_at = checkpoint_bytes
        self._pending_cut: int | None = None  # log size to restore before the next batch
        self._checkpointer: threading.Thread | None = None
        self._stage_retry_at = 0.0  # after a failed write-out of staged bytes

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def join(self) -> None:
        self._thread.join()

    # --- the thread ---

    def _run(self) -> None:
        while True:
            jobs = self._take_batch()
            try:
                writes = [j for j in jobs if j.op in _RECORD_OPS]
                if writes:
                    self._commit(writes)
                for job in jobs:
                    if job.op not in _RECORD_OPS and self._control(job):
                        return
                self._write_staged_if_due()
            except Exception as exc:  # a bug must not leave waiters hanging forever
                log.exception("store_writer_internal_error")
                self._deliver([(job.future, StoreError(f"internal store error: {exc}")) for job in jobs])
                if any(job.op in ("stop", "halt") for job in jobs):
                    return

    def _take_batch(self) -> list[Job]:
        first = self._held or self._next_job()
        self._held = None
        jobs, size = [first], len(first.data)
        while len(jobs) < MAX_BATCH_JOBS:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if size + len(job.data) > MAX_BATCH_BYTES:
                self._held = job
                break
            jobs.append(job)
            size += len(job.data)
        return jobs

    def _commit(self, jobs: list[Job]) -> None:
        storage = self.storage
        results: list[tuple[asyncio.Future | None, BaseException | None]] = []
        prepared: list[tuple[Job, Record, list[bytes], tuple[str, int] | None]] = []
        overlay: dict[str, tuple[str, int] | None] = {}  # path -> (incarnation, base) within this batch
        tails: dict[str, int] = {}  # incarnation -> tail after this batch's records so far
        for job in jobs:
            try:
                record, blob, target = self._prepare(job, overlay, tails)
            except Exception as exc:  # a bad job fails alone
                results.append((job.future, exc))
                continue
            if record is None:
                results.append((job.future, None))
            else:
                prepared.append((job, record, blob, target))
        start_size = storage.wal.size if self._pending_cut is None else self._pending_cut
        started = time.monotonic()
        try:
            if self._pending_cut is not None:  # an earlier failed batch is still in the log
                storage.wal.cut_back(self._pending_cut)
                self._pending_cut = None
            if prepared:
                if self.fault_hook:
                    self.fault_hook("write")
                storage.wal.append([buf for _, _, frame, _ in prepared for buf in frame])
                if self.fault_hook:
                    self.fault_hook("fsync")
                storage.wal.sync()  # the one fsync of the batch (touches included: at most ~1/s)
        except OSError as exc:
            self._fail_batch(prepared, results, exc, start_size)
            return
        if prepared:
            elapsed = time.monotonic() - started
            m = self.metrics
            m.flush_count += 1
            m.flush_seconds_total += elapsed
            m.flush_seconds_max = max(m.flush_seconds_max, elapsed)
            m.batch_records_total += len(prepared)
            m.batch_records_max = max(m.batch_records_max, len(prepared))
        for job, record, _, target in prepared:
            if target is not None and record.data:
                storage.stage_data(target[0], target[1], record.data)
            storage.apply_durable(record)
            if record.kind is Kind.RETAIN:  # the floor is durable: now its space may go
                job.reclaimed = storage.reclaim_below_floor(record.incarnation)
            results.append((job.future, None))
        self._deliver(results)
        if storage.wal.size >= self._next_checkpoint_at:
            self._next_checkpoint_at = self.checkpoint_bytes
            self._checkpoint(background=True)

    def _next_job(self) -> Job:
        """Wait for a job; staged bytes go out once no job came for STAGE_SECONDS."""
        while self.storage.staged.bytes and time.monotonic() >= self._stage_retry_at:
            try:
                return self._queue.get(timeout=STAGE_SECONDS)
            except queue.Empty:
                self._write_staged()
        return self._queue.get()

    def _write_staged_if_due(self) -> None:
        staged = self.storage.staged
        if staged.bytes >= STAGE_BYTES or (staged.bytes and time.monotonic() - staged.since >= STAGE_SECONDS):
            self._write_staged()

    def _write_staged(self) -> None:
        now = time.monotonic()
        if now < self._stage_retry_at:
            return
        try:
            self.storage.write_staged()
        except OSError as exc:  # still staged and readable; the log holds it; retried later
            self._stage_retry_at = now + 1.0
            log.error("store_data_write_failed", error=str(exc))

    def _prepare(self, job: Job, overlay: dict[str, tuple[str, int] | None],
                 tails: dict[str, int]) -> tuple[Record | None, list[bytes], tuple[str, int] | None]:
        """Build and encode the log record of one job; returns it, its frame and
        (incarnation, file position) for its bytes. Raises before touching the overlay."""
        if job.op == "touch":
            pairs = []
            for path, when in job.touches.items():
                target = self._resolve(path, overlay, required=False)
                if target is not None:
                    pairs.append([target[0], when])
            if not pairs:
                return None, [], None
            record = Record(Kind.TOUCH, {"t": pairs})
            return record, encode(record), None
        if job.op == "create":
            if self._resolve(job.path, overlay, required=False) is not None:
                raise StoreError(f"stream {job.path} exists; delete it before creating it again")
            incarnation = uuid.uuid4().hex
            meta = {"i": incarnation, "config": config_to_json(job.config), "state": state_to_json(job.state)}
            record = Record(Kind.CREATE, meta, job.data)
            blob = encode(record)
            overlay[job.path] = (incarnation, job.config.base_offset)
            tails[incarnation] = job.state.tail
            return record, blob, (incarnation, 0)
        if job.op == "delete" and self._resolve(job.path, overlay, required=False) is None:
            return None, [], None  # deleting what is gone already: nothing to log
        incarnation, base = self._resolve(job.path, overlay, required=True)
        if job.op == "append":
            position = job.commit.tail - len(job.data)
            if position < base:  # would fail the whole batch at pwrite: refuse it alone
                raise ValueError(f"append to {job.path} ends at {job.commit.tail}, before its base offset")
            durable_tail = tails.get(incarnation)
            if durable_tail is None:
                durable_tail = self.storage.catalog.by_incarnation[incarnation].state.tail
            if position != durable_tail:  # queued behind an append that failed
                raise StoreError(f"append to {job.path} does not follow its durable tail (an earlier append failed)")
            tails[incarnation] = job.commit.tail
            meta: dict[str, Any] = {"i": incarnation, "p": position, "c": commit_to_json(job.commit)}
            record = Record(Kind.APPEND, meta, job.data)
            return record, encode(record), (incarnation, position - base)
        if job.op == "retain":
            floor, marks = job.retain
            record = Record(Kind.RETAIN, {"i": incarnation, "f": floor, "m": [list(m) for m in marks]})
            return record, encode(record), None
        if job.op == "soft_delete":
            record = Record(Kind.SOFT_DELETE, {"i": incarnation})
            return record, encode(record), None
        if job.op == "delete":
            overlay[job.path] = None
            record = Record(Kind.DELETE, {"i": incarnation})
            return record, encode(record), None
        raise ValueError(f"unknown store job {job.op!r}")

    def _resolve(self, path: str, overlay: dict, required: bool) -> tuple[str, int] | None:
        if path in overlay:
            target = overlay[path]
        else:
            entry = self.storage.catalog.by_path.get(path)
            target = (entry.incarnation, entry.config.base_offset) if entry else None
        if target is None and required:
            raise KeyError(path)
        return target

    def _fail_batch(self, prepared, results, exc: OSError, start_size: int) -> None:
        self.metrics.failed_batches += 1
        error = store_error(exc, "could not make the write durable")
        log.error("store_batch_failed", error=str(exc), records=len(prepared))
        try:
            self.storage.wal.cut_back(start_size)
        except OSError as cut_exc:
            # The log may still hold the failed records: no batch may follow them until
            # they are cut (retried first thing in every batch).
            log.critical("store_log_cut_failed", error=str(cut_exc))
            self._pending_cut = start_size
        for _, record, _, _ in prepared:
            if record.kind is Kind.CREATE:  # never logged: its file would be an orphan
                self.storage.discard_file(record.incarnation)
        results.extend((job.future, error) for job, *_ in prepared)
        self._deliver(results)

    def _control(self, job: Job) -> bool:
        """Run a control job; True means stop the thread."""
        error: BaseException | None = None
        if job.op in ("checkpoint", "stop"):
            error = self._checkpoint()
        elif job.op == "sweep":
            error = self._sweep()
        elif job.op == "halt":
            running = self._checkpointer
            if running is not None:  # files and the lock are released right after
                running.join()
        self._deliver([(job.future, error)])
        return job.op in ("stop", "halt")  # halt: stop without a checkpoint

    def _checkpoint(self, background: bool = False) -> BaseException | None:
        """Checkpoint now; in the background (appends continue meanwhile) when driven by
        log growth. At most one runs at a time."""
        running = self._checkpointer
        if running is not None:
            if background:
                return None  # one is running; growth will ask again
            running.join()
        try:
            if self._pending_cut is not None:  # a failed batch must not outlive this log file
                self.storage.wal.cut_back(self._pending_cut)
                self._pending_cut = None
            pending = self.storage.begin_checkpoint()
        except OSError as exc:
            return self._checkpoint_failed(exc)
        if not background:
            return self._finish_checkpoint(pending)
        self._checkpointer = threading.Thread(
            target=self._finish_checkpoint, args=(pending,), name="ds-store-checkpoint", daemon=True
        )
        self._checkpointer.start()
        return None

    def _finish_checkpoint(self, pending) -> BaseException | None:
        try:
            self.storage.finish_checkpoint(pending)
        except OSError as exc:
            return self._checkpoint_failed(exc)
        finally:
            self._checkpointer = None
        self.metrics.checkpoints += 1
        return None

    def _checkpoint_failed(self, exc: OSError) -> BaseException:
        # The logs still hold everything: nothing is lost; retry after more growth.
        self._next_checkpoint_at = self.storage.wal.size + self.checkpoint_bytes // 4
        log.error("store_checkpoint_failed", error=str(exc))
        return store_error(exc, "checkpoint failed")

    def _sweep(self) -> BaseException | None:
        try:
            orphans = self.storage.orphan_files()
            for incarnation in orphans:
                self.storage.discard_file(incarnation)
        except OSError as exc:
            log.error("store_orphan_sweep_failed", error=str(exc))
            return None
        if orphans:
            log.info("store_orphans_removed", files=len(orphans))
        return None

    def _deliver(self, results: list[tuple[asyncio.Future | None, BaseException | None]]) -> None:
        results = [r for r in results if r[0] is not None]
        if not results:
            return
        try:
            self.loop.call_soon_threadsafe(_resolve_futures, results)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


_RECORD_OPS = {"create", "append", "retain", "soft_delete", "delete", "touch"}


def _resolve_futures(results: list[tuple[asyncio.Future, BaseException | None]]) -> None:
    for future, error in results:
        if future.done():  # the waiter was cancelled; the write happened anyway
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
