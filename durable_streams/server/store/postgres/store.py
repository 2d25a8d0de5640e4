"""The PostgreSQL store: many stateless server nodes over one database.

A shared store (base.py): streams are loaded on lookup, appends are optimistic (the
flusher's guard refuses one computed on a stale cache with `StaleStream`), and other
nodes' appends arrive as notifications (listener.py). This node's knowledge of a
stream is the row id of the incarnation it loaded (`_ids`): every write names that
id, so a stream deleted and re-created elsewhere is never written through an old view.

Time is the database's: `now()` is the local clock corrected by the offset to the
database clock, measured at open and every minute, so every node judges TTLs alike.
TTL touches are batched like appends: one statement per batch, one batch in flight,
with `greatest()` so that an access time never moves backwards whatever the order
nodes flush in. Another node sees an access within a round trip, not a fixed interval
(a reader on node A keeps a stream alive that node B would otherwise expire)."""

from __future__ import annotations

import asyncio
import json
import time
from array import array
from bisect import bisect_right

import structlog

try:
    import asyncpg
except ImportError:  # an optional extra: only servers configured with `postgres` need it
    asyncpg = None

from ..base import (
    ChangeListener, Commit, Document, FloorMoved, ProducerState, ResyncListener, Retired, StaleDocument, StaleStream, StoredStream,
    StoreError, StoreUnavailable, StreamConfig, StreamState, StreamStore,
)
from .compactor import Compactor
from .flusher import Flusher
from .listener import CHANNEL, Change, Listener
from .recent import RecentBytes
from .schema import migrate

log = structlog.get_logger("durable_streams.store.postgres")

PROBE_INTERVAL = 1.0
CLOCK_INTERVAL = 60.0
CONNECT_TIMEOUT = 5.0

_LOOKUP_SQL = """
SELECT id, content_type, created_at, base_offset, settings::text AS settings, tail, closed,
       closed_by_producer, closed_by_epoch, closed_by_seq, stream_seq, soft_deleted, last_access,
       floor, marks::text AS marks,
       (SELECT coalesce(json_agg(json_build_array(producer_id, epoch, seq, updated_at)), '[]')::text
        FROM producers p WHERE p.stream_id = s.id) AS producers
FROM streams s WHERE path = $1
"""

_CREATE_SQL = """
INSERT INTO streams (path, content_type, created_at, base_offset, settings, fork_source, tail, closed,
                     soft_deleted, last_access, floor)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, false, $9, $10)
RETURNING id
"""

# Every chunk that overlaps [start, end): from the one holding `start` on.
_READ_SQL = """
SELECT start_offset, data FROM chunks
WHERE stream_id = $1 AND start_offset < $3 AND start_offset >= coalesce(
    (SELECT max(start_offset) FROM chunks WHERE stream_id = $1 AND start_offset <= $2), $2)
ORDER BY start_offset
"""

_BOUNDARY_SQL = """
SELECT ends FROM chunks WHERE stream_id = $1 AND start_offset <= $2
ORDER BY start_offset DESC LIMIT 1
"""


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
                            asyncpg.InterfaceError, asyncpg.exceptions.OperatorInterventionError,
                            asyncpg.exceptions.CannotConnectNowError,
                            asyncpg.exceptions.TooManyConnectionsError))


async def _keep_session(conn) -> None:
    """asyncpg resets a connection on every return to the pool (RESET ALL, UNLISTEN *,
    CLOSE ALL, pg_advisory_unlock_all: one more statement per flush and per read). Pool
    connections here never change session state: LISTEN has its own connection, advisory
    locks are transaction-scoped, transactions always end. So there is nothing to reset."""


class PostgresStore(StreamStore):
    durable = True
    shared = True

    def __init__(self, dsn: str, *, pool_size: int = 10) -> None:
        if asyncpg is None:
            raise StoreError("the postgres store needs asyncpg: pip install 'durable-streams-server[postgres]'")
        self.dsn = dsn
        self.pool_limit = pool_size
        self._pool = None
        self._ids: dict[str, int] = {}  # path -> row id of the incarnation this node loaded
        self._paths: dict[int, str] = {}
        self._touches: dict[int, float] = {}
        self._clock_offset = 0.0
        self._available = False
        self._on_change: ChangeListener | None = None
        self._on_resync: ResyncListener | None = None
        self._compactor = Compactor(lambda: self._pool, self._error)
        self._recent = RecentBytes()  # live readers read the newest bytes from memory
        self._flusher = Flusher(lambda: self._pool, self._error, self._written)
        self._listener = Listener(self._connect, self._notified, self._resync)
        self._maintenance: asyncio.Task | None = None
        self._toucher: asyncio.Task | None = None
        self._touched = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def _connect(self):
        return await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT)

    async def open(self) -> list[StoredStream]:
        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_limit,
                                                   timeout=CONNECT_TIMEOUT, reset=_keep_session)
            async with self._pool.acquire() as conn:
                await migrate(conn, log)
                await self._calibrate(conn)
        except Exception as exc:
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            if _is_connection_error(exc):
                raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}") from exc
            raise
        self._available = True
        self._flusher.start()
        self._compactor.start()
        self._listener.start()
        self._maintenance = asyncio.create_task(self._maintain(), name="postgres-maintenance")
        self._toucher = asyncio.create_task(self._touch_loop(), name="postgres-toucher")
        return []  # streams are loaded on lookup

    async def close(self) -> None:
        if self._pool is None:
            return
        await self._flusher.stop()
        await self._compactor.stop()
        for task in (self._maintenance, self._toucher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._listener.stop()
        try:
            await self._flush_touches()
        except StoreError:
            pass  # access times only lengthen a TTL: losing the last second is harmless
        await self._pool.close()
        self._pool = None

    async def _calibrate(self, conn) -> None:
        before = time.time()
        db_now = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
        after = time.time()
        self._clock_offset = db_now - (before + after) / 2

    async def _maintain(self) -> None:
        """A probe each second while the database is down; the clock each minute."""
        last_calibration = time.monotonic()
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                if not self._available:
                    async with self._pool.acquire() as conn:
                        await conn.fetchval("SELECT 1")
                    # connections opened before the outage may be dead without knowing it:
                    # have every one replaced, so the first requests after it do not fail
                    await self._pool.expire_connections()
                    self._flusher.reconnect()
                    self._available = True
                    log.info("postgres reachable again")
                    self._touched.set()
                if time.monotonic() - last_calibration > CLOCK_INTERVAL:
                    async with self._pool.acquire() as conn:
                        await self._calibrate(conn)
                    last_calibration = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._error(exc)

    def _error(self, exc: BaseException) -> StoreError:
        """The StoreError a database failure becomes; a lost database marks the store
        unavailable until the maintenance probe reaches it again."""
        if isinstance(exc, StoreError):
            return exc
        if _is_connection_error(exc):
            if self._available:
                log.warning("postgres unreachable", error=str(exc) or type(exc).__name__)
            self._available = False
            return StoreUnavailable(f"database unavailable: {exc or type(exc).__name__}")
        log.error("postgres error", error=str(exc), kind=type(exc).__name__)
        return StoreError(f"database error: {type(exc).__name__}")

    async def _query(self, method: str, sql: str, *args):
        try:
            async with self._pool.acquire() as conn:
                return await getattr(conn, method)(sql, *args)
        except Exception as exc:
            raise self._error(exc) from exc

    @property
    def available(self) -> bool:
        return self._available

    # ------------------------------------------------------------------ documents

    async def documents(self, kind: str) -> dict[str, Document]:
        rows = await self._query("fetch", "SELECT name, version, body FROM documents WHERE kind = $1", kind)
        return {row["name"]: Document(bytes(row["body"]), row["version"]) for row in rows}

    async def document(self, kind: str, name: str) -> Document | None:
        row = await self._query("fetchrow", "SELECT version, body FROM documents WHERE kind = $1 AND name = $2",
                                kind, name)
        return None if row is None else Document(bytes(row["body"]), row["version"])

    async def put_document(self, kind: str, name: str, body: bytes, *, replaces: int) -> int:
        """Compare-and-set on the version: of two nodes that read one version, one wins."""
        if replaces == 0:
            sql = ("INSERT INTO documents (kind, name, version, body) VALUES ($1, $2, 1, $3) "
                   "ON CONFLICT DO NOTHING RETURNING version")
            version = await self._query("fetchval", sql, kind, name, bytes(body))
        else:
            sql = ("UPDATE documents SET version = version + 1, body = $3 "
                   "WHERE kind = $1 AND name = $2 AND version = $4 RETURNING version")
            version = await self._query("fetchval", sql, kind, name, bytes(body), replaces)
        if version is None:
            raise StaleDocument(f"{kind} document {name!r} was changed by another node")
        return version

    async def delete_document(self, kind: str, name: str) -> None:
        await self._query("execute", "DELETE FROM documents WHERE kind = $1 AND name = $2", kind, name)

    def now(self) -> float:
        return time.time() + self._clock_offset

    # ------------------------------------------------------------------ the shared contract

    def watch(self, on_change: ChangeListener, on_resync: ResyncListener) -> None:
        self._on_change, self._on_resync = on_change, on_resync

    def forget(self, path: str) -> None:
        stream_id = self._ids.pop(path, None)
        if stream_id is not None:
            self._paths.pop(stream_id, None)
            self._touches.pop(stream_id, None)
            self._compactor.forget(stream_id)
            self._recent.forget(stream_id)

    def _remember(self, path: str, stream_id: int) -> None:
        old = self._ids.get(path)
        if old is not None and old != stream_id:
            self._paths.pop(old, None)
            self._touches.pop(old, None)
            self._recent.forget(old)
        self._ids[path] = stream_id
        self._paths[stream_id] = path

    @property
    def watching(self) -> bool:
        return self._listener.connected

    def _written(self, stream_id: int, start: int, data: bytes) -> None:
        """One of this node's flushes committed `data` at `start` of the stream."""
        self._compactor.wrote(stream_id, len(data))
        if stream_id in self._paths:
            self._recent.add(stream_id, start, data)

    def _notified(self, entries: list[Change]) -> None:
        self._flusher.heard(entries)
        for change in entries:
            path = self._paths.get(change.stream_id)
            if path is None:
                continue  # not loaded here: nobody reads it
            # the bytes first: the readers woken next read them from memory
            if change.tail < 0:
                self._recent.forget(change.stream_id)
            elif change.data is not None:
                self._recent.add(change.stream_id, change.start, change.data)
            else:
                self._recent.moved(change.stream_id, change.tail)
            if self._on_change is not None:
                self._on_change(path, change.tail, change.closed)

    def _resync(self) -> None:
        if self._on_resync is not None:
            self._on_resync()

    async def lookup(self, path: str) -> StoredStream | None:
        row = await self._query("fetchrow", _LOOKUP_SQL, path)
        if row is None:
            self.forget(path)
            return None
        stream_id = row["id"]
        if stream_id < self._ids.get(path, 0):
            return await self.lookup(path)  # overtaken by a lookup that saw a newer incarnation
        self._remember(path, stream_id)
        config = StreamConfig(path, row["content_type"], row["created_at"], row["base_offset"],
                              json.loads(row["settings"]))
        producers = {pid: ProducerState(epoch, seq, at) for pid, epoch, seq, at in json.loads(row["producers"])}
        closed_by = None
        if row["closed_by_producer"] is not None:
            closed_by = (row["closed_by_producer"], row["closed_by_epoch"], row["closed_by_seq"])
        last_access = max(row["last_access"], self._touches.get(stream_id, 0.0))
        state = StreamState(tail=row["tail"], closed=row["closed"], closed_by=closed_by,
                            stream_seq=row["stream_seq"], producers=producers,
                            soft_deleted=row["soft_deleted"], last_access=last_access, floor=row["floor"],
                            marks=tuple(tuple(m) for m in json.loads(row["marks"])))
        return StoredStream(config, state)

    async def paths(self, after: str, limit: int) -> list[str]:
        rows = await self._query("fetch", "SELECT path FROM streams WHERE path > $1 ORDER BY path LIMIT $2",
                                 after, limit)
        return [r["path"] for r in rows]

    async def forks_of(self, path: str) -> list[str]:
        rows = await self._query(
            "fetch", "SELECT f.path FROM streams f JOIN streams s ON f.fork_source = s.id WHERE s.path = $1", path)
        return [r["path"] for r in rows]

    # ------------------------------------------------------------------ writes

    async def create(self, config: StreamConfig, state: StreamState, data: bytes = b"") -> None:
        source_id = None
        source_path = config.settings.get("forked_from")
        if source_path is not None:
            source_id = self._ids.get(source_path)
            if source_id is None:
                raise StaleStream("the fork source is not loaded")
        try:
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    if source_id is not None:
                        # FOR SHARE: a concurrent delete or retention pass of the source
                        # waits, then sees this fork (and keeps its bytes)
                        floor = await conn.fetchval(
                            "SELECT floor FROM streams WHERE id = $1 AND NOT soft_deleted FOR SHARE", source_id)
                        if floor is None:
                            raise StaleStream("the fork source was deleted")
                        if floor > config.base_offset:
                            raise StaleStream("the fork source's retention dropped the fork point")
                    stream_id = await conn.fetchval(
                        _CREATE_SQL, config.path, config.content_type, config.created_at, config.base_offset,
                        json.dumps(config.settings), source_id, state.tail, state.closed, state.last_access,
                        state.floor)
                    if data:
                        await conn.execute(
                            "INSERT INTO chunks (stream_id, start_offset, end_offset, data, ends) "
                            "VALUES ($1, $2, $3, $4, $5)",
                            stream_id, config.base_offset, state.tail, data, array("q", [state.tail]).tobytes())
        except asyncpg.UniqueViolationError as exc:
            raise StaleStream("another node created a stream at this path") from exc
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        self._remember(config.path, stream_id)

    def append(self, path: str, data: bytes, commit: Commit) -> asyncio.Future:
        stream_id = self._ids.get(path)
        if stream_id is None:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(StaleStream("the stream is not loaded"))
            return future
        return self._flusher.append(stream_id, data, commit)

    async def mark_soft_deleted(self, path: str) -> None:
        stream_id = self._require_id(path)
        await self._query("execute", "UPDATE streams SET soft_deleted = true WHERE id = $1", stream_id)

    async def delete(self, path: str) -> None:
        await self.retire(path)

    async def retire(self, path: str, *, idle_since: float | None = None) -> Retired:
        stream_id = self._ids.get(path)
        if stream_id is None:
            return Retired.GONE
        try:
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    outcome = await self._retire(conn, stream_id, idle_since)
        except Exception as exc:
            raise self._error(exc) from exc
        if outcome is not Retired.KEPT_FOR_FORKS and outcome is not Retired.IN_USE:
            self.forget(path)
        return outcome

    async def _notify_deleted(self, conn, stream_ids: list[int]) -> None:
        """Readers on other nodes learn at once (inside the deleting transaction: sent on COMMIT)."""
        for start in range(0, len(stream_ids), 400):
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL,
                               ",".join(f"{i}:d" for i in stream_ids[start:start + 400]))

    async def _retire(self, conn, stream_id: int, idle_since: float | None) -> Retired:
        row = await conn.fetchrow(
            "SELECT soft_deleted, fork_source, last_access FROM streams WHERE id = $1 FOR UPDATE", stream_id)
        if row is None:
            return Retired.GONE
        if idle_since is not None and row["last_access"] > idle_since:
            return Retired.IN_USE
        if await self._has_forks(conn, stream_id):
            await conn.execute("UPDATE streams SET soft_deleted = true WHERE id = $1", stream_id)
            await self._notify_deleted(conn, [stream_id])
            return Retired.KEPT_FOR_FORKS
        await self._drop(conn, stream_id)
        await self._notify_deleted(conn, [stream_id])
        source = row["fork_source"]
        while source is not None:  # a deleted source whose last fork this was goes too
            # Only a soft-deleted source is locked: flushes never lock those (their guard
            # skips them), so this lock taken after the fork's (higher id) cannot deadlock.
            if not await conn.fetchval("SELECT soft_deleted FROM streams WHERE id = $1", source):
                break
            up = await conn.fetchrow("SELECT soft_deleted, fork_source FROM streams WHERE id = $1 FOR UPDATE", source)
            if up is None or not up["soft_deleted"] or await self._has_forks(conn, source):
                break
            await self._drop(conn, source)
            self._forget_id(source)
            source = up["fork_source"]
        return Retired.REMOVED

    @staticmethod
    async def _has_forks(conn, stream_id: int) -> bool:
        return await conn.fetchval("SELECT EXISTS (SELECT 1 FROM streams WHERE fork_source = $1)", stream_id)

    @staticmethod
    async def _drop(conn, stream_id: int) -> None:
        await conn.execute("DELETE FROM chunks WHERE stream_id = $1", stream_id)
        await conn.execute("DELETE FROM producers WHERE stream_id = $1", stream_id)
        await conn.execute("DELETE FROM streams WHERE id = $1", stream_id)

    def _forget_id(self, stream_id: int) -> None:
        path = self._paths.get(stream_id)
        if path is not None:
            self.forget(path)

    async def retain(self, path: str, floor: int, marks: tuple[tuple[int, float], ...]) -> int:
        """The floor never passes a fork's base (forks of any node: the database knows
        them); whole chunk rows below it are deleted in the same transaction."""
        stream_id = self._require_id(path)
        try:
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    # Locked first: a fork created meanwhile (FOR SHARE) either committed
                    # before, and the next statement's snapshot sees its base, or waits.
                    if await conn.fetchval("SELECT id FROM streams WHERE id = $1 FOR NO KEY UPDATE",
                                           stream_id) is None:
                        raise StaleStream("the stream was deleted")
                    kept = await conn.fetchval(
                        "UPDATE streams s SET floor = greatest(s.floor, least($2, coalesce("
                        "(SELECT min(least(f.floor, f.base_offset)) FROM streams f WHERE f.fork_source = s.id), $2))), "
                        "marks = $3::jsonb WHERE s.id = $1 RETURNING s.floor",
                        stream_id, floor, json.dumps([list(m) for m in marks]))
                # The floor is durable; its rows go in a second transaction, so the stream's
                # row is not locked (against every node's flushes) while they are deleted.
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", stream_id)  # the compactor's
                    freed = await conn.fetchval(
                        "WITH gone AS (DELETE FROM chunks WHERE stream_id = $1 AND end_offset <= $2 "
                        "RETURNING end_offset - start_offset AS size) SELECT coalesce(sum(size), 0) FROM gone",
                        stream_id, kept)
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        return int(freed)

    def touch(self, path: str, when: float) -> None:
        stream_id = self._ids.get(path)
        if stream_id is not None and when > self._touches.get(stream_id, 0.0):
            self._touches[stream_id] = when
            self._touched.set()

    async def _touch_loop(self) -> None:
        while True:
            await self._touched.wait()
            self._touched.clear()
            try:
                await self._flush_touches()
            except StoreError:
                await asyncio.sleep(PROBE_INTERVAL)  # kept for the next try

    async def _flush_touches(self) -> None:
        if not self._touches:
            return
        touches, self._touches = self._touches, {}
        try:
            await self._query(  # rows locked in id order, as the flusher does: no deadlock
                "execute",
                "WITH locked AS (SELECT id FROM streams WHERE id = ANY($1::bigint[]) ORDER BY id "
                "FOR NO KEY UPDATE) "
                "UPDATE streams s SET last_access = greatest(s.last_access, t.at) "
                "FROM unnest($1::bigint[], $2::float8[]) AS t (id, at) "
                "WHERE s.id = t.id AND s.id IN (SELECT id FROM locked)",
                list(touches), list(touches.values()))
        except BaseException:  # failed or cancelled (close): keep them for the next try
            for stream_id, at in touches.items():
                if at > self._touches.get(stream_id, 0.0):
                    self._touches[stream_id] = at
            raise

    # ------------------------------------------------------------------ reads

    def _require_id(self, path: str) -> int:
        stream_id = self._ids.get(path)
        if stream_id is None:
            raise StaleStream("the stream is not loaded")
        return stream_id

    async def read(self, path: str, start: int, end: int) -> bytes:
        if start >= end:
            return b""
        stream_id = self._require_id(path)
        recent = self._recent.get(stream_id, start, end)
        if recent is not None:
            return recent
        rows = await self._query("fetch", _READ_SQL, stream_id, start, end)
        pieces = []
        position = start
        for row in rows:
            chunk_start, data = row["start_offset"], row["data"]
            if chunk_start > position:
                break  # a gap: the rows are gone (the stream was deleted)
            skip = position - chunk_start
            take = min(len(data), end - chunk_start)
            if take > skip:
                pieces.append(data[skip:take] if (skip or take < len(data)) else data)
                position = chunk_start + take
        if position < end:
            floor = await self._query("fetchval", "SELECT floor FROM streams WHERE id = $1", stream_id)
            if floor is not None and floor > position:
                raise FloorMoved(floor)
            raise StaleStream("the stream's bytes are gone (deleted by another node)")
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def next_boundary(self, path: str, position: int) -> int:
        stream_id = self._require_id(path)
        ends_bytes = await self._query("fetchval", _BOUNDARY_SQL, stream_id, position)
        if ends_bytes is not None:
            ends = array("q")
            ends.frombytes(ends_bytes)
            i = bisect_right(ends, position)
            if i < len(ends):
                return ends[i]
        tail = await self._query("fetchval", "SELECT tail FROM streams WHERE id = $1", stream_id)
        if tail is None:
            raise StaleStream("the stream was deleted")
        return tail

    # ------------------------------------------------------------------ operations
    # The counters ops/metrics.py reads at each scrape (StoreStats, SharedStoreStats).

    @property
    def flush_count(self) -> int:
        return self._flusher.stats.flushes

    @property
    def flush_seconds_total(self) -> float:
        return self._flusher.stats.seconds_total

    @property
    def batch_records_total(self) -> int:
        return self._flusher.stats.appends

    open_handles = 0
    evictions = 0

    @property
    def conflicts(self) -> int:
        return self._flusher.stats.conflicts

    @property
    def pool_size(self) -> int:
        return self._pool.get_size() if self._pool is not None else 0

    @property
    def pool_in_use(self) -> int:
        return self._pool.get_size() - self._pool.get_idle_size() if self._pool is not None else 0

    @property
    def listener_connected(self) -> bool:
        return self._listener.connected

    @property
    def listener_reconnects(self) -> int:
        return self._listener.reconnects

    @property
    def reads_from_memory(self) -> int:
        return self._recent.hits

    @property
    def notify_count(self) -> int:
        return self._flusher.stats.notified

    @property
    def notify_seconds_total(self) -> float:
        return self._flusher.stats.notify_seconds_total
