"""The registry of streams and every state-changing rule, with no HTTP in it.

One `asyncio.Lock` per stream serialises check-then-append (closed -> content type ->
JSON validation -> producer -> Stream-Seq -> offsets -> store commit -> publish).
Structural changes (create, delete, expiry, fork clean-up) hold a per-path lock
(locks.py), taken before a stream lock, never after. Readers take no lock: a stream's
bytes below its tail never change, so a snapshot of (tail, closed) is enough.

Over a shared store (PostgreSQL, many nodes) the registry is a cache: reads, HEAD,
create and delete load the stream from the store first (`fresh`); appends trust the
cache and are refused by the store when another node moved the stream (`StaleStream`),
then reload it under the stream's lock and are checked again, in their queue order.
Other nodes' appends arrive as changes (`_remote_change`) that wake local readers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import functools
import random
import secrets
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Protocol, TypeVar

# Some of these are re-exported, not used here: layers above (subscriptions/) take the store's
# types from the engine, never from store/ directly.
from ..store.base import (
    Commit, Document, ProducerState, Retired, StaleDocument, StaleStream, StoredStream, StoreError, StoreUnavailable, StreamConfig,
    StreamState, StreamStore,
)
from .events import NO_EVENTS, EngineEvents
from .errors import (
    BelowFloor, Conflict, InvalidRequest, ShuttingDown, StreamClosed, StreamError, StreamGone, StreamNotFound,
)
from .expiry import Lifetime, fork_lifetime
from .forks import ForkRequest, fork_anchor, read_range, sub_offset_prefix
from .framing import MAX_UTF8_BYTES, Framing, first_unit_end, framing_of, json_records, media_type, unit_end
from .locks import PathLocks
from .offsets import parse_position
from .producers import ProducerClaim, ProducerVerdict, check_stream_seq, judge
from .retention import RetentionRule, add_mark, age_floor, rule_for
from .stream import Stream

log = logging.getLogger(__name__)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
PRODUCER_IDLE_TTL = 7 * 24 * 3600.0  # seconds; memory stores only
# Shared stores: how often one request is re-decided after other nodes' writes won
# the race for its stream before it is answered 503 (only under extreme contention).
MAX_STALE_RETRIES = 16
# How often a stale stream is reloaded before an append is decided on it, and how long
# each time this node's own in-flight appends to it may take to land first.
FRESH_LOAD_TRIES = 3
FRESH_LOAD_WAIT = 1.0
STALE_BACKOFF = 0.002  # seconds, times the attempt: the most a lost race pauses an append
SWEEP_PAGE = 500
RETENTION_PAUSE = 0.01  # seconds between two streams' retention passes: appends come first
RETENTION_TICK = 1.0  # seconds between looks at streams whose age marks fall due
T = TypeVar("T")


async def run_to_completion(operation: Awaitable[T]) -> T:
    """Run a state change to its end even if the request that asked for it is cancelled
    (client gone): the store and the engine's view of a stream must never disagree."""
    task = asyncio.ensure_future(operation)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return await asyncio.shield(task)


@dataclass(frozen=True, slots=True)
class CreateRequest:
    content_type: str | None  # None -> default (or the fork source's)
    lifetime: Lifetime = Lifetime()
    closed: bool = False
    body: bytes = b""
    fork: ForkRequest | None = None


# AppendRequest and AppendResult are not frozen: one of each is made per append, and a
# frozen dataclass's __init__ costs an object.__setattr__ call per field. Treat them as
# immutable all the same.
@dataclass(slots=True)
class AppendRequest:
    content_type: str | None
    body: bytes
    close: bool = False
    stream_seq: str | None = None
    producer: ProducerClaim | None = None


@dataclass(frozen=True, slots=True)
class CreateResult:
    """The stream as it was when the create (or the identical re-create) completed."""

    created: bool
    content_type: str
    tail: int
    closed: bool


@dataclass(slots=True)
class AppendResult:
    tail: int
    closed: bool
    producer: ProducerVerdict | None = None
    wrote: bool = True  # False: duplicate or idempotent close, nothing new


@dataclass(frozen=True, slots=True)
class Chunk:
    """One page of a read, from one snapshot of the stream."""

    data: bytes
    start: int
    next: int
    up_to_date: bool  # the page reaches the tail
    closed: bool  # the stream is closed and the page reaches its final offset


class StreamWatcher(Protocol):
    """Told of every stream change this node makes (subscriptions follow streams so)."""

    def appended(self, path: str, tail: int) -> None:
        """Data up to `tail` is durable in the stream at `path` (an append, or a create
        with a body). Called synchronously; a watcher must not block."""

    def removed(self, path: str) -> None:
        """The stream at `path` was deleted (or soft-deleted) or expired."""


class StreamEngine:
    def __init__(self, store: StreamStore, clock: Callable[[], float] | None = None,
                 events: EngineEvents = NO_EVENTS, retention: tuple[RetentionRule, ...] = ()) -> None:
        self.store = store
        self.retention = retention
        self._retention_due: set[Stream] = set()
        self._retention_wake = asyncio.Event()
        # Streams whose store is making a new floor durable (and may already be dropping
        # the bytes below it): (that floor, done when the store returns).
        self._retaining: dict[Stream, tuple[int, asyncio.Future]] = {}
        self.clock = clock or store.now  # a shared store's clock is its database's
        self.events = events
        self._streams: dict[str, Stream] = {}
        self._paths = PathLocks()
        self._watchers: list[StreamWatcher] = []
        self.stopping = False
        self._watch_period = 0  # shared stores: bumped at each resync (changes may have been missed)

    # ---------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        if self.store.shared:
            self.store.watch(self._remote_change, self._resync)
        stored = await self.store.open()
        for item in stored:
            self._streams[item.config.path] = self._new_stream(item.config, item.state, None)
        for stream in self._streams.values():  # refcounts are derived from the forks
            source_path = stream.config.settings.get("forked_from")
            source = self._streams.get(source_path) if source_path else None
            if source is not None:
                stream._source = source
                source._forks.add(stream)
        # A crash may have left a deleted source whose last fork is gone: finish the job.
        for stream in list(self._streams.values()):
            await self._collect(self._unreferenced(stream))

    def _new_stream(self, config: StreamConfig, state: StreamState, source: Stream | None) -> Stream:
        stream = Stream(config, state, source)
        if self.retention:
            stream._retention = rule_for(self.retention, config.path)
            if stream._retention is not None:
                self._retention_due.add(stream)  # its first age mark, or a size already over
        return stream

    def watch(self, watcher: StreamWatcher) -> None:
        self._watchers.append(watcher)

    async def paths(self) -> AsyncIterator[str]:
        """The paths of the visible streams (not soft-deleted), in no promised order."""
        if not self.store.shared:
            for path, stream in list(self._streams.items()):
                if not stream.state.soft_deleted:
                    yield path
            return
        after = ""
        while True:
            page = await self.store.paths(after, SWEEP_PAGE)
            for path in page:
                yield path
            if len(page) < SWEEP_PAGE:
                return
            after = page[-1]

    # Documents: the store's small records for the layers above (store/base.py).

    async def documents(self, kind: str) -> dict[str, Document]:
        return await self.store.documents(kind)

    async def document(self, kind: str, name: str) -> Document | None:
        return await self.store.document(kind, name)

    async def put_document(self, kind: str, name: str, body: bytes, *, replaces: int) -> int:
        return await run_to_completion(self.store.put_document(kind, name, body, replaces=replaces))

    async def delete_document(self, kind: str, name: str) -> None:
        await run_to_completion(self.store.delete_document(kind, name))

    def _removed(self, path: str) -> None:
        for watcher in self._watchers:
            watcher.removed(path)

    @property
    def stream_count(self) -> int:
        """Streams that exist (soft-deleted ones included: they still hold data)."""
        return len(self._streams)

    def release_readers(self) -> None:
        """Stop accepting requests and wake every live reader so it can finish."""
        self.stopping = True
        for stream in list(self._streams.values()):
            stream._signal.fire()

    async def close(self) -> None:
        self.release_readers()
        await self.store.close()

    # ---------------------------------------------------------------- lookup and expiry

    def _expired(self, stream: Stream) -> bool:
        # A stream with live readers waiting on it does not expire (PROTOCOL 5.1, TTL).
        if stream.state.soft_deleted or stream.removed or stream._live_readers:
            return False
        return stream.lifetime.is_expired(stream.state.last_access, self.clock())

    async def _resolve(self, path: str, *, fresh: bool = True) -> Stream | None:
        """The stream at `path` (soft-deleted ones included), expiring it if due. A
        soft-deleted stream also drops forks that expired since, which may free it.
        Over a shared store it is loaded first, unless `fresh` is off and it is cached."""
        if self.store.shared and (fresh or path not in self._streams):
            stream = await self._load(path)
        else:
            stream = self._streams.get(path)
        for _attempt in range(MAX_STALE_RETRIES):
            if stream is None or not self._expired(stream):
                break
            await self._discard(stream)
            # Over a shared store, a lookup that read the row before the expiry's delete
            # committed may have cached the expired stream again meanwhile: look again.
            stream = await self._load(path) if self.store.shared else self._streams.get(path)
        if stream is not None and stream.state.soft_deleted:
            if self.store.shared:  # only the database knows every fork
                for fork_path in await self.store.forks_of(path):
                    await self._resolve(fork_path)
                return await self._load(path)
            for fork in [f for f in stream._forks if self._expired(f)]:
                await self._discard(fork)
            await self._collect(self._unreferenced(stream))
            stream = self._streams.get(path)
        return stream

    def _ready_stream(self, path: str, *, fresh: bool = True) -> Stream | None:
        """What `require` returns when it needs no await (a cached stream, not due to
        expire nor soft-deleted, that needs no load); None when it would do more."""
        if self.stopping or (self.store.shared and (fresh or path not in self._streams)):
            return None
        stream = self._streams.get(path)
        if stream is None or stream.state.soft_deleted or self._expired(stream):
            return None
        return stream

    async def require(self, path: str, *, fresh: bool = True) -> Stream:
        """The visible stream at `path`, or the reason it is not there."""
        if self.stopping:
            raise ShuttingDown("server is shutting down")
        stream = await self._resolve(path, fresh=fresh)
        if stream is None:
            raise StreamNotFound(f"stream {path} not found")
        if stream.state.soft_deleted:
            raise StreamGone(f"stream {path} has been deleted")
        return stream

    async def sweep_expired(self) -> int:
        """Reclaim expired streams nobody has asked for since they expired (lazy checks
        already make expiry exact; this only frees memory and disk). Returns how many."""
        if self.store.shared:
            return await self._sweep_shared()
        swept = 0
        for index, stream in enumerate(list(self._streams.values())):
            if self._expired(stream):
                await self._discard(stream)
                swept += 1
            if index % 1000 == 999:
                await asyncio.sleep(0)  # stay responsive with many streams
        return swept

    async def _sweep_shared(self) -> int:
        """Walk every stream of the database; the guarded retire lets one node win each."""
        swept, after = 0, ""
        while not self.stopping:
            try:
                paths = await self.store.paths(after, SWEEP_PAGE)
            except StoreError:
                return swept  # the database is down: the next sweep tries again
            for path in paths:
                try:
                    swept += await self._sweep_one(path)
                except StoreError:
                    return swept
            if len(paths) < SWEEP_PAGE:
                return swept
            after = paths[-1]
        return swept

    async def _sweep_one(self, path: str) -> int:
        """Judge one stream of the walk; it joins this node's cache only if it expires
        here (each node would otherwise end up caching every stream of the database)."""
        if path in self._streams:
            stream = await self._load(path)
        else:
            stored = await self.store.lookup(path)
            if stored is None or path in self._streams:
                return 0
            lifetime = Lifetime.from_settings(stored.config.settings)
            if stored.state.soft_deleted or not lifetime.is_expired(stored.state.last_access, self.clock()):
                self.store.forget(path)
                return 0
            stream = await self._load(path)
        if stream is None or not self._expired(stream):
            return 0
        await self._discard(stream)
        return int(stream.removed)

    async def run_sweeper(self, interval: float) -> None:
        while not self.stopping:
            await asyncio.sleep(interval)
            await self.sweep_expired()

    def touch(self, stream: Stream) -> None:
        """A read or write reached the stream: restart its sliding TTL (never for HEAD)."""
        if stream.removed:
            return  # its path may already belong to a new incarnation
        now = self.clock()
        stream.state.last_access = now
        if self.store.shared and stream.lifetime.ttl is None:
            return  # only a sliding TTL reads access times: spare the database the write
        self.store.touch(stream.path, now)

    # ---------------------------------------------------------------- retention

    @property
    def retained_bytes(self) -> int:
        """Bytes the streams hold above their floors (their own bytes only)."""
        return sum(s.state.tail - max(s.state.floor, s.config.base_offset) for s in self._streams.values())

    async def run_retention(self) -> None:
        """Move floors as the rules allow, one stream at a time: streams that grew, and
        every second the streams whose age marks may have fallen due."""
        # Only a max_age rule can fall due without growth: without one, no scan of every
        # stream at each wake (it cost a third of the server's CPU with 20k idle streams).
        ages = any(rule.max_age is not None for rule in self.retention)
        loop = asyncio.get_running_loop()
        scanned = loop.time()
        while not self.stopping:
            try:
                await asyncio.wait_for(self._retention_wake.wait(), RETENTION_TICK)
            except asyncio.TimeoutError:
                pass
            self._retention_wake.clear()
            due, self._retention_due = self._retention_due, set()
            now = self.clock()
            if ages and loop.time() - scanned >= RETENTION_TICK:
                # at most once a tick, not at every wake (appends wake it all the time):
                # the scan costs in proportion to every stream held, idle ones included
                scanned = loop.time()
                due.update(s for s in self._streams.values() if self._age_due(s, now))
            for stream in due:
                if self.stopping:
                    return
                try:
                    await self.retain(stream)
                except (StoreError, StreamError):
                    pass  # tried again when the stream next grows or its marks fall due
                except Exception:  # never let one stream stop retention for all
                    log.exception("retention pass of %s failed", stream.path)
                await asyncio.sleep(0)  # appends and reads go first

    def _current(self, stream: Stream) -> bool:
        return not stream.removed and self._streams.get(stream.path) is stream

    @staticmethod
    def _age_due(stream: Stream, now: float) -> bool:
        rule = stream._retention
        if rule is None or rule.max_age is None:
            return False
        marks = stream.state.marks
        return bool(marks) and (now - marks[0][1] >= rule.max_age or now - marks[-1][1] >= rule.mark_interval)

    async def retain(self, stream: Stream) -> int:
        """One retention pass over a stream: add an age mark if one is due, move the floor
        as far as its rule allows and nothing pins, and have the store keep both (and
        reclaim the space). Returns the bytes the floor moved."""
        rule = stream._retention
        if rule is None or stream.removed or stream.state.soft_deleted:
            return 0
        state = stream.state
        now = self.clock()
        floor, marks = state.floor, state.marks
        if rule.max_age is not None:
            marks = add_mark(marks, state.tail, now, rule.mark_interval) or marks
            aged = age_floor(marks, now, rule.max_age)
            if aged is not None:
                floor = max(floor, aged)
        if rule.max_size is not None and state.tail - floor > rule.max_size:
            own_start = stream.config.base_offset
            # Down to 7/8 of the bound, so a stream at its bound is not compacted on every
            # append (one log record per append), but once per max_size / 8 of growth.
            wanted = max(own_start, state.tail - rule.max_size + rule.max_size // 8)
            boundary = wanted if wanted == own_start else await self.store.next_boundary(stream.path, wanted - 1)
            if not self._current(stream):
                return 0  # deleted (and maybe re-created) meanwhile: its path is not its own
            if boundary >= state.tail:  # the newest append alone is over: it is kept whole
                boundary = stream._last_append
            floor = max(floor, boundary)
        # Pins: a fork reads its source from its own floor up to its base (all it inherited,
        # until its own retention drops some); a read in progress reads from its start; a
        # fork being created has not registered yet. A pin below the new floor keeps the
        # old one (a pin need not be an append boundary; floors must).
        pins = [min(f.state.floor, f.config.base_offset) for f in stream._forks] + stream._reads
        if stream._pins or (pins and min(pins) < floor):
            floor = state.floor
        marks = tuple(m for m in marks if m[0] > floor)
        if floor <= state.floor and marks == state.marks:
            return 0
        dropped = max(0, floor - max(state.floor, stream.config.base_offset))
        done = asyncio.get_running_loop().create_future()
        self._retaining[stream] = (floor, done)  # reads from below it wait (_retention_settled)
        try:
            reclaimed = await self.store.retain(stream.path, floor, marks)
        finally:
            del self._retaining[stream]
            done.set_result(None)
        if stream.removed:
            return 0
        if self.store.shared:
            await self._load(stream.path)  # the database may have kept a lower floor (forks elsewhere)
        else:
            state.floor = max(state.floor, floor)
            state.marks = marks
        self.events.retention_applied(dropped, reclaimed)
        return dropped

    # ---------------------------------------------------------------- shared stores

    def live_cache(self, path: str) -> bool:
        """Whether a live read of `path` may start from the cached stream, with no lookup:
        over a shared store that is watching, for a stream loaded since the last resync,
        every change another node made has been notified (or is being: it wakes the
        reader when it arrives, as if the reader had come a moment earlier)."""
        if not self.store.shared:
            return True
        stream = self._streams.get(path)
        return (stream is not None and stream._watched_since == self._watch_period
                and self.store.watching)

    async def _load(self, path: str) -> Stream | None:
        """The stream at `path` as the shared store holds it now; the cache follows."""
        period = self._watch_period  # a resync during the lookup: it may predate a missed change
        stored = await self.store.lookup(path)
        cached = self._streams.get(path)  # after the await: a concurrent load may have won
        if stored is None:
            if cached is not None:
                self._drop_cached(cached)
            return None
        if cached is not None and cached.config.settings.get("incarnation") == stored.config.settings.get("incarnation"):
            self._adopt(cached, stored.state)
            cached._watched_since = period
            return cached
        if cached is not None:
            self._drop_cached(cached)  # deleted and re-created by another node
        source = None
        source_path = stored.config.settings.get("forked_from")
        if source_path:
            source = self._streams.get(source_path) or await self._load(source_path)
            cached = self._streams.get(path)
            if cached is not None:  # loaded meanwhile by another request
                return cached
        stream = self._new_stream(stored.config, stored.state, source)
        stream._watched_since = period
        if source is not None:
            source._forks.add(stream)
        self._streams[path] = stream
        return stream

    @staticmethod
    def _adopt(stream: Stream, fresh: StreamState) -> None:
        """Bring a cached stream to the state the store returned, never backwards."""
        state = stream.state
        if fresh.floor >= state.floor:  # a retention pass (of any node) moved it
            state.floor, state.marks = fresh.floor, fresh.marks
        if fresh.tail < state.tail:
            return  # read before one of this node's own appends landed
        if stream._in_flight and fresh.tail <= stream._pending.tail:
            return  # this node's queued appends will land (and publish) or fail
        moved = (fresh.tail, fresh.closed, fresh.soft_deleted) != (state.tail, state.closed, state.soft_deleted)
        state.tail, state.closed, state.closed_by = fresh.tail, fresh.closed, fresh.closed_by
        state.stream_seq, state.producers = fresh.stream_seq, fresh.producers
        state.soft_deleted = state.soft_deleted or fresh.soft_deleted  # never undone
        state.last_access = max(state.last_access, fresh.last_access)
        stream._stale = False
        if moved:
            stream._signal.fire()

    def _drop_cached(self, stream: Stream) -> None:
        """Another node deleted (or re-created) the stream this node had loaded."""
        if self._streams.get(stream.path) is stream:
            del self._streams[stream.path]
        stream._removed = True
        stream._signal.fire()
        if stream._source is not None:
            stream._source._forks.discard(stream)

    async def _recheck(self, stream: Stream) -> None:
        """A live read timed out: look at the database once, in case a notification was
        lost (it delays a reader, never loses it data). A database that is down is the
        next request's business: the reader just gets its timeout."""
        try:
            await self._load(stream.path)
        except StoreError:
            pass

    def _remote_change(self, path: str, tail: int, closed: bool) -> None:
        """Another node's flush moved a loaded stream (or this node's own, echoed back)."""
        stream = self._streams.get(path)
        if stream is None:
            return
        if tail < 0:  # deleted (or soft-deleted) by another node: let the database say which
            asyncio.ensure_future(self._reload_quietly([path]))
            return
        known = stream._pending if stream._pending is not None else stream.state
        if tail < known.tail or (tail == known.tail and (known.closed or not closed)):
            return  # this node's own append, or older news
        stream._stale = True
        if not stream._in_flight:
            # Readers may see it at once; the next append reloads the rest (producers...).
            stream.state.tail = tail
            stream.state.closed = stream.state.closed or closed
            stream._signal.fire()

    def _resync(self) -> None:
        """Changes may have been missed (the store lost its notifications): reload the
        streams that readers wait on; live reads look the others up again."""
        self._watch_period += 1
        waited = [s.path for s in self._streams.values() if s._live_readers]
        if waited:
            asyncio.ensure_future(self._reload_quietly(waited))

    async def _reload_quietly(self, paths: list[str]) -> None:
        for path in paths:
            try:
                await self._load(path)
            except StoreError:
                return  # down again: the next resync retries

    # ---------------------------------------------------------------- removal

    async def _discard(self, stream: Stream, *, explicit: bool = False) -> None:
        await run_to_completion(self._discard_now(stream, explicit))

    async def _discard_now(self, stream: Stream, explicit: bool) -> None:
        """Delete (or expire) a stream, then collect sources it was the last fork of,
        one path lock at a time (never nested, so never deadlocked)."""
        async with self._paths.hold(stream.path):
            if explicit:
                if stream.removed or self._streams.get(stream.path) is not stream:
                    raise StreamNotFound(f"stream {stream.path} not found")
                if stream.state.soft_deleted:
                    raise StreamGone(f"stream {stream.path} has been deleted")
            elif stream.removed or not self._expired(stream):
                return  # already handled by a concurrent request
            if self.store.shared:
                await self._retire(stream, explicit)
                return
            collectable = await self._remove(stream)
            if not explicit:
                self.events.stream_expired()
        await self._collect(collectable)

    async def _retire(self, stream: Stream, explicit: bool) -> None:
        """A shared store deletes (or soft-deletes) in the database, which knows every fork."""
        idle_since = None
        if not explicit and not stream.lifetime.is_expired(float("inf"), self.clock()):
            idle_since = stream.state.last_access  # a TTL expiry: only if nobody read since
        async with stream._lock:  # let an in-flight commit finish first
            outcome = await self.store.retire(stream.path, idle_since=idle_since)
        if outcome is Retired.IN_USE:
            await self._load(stream.path)  # another node's reader kept it alive
            return
        self._removed(stream.path)
        if outcome is Retired.KEPT_FOR_FORKS:
            stream.state.soft_deleted = True
            stream._signal.fire()
        else:
            self._drop_cached(stream)
            source = stream._source
            while source is not None and source.state.soft_deleted:
                await self._load(source.path)  # the database may have collected it too
                source = source._source
            if outcome is Retired.GONE and explicit:
                raise StreamNotFound(f"stream {stream.path} not found")
            if outcome is Retired.REMOVED and not explicit:
                self.events.stream_expired()

    async def _collect(self, source: Stream | None) -> None:
        while source is not None:
            async with self._paths.hold(source.path):
                if source.removed or self._unreferenced(source) is None:
                    return
                source = await self._remove(source)

    async def _remove(self, stream: Stream) -> Stream | None:
        """With the stream's path lock held: soft-delete it while forks still read it,
        otherwise remove it and release its source. Returns the source when it is now
        a soft-deleted stream nothing reads any more."""
        if stream.removed:
            return None
        if stream.referenced:
            if not stream.state.soft_deleted:
                async with stream._lock:
                    await self.store.mark_soft_deleted(stream.path)
                    stream.state.soft_deleted = True
                stream._signal.fire()
                self._removed(stream.path)
            return None
        if self._streams.get(stream.path) is stream:
            del self._streams[stream.path]
        stream._removed = True
        stream._signal.fire()
        async with stream._lock:  # let an in-flight commit finish first
            await self.store.delete(stream.path)
        self._removed(stream.path)
        if stream._source is None:
            return None
        stream._source._forks.discard(stream)
        return self._unreferenced(stream._source)

    @staticmethod
    def _unreferenced(stream: Stream) -> Stream | None:
        """`stream` if it is soft-deleted and nothing reads it any more, else None."""
        return stream if stream.state.soft_deleted and not stream.referenced else None

    async def delete(self, path: str) -> None:
        stream = await self.require(path)
        await self._discard(stream, explicit=True)

    # ---------------------------------------------------------------- create

    async def create(self, path: str, request: CreateRequest) -> CreateResult:
        """Create the stream, or confirm an identical one."""
        return await run_to_completion(self._create(path, request))

    async def _create(self, path: str, request: CreateRequest) -> CreateResult:
        for _attempt in range(MAX_STALE_RETRIES):
            await self._resolve(path)  # expire a previous incarnation first (takes its lock)
            async with self._paths.hold(path):
                existing = self._streams.get(path)
                if existing is not None and self._expired(existing):
                    continue  # expired in between: resolve again
                if existing is not None:
                    if existing.state.soft_deleted:
                        raise Conflict(f"stream {path} has been deleted and is kept for its forks")
                    self._check_same_config(existing, request)
                    stream, created = existing, False
                else:
                    try:
                        stream, created = await self._create_new(path, request), True
                    except StaleStream:
                        continue  # another node created it (or deleted the fork source) first
                state = stream.state
                return CreateResult(created, stream.config.content_type, state.tail, state.closed)
        raise StoreUnavailable(f"stream {path} kept changing while it was created; retry")

    async def _create_new(self, path: str, request: CreateRequest) -> Stream:
        settings: dict = {"requested": request.lifetime.to_settings()}
        if self.store.shared:  # tells a re-created path from the incarnation a node cached
            settings["incarnation"] = secrets.token_hex(8)
        content_type, lifetime = request.content_type, request.lifetime
        source, base_offset = None, 0
        if request.fork is not None:
            source = await self._resolve(request.fork.source_path)
            base_offset = fork_anchor(source, request.fork, content_type)
            if self._dropping(source, base_offset) is not None:  # its pass did not see this fork
                raise StoreUnavailable(f"retention is moving the floor of {request.fork.source_path}; retry")
            # Pin the source before awaiting anything: a concurrent DELETE of it must
            # soft-delete it rather than reclaim bytes this fork is about to share.
            source._pins += 1
            content_type = content_type or source.config.content_type
            lifetime = fork_lifetime(source.lifetime, lifetime)
            settings.update(
                forked_from=request.fork.source_path,
                fork_offset=base_offset,
                fork_sub_offset=request.fork.sub_offset,
            )
        try:
            prefix = b""
            if source is not None:
                prefix = await sub_offset_prefix(self.store, source, base_offset, request.fork.sub_offset)
            content_type = content_type or DEFAULT_CONTENT_TYPE
            settings.update(lifetime.to_settings())
            body = request.body
            if framing_of(content_type) is Framing.JSON and body:
                body = json_records(body, allow_empty_array=True)
            data = prefix + body
            now = self.clock()
            config = StreamConfig(path, content_type, now, base_offset, settings)
            # A fork starts at its source's floor: what lies below it is gone for the fork too.
            floor = min(source.state.floor, base_offset) if source is not None else 0
            state = StreamState(tail=base_offset + len(data), closed=request.closed, last_access=now, floor=floor)
            await self.store.create(config, state, data)
        except BaseException:
            if source is not None:
                source._pins -= 1  # if that freed a deleted source, its next lookup collects it
            raise
        stream = self._new_stream(config, state, source)
        self._streams[path] = stream
        if data:
            self.events.appended(len(data))
            for watcher in self._watchers:
                watcher.appended(path, state.tail)
        if source is not None:
            source._pins -= 1
            source._forks.add(stream)
        return stream

    @staticmethod
    def _check_same_config(stream: Stream, request: CreateRequest) -> None:
        settings = stream.config.settings
        wanted_type = request.content_type
        if wanted_type is None and request.fork is None:
            wanted_type = DEFAULT_CONTENT_TYPE
        if wanted_type is not None and media_type(wanted_type) != media_type(stream.config.content_type):
            raise Conflict("stream exists with a different Content-Type")
        requested = Lifetime.from_settings(settings.get("requested", {}))
        if (requested.ttl, requested.expires_at) != (request.lifetime.ttl, request.lifetime.expires_at):
            raise Conflict("stream exists with a different TTL or expiry")
        if stream.state.closed != request.closed:
            raise Conflict("stream exists with a different closed status")
        fork = request.fork
        if settings.get("forked_from") != (fork.source_path if fork else None):
            raise Conflict("stream exists with a different fork source")
        if fork is not None:
            if fork.offset is not None and parse_position(fork.offset) != settings.get("fork_offset"):
                raise Conflict("stream exists with a different fork offset")
            if fork.sub_offset != settings.get("fork_sub_offset", 0):
                raise Conflict("stream exists with a different fork sub-offset")

    # ---------------------------------------------------------------- append / close

    async def append(self, path: str, request: AppendRequest) -> AppendResult:
        """Check and queue an append under the stream's lock, then wait for it to be
        durable without the lock: appends to one stream share the store's flushes
        (pipelining). A commit is applied by a callback of the store's future, in queue
        order, whether or not its caller is still waiting (no task needed)."""
        for _attempt in range(MAX_STALE_RETRIES):
            stream = self._ready_stream(path, fresh=False) or await self.require(path, fresh=False)
            if self.store.shared:
                async with stream._lock:
                    queued_before = self._queued_before(stream)
                    try:
                        decided = await self._decide_shared(stream, request)
                    except StaleStream:  # refused at once, or never fresh: nothing landed
                        stream._stale = True
                        continue
                if decided is None:
                    continue  # re-created by another node: look the path up again
            elif stream._lock.locked():
                async with stream._lock:
                    queued_before = self._queued_before(stream)
                    decided = self._checked_append(stream, request)
            else:
                # A local store's check awaits nothing, so nothing can interleave: taking a
                # free lock would only cost its acquire and release.
                queued_before = self._queued_before(stream)
                decided = self._checked_append(stream, request)
            result, published = decided
            if published is None and not result.wrote and queued_before is not None:
                # A duplicate (or an idempotent close) recognised on appends not durable yet:
                # answered only once they are. If they fail, it is decided again, and written.
                await asyncio.wait([queued_before])  # landed or failed: decided again either way
                continue
            if published is not None:
                try:
                    await published  # raises the store's error; cancelling it leaves the append be
                except StaleStream:
                    # another node wrote first: nothing of this one landed. A random pause
                    # breaks the lockstep with a node that appends back to back (it would win
                    # every race: its cache is never stale, this one reloads each time).
                    await asyncio.sleep(random.random() * STALE_BACKOFF * (_attempt + 1))
                    continue
            self.touch(stream)
            return result
        raise StoreUnavailable(f"stream {path} kept changing under this node; retry")

    @staticmethod
    def _check_writable(stream: Stream) -> None:
        if stream.removed:
            raise StreamNotFound(f"stream {stream.path} not found")
        if stream.state.soft_deleted:
            raise StreamGone(f"stream {stream.path} has been deleted")

    async def _decide_shared(self, stream: Stream,
                             request: AppendRequest) -> tuple[AppendResult, asyncio.Future | None] | None:
        """Check and queue under the stream's lock, over a shared store whose cache may be
        stale: a stream marked stale is reloaded first (under the lock, so appends that
        failed together are re-decided in their queue order and a producer's next seq
        never overtakes its last), and an answer the store's guard will not check (a
        refusal, a duplicate) is only given on state loaded just now. None: the path now
        holds another incarnation."""
        loaded = False
        while True:
            if stream._stale and not loaded and not stream.removed:
                if not await self._load_fresh(stream):
                    return None
                loaded = True
            self._check_writable(stream)
            try:
                result, published = self._queue_append(stream, request)
            except StreamError:
                if loaded:
                    raise
                stream._stale = True
                continue
            if not loaded and not result.wrote:
                stream._stale = True
                continue
            return result, published

    async def _load_fresh(self, stream: Stream) -> bool:
        """Reload a stale stream (under its lock) until the cache holds what the store
        returned, with none of this node's appends in flight. While they are, `_adopt`
        keeps the cache or appends are decided on `_pending`: a refusal (a producer's seq
        another node accepted) would be false, so wait for them to land first. `_adopt`
        also keeps the cache when a notification moved its tail past the snapshot (new
        tail, old producers): an acceptance decided on that passes the guard (a retried
        seq written twice). False: the path holds another incarnation. StaleStream: the
        stream never held still (the caller re-decides, at worst answers 503)."""
        loop = asyncio.get_running_loop()
        for _attempt in range(FRESH_LOAD_TRIES):
            if await self._load(stream.path) is not stream:
                return False
            if stream.removed or not (stream._stale or stream._in_flight):
                return True  # (with appends in flight, the decision would be taken on `_pending`)
            deadline = loop.time() + FRESH_LOAD_WAIT
            while stream._in_flight and loop.time() < deadline:
                await stream._signal.wait(0.01)  # fired when one lands; a failure resets the count
        raise StaleStream("the stream kept changing while it was reloaded")

    def _checked_append(self, stream: Stream, request: AppendRequest) -> tuple[AppendResult, asyncio.Future | None]:
        self._check_writable(stream)
        return self._queue_append(stream, request)

    @staticmethod
    def _queued_before(stream: Stream) -> asyncio.Future | None:
        """The newest append still in flight, which a decision now would build on."""
        return stream._last_queued if stream._pending is not None else None

    def _queue_append(self, stream: Stream, request: AppendRequest) -> tuple[AppendResult, asyncio.Future | None]:
        state = stream._pending if stream._pending is not None else stream.state
        claim = request.producer
        if state.closed:
            if claim is not None and state.closed_by == claim.as_tuple():
                self.events.producer_duplicate()
                return AppendResult(state.tail, True, ProducerVerdict(True, claim.epoch, claim.seq), wrote=False), None
            if not request.body and request.close:
                return AppendResult(state.tail, True, None, wrote=False), None
            raise StreamClosed("stream is closed", state.tail)
        data = b""
        if request.body:
            if request.content_type is None:
                raise InvalidRequest("Content-Type is required with a body")
            if media_type(request.content_type) != media_type(stream.config.content_type):
                raise Conflict("Content-Type does not match the stream's")
            data = request.body
            if stream.framing is Framing.JSON:
                data = json_records(data, allow_empty_array=False)
        elif not request.close:
            raise InvalidRequest("empty body (only a close may have no body)")
        verdict = None
        if claim is not None:
            verdict = judge(self._producer_state(state, claim.producer_id), claim)
            if verdict.duplicate:
                self.events.producer_duplicate()
                return AppendResult(state.tail, state.closed, verdict, wrote=False), None
        if request.stream_seq is not None:
            check_stream_seq(state.stream_seq, request.stream_seq)
        now = self.clock()
        commit = Commit(
            tail=state.tail + len(data),
            close=request.close,
            closed_by=claim.as_tuple() if (claim is not None and request.close) else None,
            stream_seq=request.stream_seq,
            producer=(claim.producer_id, ProducerState(verdict.epoch, verdict.seq, now)) if verdict else None,
        )
        landed = self.store.append(stream.path, data, commit)
        result = AppendResult(commit.tail, state.closed or commit.close, verdict, wrote=True)
        if landed.done():  # the memory store: durable at once
            landed.result()
            self._publish(stream, commit, len(data))
            return result, None
        if stream._pending is None:
            stream._pending = stream.state.copy()
        stream._pending.apply(commit)
        stream._in_flight += 1
        published = landed.get_loop().create_future()  # get_running_loop() makes a getpid syscall on 3.11
        stream._last_queued = landed  # the store's own future: no request can cancel it
        landed.add_done_callback(
            functools.partial(self._landed, stream, commit, len(data), stream._generation, published))
        return result, published

    def _landed(self, stream: Stream, commit: Commit, nbytes: int, generation: int,
                published: asyncio.Future, landed: asyncio.Future) -> None:
        """A queued append is durable, or failed (callbacks run in queue order)."""
        current = generation == stream._generation
        failed = landed.cancelled() or landed.exception() is not None
        if current:
            stream._in_flight -= 1
            if failed or not stream._in_flight:
                # After a failure the appends queued behind it fail too (the store refuses
                # them): the next append is checked against the durable state again.
                stream._pending = None
                stream._in_flight = 0
                if failed:
                    stream._generation += 1
                    # shared: another node wrote first, or the outcome is unknown; a change
                    # notified meanwhile was not shown to readers: reload for them
                    stream._stale = self.store.shared
                    if self.store.shared:
                        asyncio.ensure_future(self._reload_quietly([stream.path]))
                elif stream._stale:  # another node's append was notified meanwhile
                    asyncio.ensure_future(self._reload_quietly([stream.path]))
        if not failed:
            self._publish(stream, commit, nbytes)
        if not published.done():  # its request may be gone
            if failed:
                published.set_exception(landed.exception() if not landed.cancelled() else StoreError("append cancelled"))
            else:
                published.set_result(None)

    def _publish(self, stream: Stream, commit: Commit, nbytes: int) -> None:
        stream.state.apply(commit)  # visible to readers only now that the store holds it
        stream._signal.fire()
        self.events.appended(nbytes)
        if nbytes and self._watchers:
            for watcher in self._watchers:
                watcher.appended(stream.path, commit.tail)
        if stream._retention is not None:
            if nbytes:
                stream._last_append = commit.tail - nbytes
            self._retention_due.add(stream)
            self._retention_wake.set()

    def _producer_state(self, state: StreamState, producer_id: str) -> ProducerState | None:
        """Producer state is kept for the stream's life by durable stores; a memory store
        forgets producers idle for a week (the protocol's recommendation)."""
        known = state.producers.get(producer_id)
        if known is not None and not self.store.durable and self.clock() - known.updated_at > PRODUCER_IDLE_TTL:
            del state.producers[producer_id]
            return None
        return known

    # ---------------------------------------------------------------- reads

    async def read(self, stream: Stream, start: int, max_bytes: int,
                   snapshot: tuple[int, bool] | None = None) -> Chunk:
        """One page from `start`, cut at a unit boundary, from one snapshot (tail, closed)
        of the stream, taken now unless given."""
        tail, closed = snapshot or (stream.state.tail, stream.state.closed)
        if start > tail:
            raise InvalidRequest("offset is beyond the tail of the stream")
        end = min(tail, start + max(1, max_bytes))
        if self.retention:
            await self._retention_settled(stream, start)
        with self._reading(stream, start):
            data = await read_range(self.store, stream, start, end)
            if end < tail:
                cut = unit_end(stream.framing, data)
                if cut == 0 and stream.framing is not Framing.BYTES:  # one unit larger than the page
                    longest = tail if stream.framing is Framing.JSON else min(tail, start + MAX_UTF8_BYTES)
                    data = await read_range(self.store, stream, start, longest)
                    cut = first_unit_end(stream.framing, data)
                data = data[: cut or len(data)]
        next_offset = start + len(data)
        return Chunk(data, start, next_offset, next_offset == tail, closed and next_offset == tail)

    async def read_pages(self, stream: Stream, start: int, end: int, page_bytes: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) in pieces of at most `page_bytes`, cut anywhere (the caller
        took (end, closed) from one snapshot and renders one response from them). Only
        one piece is held at a time, so a reader of any range costs bounded memory."""
        position = start
        if self.retention:
            await self._retention_settled(stream, start)
        with self._reading(stream, start):
            while position < end:
                stop = min(end, position + page_bytes)
                yield await read_range(self.store, stream, position, stop)
                position = stop

    def _dropping(self, stream: Stream, position: int) -> asyncio.Future | None:
        """A retention pass that is dropping the byte at `position` of the stream or of a
        source it reads (its floor is not moved yet, its bytes may already be gone)."""
        current: Stream | None = stream
        while current is not None:
            pending = self._retaining.get(current)
            if pending is not None and position < pending[0]:
                return pending[1]
            current = current._source
        return None

    async def _retention_settled(self, stream: Stream, start: int) -> None:
        """Wait out the retention passes dropping bytes at `start`: the store may free
        them before the floor moves (which is only once durable), so the read then sees
        that floor (410) or, if the pass failed, the bytes."""
        while (pending := self._dropping(stream, start)) is not None:
            await asyncio.shield(pending)

    def _reading(self, stream: Stream, start: int) -> contextlib.AbstractContextManager:
        """A read from `start` is in progress: retention keeps its bytes until it ends,
        in the stream and in the sources a fork reads below its base. Without retention
        rules no floor moves here, so there is nothing to pin (the read path stays lean)."""
        floor = stream.read_floor
        if start < floor:
            raise BelowFloor(floor)
        return self._pinned(stream, start) if self.retention else contextlib.nullcontext()

    @contextlib.contextmanager
    def _pinned(self, stream: Stream, start: int):
        chain: list[Stream] = []
        current: Stream | None = stream
        while current is not None:
            chain.append(current)
            current = current._source
        for held in chain:
            held._reads.append(start)
        try:
            yield
        finally:
            for held in chain:
                held._reads.remove(start)

    def read_start(self, stream: Stream, start: int | None) -> int:
        """Where a read asked to start at `start` begins: None (the beginning, offset=-1)
        is the floor; an explicit offset below it is gone."""
        floor = stream.read_floor
        if start is None:
            return floor
        if start < floor:
            raise BelowFloor(floor)
        return start

    async def wait(self, stream: Stream, position: int, deadline: float) -> None:
        """Wait until the stream grows past `position`, closes, disappears, the server
        stops, or the loop clock reaches `deadline`."""
        loop = asyncio.get_running_loop()
        stream._live_readers += 1
        try:
            while True:
                if stream.removed:
                    raise StreamNotFound(f"stream {stream.path} was deleted")
                if stream.state.soft_deleted:
                    raise StreamGone(f"stream {stream.path} has been deleted")
                if stream.state.tail > position or stream.state.closed or self.stopping:
                    return
                remaining = deadline - loop.time()
                if remaining <= 0:
                    if self.store.shared:
                        await self._recheck(stream)
                    return
                ttl = stream.lifetime.ttl
                if self.store.shared and ttl is not None:
                    # Other nodes do not see this reader: touch every half TTL, or one of
                    # them would expire the stream under it.
                    await stream._signal.wait(min(remaining, ttl / 2))
                    self.touch(stream)
                else:
                    await stream._signal.wait(remaining)
        finally:
            stream._live_readers -= 1
            self.touch(stream)  # its idle time starts when the last reader stops waiting
