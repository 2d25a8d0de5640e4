"""Group commit on PostgreSQL: one flusher per store gathers the appends of every stream
queued since the last flush and lands them with ONE statement (one round trip, one
COMMIT, one fsync of the WAL), whatever the number of streams in it.

The statement locks the batch's stream rows in id order (two nodes locking overlapping
batches in different orders would deadlock), keeps only the streams whose guard holds
(`tail` is what this node expected, not closed, not deleted: nobody else appended
since this node loaded the stream), writes their chunks, tails and producers, and sends
ONE notification per flush (split only when the payload would pass PostgreSQL's
8000-byte limit): a notifying commit takes a cluster-wide lock, so one per append
would serialise every node. A stream whose guard failed gets `StaleStream`, and so
do the appends queued behind it. Futures resolve only after COMMIT returned.

The statement is one of two: APPEND_SQL when the batch holds plain appends only (the
common case), FLUSH_SQL when it also closes a stream, sets a Stream-Seq or carries
producer state. Both run on generic plans (plan_cache_mode on the flusher's connection,
reset when it goes back to the pool), so their cost is execution, commit and round
trip, not planning."""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array
from dataclasses import dataclass, field

import asyncpg
import structlog

from ..base import Commit, StaleStream, StoreError
from .listener import CHANNEL, Change

log = structlog.get_logger("durable_streams.store.postgres")

# A stream's entry carries the bytes the flush appended to it when there are at most
# INLINE_BYTES of them (base64, ~1.4 KB), so other nodes serve their live readers without
# reading them back. Entries go into one notification until it holds NOTIFY_BYTES: with
# the entry that crosses that mark, still under PostgreSQL's 8000-byte payload limit.
INLINE_BYTES = 1024
NOTIFY_BYTES = 6000
FLUSH_TIMEOUT = 30.0  # seconds: a hung database fails the batch (503) instead of every append waiting
# A flush costs PostgreSQL ~0.3 ms of CPU whatever its size (round trip, commit, notify),
# ~12 us per stream in it. When the previous flush held GATHER_MIN appends or more (the
# writers are busy), the next one waits up to GATHER_SECONDS for as many to queue:
# bigger batches, fewer statements. An idle writer never waits.
GATHER_MIN = 8
GATHER_SECONDS = 0.001

GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"

# The lock takes the batch's live rows by primary key (`id = ANY`), in id order; the
# guard is checked on the rows as locked (after a wait, READ COMMITTED hands back the
# newest version), so the plan never joins the whole table: with the guard in the
# locking join, the generic plan hash-joined a seq scan of `streams`.
_LOCKED = """
), locked AS (
    SELECT s.id, s.tail FROM streams s
    WHERE s.id = ANY($1::bigint[]) AND NOT s.closed AND NOT s.soft_deleted
    ORDER BY s.id
    FOR NO KEY UPDATE OF s
), ok AS (
    SELECT b.* FROM batch b JOIN locked l ON l.id = b.id AND l.tail = b.expected"""

_NOTIFIED = f"""
), notified AS (
    SELECT pg_notify('{CHANNEL}', string_agg(entry, ',')) FROM (
        SELECT entry, sum(length(entry) + 1) OVER (ORDER BY id) / {NOTIFY_BYTES} AS part FROM (
            SELECT m.id, m.id || ':' || m.tail || CASE WHEN m.closed THEN ':c' ELSE '' END
                || CASE WHEN m.tail > b.expected AND m.tail - b.expected <= {INLINE_BYTES}
                        THEN CASE WHEN m.closed THEN ':' ELSE '::' END || b.expected || ':' || encode(b.data, 'base64')
                        ELSE '' END AS entry
            FROM moved m JOIN ok b ON b.id = m.id) e) entries
    GROUP BY part
)
SELECT array(SELECT id FROM moved) AS landed, (SELECT count(*) FROM notified) AS notifies
"""

_WRITTEN = """
), written AS (
    INSERT INTO chunks (stream_id, start_offset, end_offset, data, ends)
    SELECT b.id, b.expected, b.tail, b.data, b.ends FROM ok b
    WHERE b.tail > b.expected"""

# Any batch: closes, Stream-Seq, producer state.
FLUSH_SQL = """
WITH batch AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::boolean[], $5::text[],
                         $6::bigint[], $7::bigint[], $8::text[], $9::bytea[], $10::bytea[])
        AS b (id, expected, tail, close, cb_producer, cb_epoch, cb_seq, stream_seq, data, ends)""" + _LOCKED + """
), moved AS (
    UPDATE streams s SET
        tail = b.tail,
        closed = b.close,
        closed_by_producer = coalesce(b.cb_producer, s.closed_by_producer),
        closed_by_epoch = coalesce(b.cb_epoch, s.closed_by_epoch),
        closed_by_seq = coalesce(b.cb_seq, s.closed_by_seq),
        stream_seq = coalesce(b.stream_seq, s.stream_seq)
    FROM ok b
    WHERE s.id = b.id
    RETURNING s.id, s.tail, s.closed""" + _WRITTEN + """
), producers_set AS (
    INSERT INTO producers (stream_id, producer_id, epoch, seq, updated_at)
    SELECT p.stream_id, p.producer_id, p.epoch, p.seq, p.updated_at
    FROM unnest($11::bigint[], $12::text[], $13::bigint[], $14::bigint[], $15::float8[])
        AS p (stream_id, producer_id, epoch, seq, updated_at)
    WHERE p.stream_id IN (SELECT id FROM ok)
    ON CONFLICT (stream_id, producer_id) DO UPDATE
        SET epoch = excluded.epoch, seq = excluded.seq, updated_at = excluded.updated_at""" + _NOTIFIED

# The common batch: plain appends only (no close, no Stream-Seq, no producer state), so
# half the arrays, no producers upsert, and an update of `tail` alone.
APPEND_SQL = """
WITH batch AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bytea[])
        AS b (id, expected, tail, data, ends)""" + _LOCKED + """
), moved AS (
    UPDATE streams s SET tail = b.tail FROM ok b WHERE s.id = b.id
    RETURNING s.id, s.tail, s.closed""" + _WRITTEN + _NOTIFIED


def _usable(conn) -> bool:
    """An acquired pool connection that is still open (asyncpg takes a lost one back
    into the pool itself, after which the proxy refuses every call)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


@dataclass(slots=True)
class Pending:
    """The appends to one stream in one batch, in queue order."""

    stream_id: int
    expected: int  # the tail before the first of them
    tail: int
    close: bool = False
    closed_by: tuple[str, int, int] | None = None
    stream_seq: str | None = None
    pieces: list[bytes] = field(default_factory=list)
    ends: array = field(default_factory=lambda: array("q"))
    producers: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    futures: list[asyncio.Future] = field(default_factory=list)


@dataclass(slots=True)
class FlushStats:
    flushes: int = 0
    appends: int = 0
    conflicts: int = 0
    failures: int = 0
    batch_max: int = 0
    seconds_total: float = 0.0
    notified: int = 0  # own flushes heard back through LISTEN
    notify_seconds_total: float = 0.0


class Flusher:
    def __init__(self, pool_of, on_error, on_written=None) -> None:
        self._pool_of = pool_of  # () -> the asyncpg pool
        self._on_error = on_error  # exception -> StoreError, marks the store unavailable if it is one
        # (stream id, start offset, bytes) per chunk row committed: the compactor, the recent bytes
        self._on_written = on_written
        self._queue: dict[int, Pending] = {}
        self._queued_bytes = 0
        self._queued_appends = 0
        self._wake = asyncio.Event()
        self._enough = asyncio.Event()  # set once _want appends are queued
        self._want = 0
        self._last_batch = 0
        self.gather_seconds = GATHER_SECONDS
        self._task: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._conn = None  # the flusher's own pool connection: flushes never queue behind reads
        self._reconnect = False  # replace it before the next flush (the database restarted)
        self.stats = FlushStats()
        # (stream id, tail) -> when its flush started, until the notification comes back
        self._unheard: dict[tuple[int, int], float] = {}
        # stream id -> tail of its append that just failed, until the engine has heard
        self._void: dict[int, int] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="postgres-flusher")

    async def stop(self) -> None:
        """Flush what is queued, then stop."""
        while self._queue or not self._idle.is_set():
            self._wake.set()
            await self._idle.wait()
            await asyncio.sleep(0)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._release()

    def reconnect(self) -> None:
        """The database came back: the connection held may be from before it went (and
        look open until a flush fails on it). The next flush takes a fresh one."""
        self._reconnect = True

    async def _release(self, *, broken: bool = False) -> None:
        """Give the flusher's connection back; a broken (or timed-out) one is closed first,
        and the pool opens a new one when it is next needed."""
        conn, self._conn = self._conn, None
        if conn is None or not _usable(conn):
            return  # the pool took a lost connection back by itself
        try:
            if broken:
                conn.terminate()
            else:  # pool connections keep no session state of their own
                await asyncio.wait_for(conn.execute("RESET plan_cache_mode"), 5.0)
            await self._pool_of().release(conn)
        except Exception:
            with contextlib.suppress(Exception):
                conn.terminate()

    def append(self, stream_id: int, data: bytes, commit: Commit) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        expected = commit.tail - len(data)
        pending = self._queue.get(stream_id)
        if pending is None and self._void.get(stream_id) == expected:
            # queued on an append that just failed, before its caller heard of the failure
            future.set_exception(StaleStream("an earlier append to this stream failed"))
            return future
        if pending is None:
            pending = self._queue[stream_id] = Pending(stream_id, expected, expected)
        elif pending.tail != expected:
            # computed on an append that this batch does not hold: it failed before
            future.set_exception(StaleStream("an earlier append to this stream failed"))
            return future
        pending.tail = commit.tail
        if data:
            pending.pieces.append(data)
            pending.ends.append(commit.tail)
        if commit.close:
            pending.close = True
            pending.closed_by = commit.closed_by
        if commit.stream_seq is not None:
            pending.stream_seq = commit.stream_seq
        if commit.producer is not None:
            producer_id, state = commit.producer
            pending.producers[producer_id] = (state.epoch, state.seq, state.updated_at)
        pending.futures.append(future)
        self._queued_bytes += len(data)
        self._queued_appends += 1
        self._wake.set()
        if self._want and self._queued_appends >= self._want:
            self._enough.set()
        return future

    def heard(self, entries: list[Change]) -> None:
        """Notifications arrived: those of this node's flushes measure the notify lag."""
        now = time.monotonic()
        for change in entries:
            started = self._unheard.pop((change.stream_id, change.tail), None)
            if started is not None:
                self.stats.notified += 1
                self.stats.notify_seconds_total += now - started

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                continue
            if self._last_batch >= GATHER_MIN and self._queued_appends < self._last_batch and self.gather_seconds:
                self._want = self._last_batch
                self._enough.clear()
                try:
                    await asyncio.wait_for(self._enough.wait(), self.gather_seconds)
                except asyncio.TimeoutError:
                    pass
                self._want = 0
            self._last_batch = self._queued_appends
            batch, self._queue = self._queue, {}
            self._queued_bytes = self._queued_appends = 0
            self._idle.clear()
            try:
                await self._flush(batch)
            except Exception:  # never let the flusher die: every later append would hang
                log.exception("postgres flush failed unexpectedly")
                for p in batch.values():
                    for future in p.futures:
                        if not future.done():
                            future.set_exception(StoreError("flush failed"))
            finally:
                self._idle.set()

    async def _flush(self, batch: dict[int, Pending]) -> None:
        items = sorted(batch.values(), key=lambda p: p.stream_id)
        producer_rows: tuple[list, list, list, list, list] = ([], [], [], [], [])
        plain = True
        for p in items:
            if p.close or p.stream_seq is not None or p.producers:
                plain = False
            for producer_id, (epoch, seq, updated_at) in p.producers.items():
                for column, value in zip(producer_rows, (p.stream_id, producer_id, epoch, seq, updated_at)):
                    column.append(value)
        try:
            if self._reconnect:
                self._reconnect = False
                await self._release(broken=True)
            if self._conn is None or not _usable(self._conn):
                self._conn = await self._pool_of().acquire()
                # Generic plans only: left to itself, the plan cache goes back to planning
                # each flush (~0.3-0.5 ms) whenever the plan is invalidated (an ANALYZE)
                # and the custom plans of small batches look cheaper than the generic one.
                await self._conn.execute(GENERIC_PLANS)
            conn = self._conn
            started = time.monotonic()
            data = [p.pieces[0] if len(p.pieces) == 1 else b"".join(p.pieces) for p in items]
            if plain:
                statement = conn.fetchrow(
                    APPEND_SQL,
                    [p.stream_id for p in items], [p.expected for p in items], [p.tail for p in items],
                    data, [p.ends.tobytes() for p in items])
            else:
                statement = conn.fetchrow(
                    FLUSH_SQL,
                    [p.stream_id for p in items], [p.expected for p in items], [p.tail for p in items],
                    [p.close for p in items],
                    [p.closed_by[0] if p.closed_by else None for p in items],
                    [p.closed_by[1] if p.closed_by else None for p in items],
                    [p.closed_by[2] if p.closed_by else None for p in items],
                    [p.stream_seq for p in items],
                    data,
                    [p.ends.tobytes() for p in items],
                    *producer_rows,
                )
            row = await asyncio.wait_for(statement, FLUSH_TIMEOUT)
        except BaseException as exc:
            if isinstance(exc, Exception):
                await self._release(broken=True)
            if isinstance(exc, (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)):
                error = StaleStream("the flush lost a lock race; nothing of it landed")  # decided again
            elif isinstance(exc, Exception):
                error = self._on_error(exc)
            else:
                error = StoreError("flush cancelled")
            self.stats.failures += 1
            for p in items:
                for future in p.futures:
                    if not future.done():
                        future.set_exception(error)
            self._void_behind(items)
            if not isinstance(exc, Exception):
                raise
            return
        landed = set(row["landed"])
        stats = self.stats
        stats.flushes += 1
        appends = sum(len(p.futures) for p in items)
        stats.appends += appends
        stats.batch_max = max(stats.batch_max, appends)
        stats.seconds_total += time.monotonic() - started
        if len(self._unheard) > 10_000:  # notifications lost while the listener was down
            self._unheard.clear()
        for p, written in zip(items, data):
            ok = p.stream_id in landed
            if ok:
                self._unheard[(p.stream_id, p.tail)] = started
                if self._on_written is not None:
                    self._on_written(p.stream_id, p.expected, written)
            else:
                stats.conflicts += 1
            for future in p.futures:
                if future.done():
                    continue
                if ok:
                    future.set_result(None)
                else:
                    future.set_exception(StaleStream("another node changed the stream"))
        self._void_behind([p for p in items if p.stream_id not in landed])

    def _void_behind(self, failed: list[Pending]) -> None:
        """Fail the appends computed on `failed` ones: those queued for the next flush, and
        those queued until the engine has heard of the failure (its future callbacks run
        first, then `_void` is cleared). Their guard alone is not enough: another node's
        append of the same length gives the stream the tail they expect (ABA), and they
        would land on state they were not checked against (a producer seq after a gap)."""
        if not failed:
            return
        for p in failed:
            queued = self._queue.get(p.stream_id)
            if queued is not None and queued.expected == p.tail:
                del self._queue[p.stream_id]
                self._queued_bytes -= sum(len(piece) for piece in queued.pieces)
                self._queued_appends -= len(queued.futures)
                for future in queued.futures:
                    if not future.done():
                        future.set_exception(StaleStream("an earlier append to this stream failed"))
            self._void[p.stream_id] = p.tail
        ids = [p.stream_id for p in failed]
        asyncio.get_running_loop().call_soon(self._hear_void, ids)

    def _hear_void(self, ids: list[int]) -> None:
        for stream_id in ids:
            self._void.pop(stream_id, None)
