"""The storage interface: where the bytes and the state of streams live.

The engine holds every protocol rule and calls a store only to keep what it has
decided. A store never validates protocol input; it keeps bytes and state, durably
(file store) or not (memory store), and serves byte ranges back.

Positions are logical byte positions in the stream's offset space. A stream's own
bytes start at `config.base_offset` (0, or the fork point for a fork: a fork shares
its source's offset space, so the engine stitches reads below `base_offset` from
the source). `read(start, end)` is only asked for `base_offset <= start <= end <= tail`.

Append boundaries: a store also keeps where each append (and a create's initial data)
ended, a few bytes per append, so that `next_boundary` can name the end of the append
at a position. It may know fewer boundaries than there were (data written by a version
that kept none), never false ones: an unknown boundary only makes the answer later.

Concurrency: the engine serialises all writes to one stream (one at a time per
path); a store may run writes to different streams concurrently and should batch
them (group commit). Every awaited write returns only when it is as durable as the
store promises (`durable`), and data with its `Commit` land atomically.

Local and shared stores. A local store (memory, file) belongs to one process: `open()`
returns every stream and the engine's registry is the truth. A shared store (`shared`,
PostgreSQL) is written by many server processes at once: `open()` returns nothing, the
engine loads streams on lookup (`lookup`) and keeps them as a cache, and the store
refuses a write computed on a stale cache with `StaleStream` (the engine reloads and
checks the request again). The store names the changes other nodes make (`watch`), and
decides deletions itself (`retire`), since only the database knows every fork.
"""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """What is fixed when a stream is created."""

    path: str
    content_type: str
    created_at: float  # unix seconds
    base_offset: int = 0  # where this stream's own bytes begin (fork point; 0 otherwise)
    # Engine-owned creation settings (TTL, Expires-At, fork source and requested offsets…),
    # JSON-serialisable; a store persists it verbatim and never interprets it.
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProducerState:
    epoch: int
    seq: int  # last accepted sequence number in this epoch
    updated_at: float


@dataclass(slots=True)
class StreamState:
    """What changes over a stream's life. Reference counts of forks are not kept:
    the engine derives them from the forks' `settings` when the store is opened."""

    tail: int
    closed: bool = False
    # (producer id, epoch, seq) of the append that closed the stream, for idempotent retries.
    closed_by: tuple[str, int, int] | None = None
    stream_seq: str | None = None  # last accepted Stream-Seq header value
    producers: dict[str, ProducerState] = field(default_factory=dict)
    soft_deleted: bool = False
    last_access: float = 0.0  # TTL clock (unix seconds); persisted lazily via touch()
    # Retention (engine/retention.py): the earliest retained offset, and the age marks
    # ((tail, unix time) pairs) it is computed from; both change only through `retain`.
    floor: int = 0
    marks: tuple[tuple[int, float], ...] = ()

    def copy(self) -> "StreamState":
        """An independent copy (ProducerState and tuples are immutable; only the dict is not)."""
        # by hand: dataclasses.replace costs several times more, and this runs per append
        return StreamState(tail=self.tail, closed=self.closed, closed_by=self.closed_by, stream_seq=self.stream_seq,
                           producers=dict(self.producers), soft_deleted=self.soft_deleted,
                           last_access=self.last_access, floor=self.floor, marks=self.marks)

    def apply(self, commit: "Commit") -> None:
        """The one definition of what a commit changes (engine, stores and replay use it)."""
        self.tail = commit.tail
        if commit.close:
            self.closed = True
            self.closed_by = commit.closed_by
        if commit.stream_seq is not None:
            self.stream_seq = commit.stream_seq
        if commit.producer is not None:
            producer_id, producer_state = commit.producer
            self.producers[producer_id] = producer_state


# Not frozen: one is made per append, and a frozen dataclass's __init__ costs an
# object.__setattr__ call per field. Treat it as immutable all the same.
@dataclass(slots=True)
class Commit:
    """The state change that travels with one append (or a close without data).
    Lands atomically with the data: after a crash, both or neither."""

    tail: int  # tail after this append
    close: bool = False
    closed_by: tuple[str, int, int] | None = None
    stream_seq: str | None = None  # new Stream-Seq, when the request carried one
    producer: tuple[str, ProducerState] | None = None  # (producer id, new state)


@dataclass(slots=True)
class StoredStream:
    config: StreamConfig
    state: StreamState


class StoreError(Exception):
    """A write could not be made durable. The stream is unchanged and stays writable."""


class StoreFull(StoreError):
    """No space left on the device."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (a shared store's database is down). For a write the
    outcome may be unknown: only an idempotent producer can retry it safely."""


class StaleStream(StoreError):
    """Shared stores: another node changed, deleted or re-created the stream since this
    node loaded it. Nothing was written; reload the stream and decide again."""


class FloorMoved(StaleStream):
    """Shared stores: another node's retention dropped the bytes asked for."""

    def __init__(self, floor: int) -> None:
        super().__init__("the bytes are below the stream's floor")
        self.floor = floor


class StaleDocument(StoreError):
    """Shared stores: another node wrote the document since this node read it. Nothing was
    written; read it again and decide again."""


@dataclass(frozen=True, slots=True)
class Document:
    """A small named document kept beside the streams (a subscription, a signing key).
    `version` counts its writes: a write names the version it replaces, so that on a
    shared store two nodes cannot both change one document from the same reading."""

    body: bytes
    version: int


class Retired(enum.Enum):
    """What `retire` did."""

    REMOVED = "removed"  # gone, storage reclaimed (and sources nothing reads any more)
    KEPT_FOR_FORKS = "kept"  # soft-deleted: forks still read its bytes
    GONE = "gone"  # it was already gone: another node deleted or expired it first
    IN_USE = "in use"  # an expiry lost to an access recorded since `idle_since`


# Shared stores tell the engine what other nodes did: (path, tail, closed) for a stream
# this node has loaded, and "resync" after a gap in which changes may have been missed.
ChangeListener = Callable[[str, int, bool], None]
ResyncListener = Callable[[], None]


class StreamStore(ABC):
    durable: bool = False
    shared: bool = False

    def now(self) -> float:
        """The clock of TTLs and expiry (unix seconds): a shared store uses its database's."""
        return time.time()

    async def lookup(self, path: str) -> StoredStream | None:
        """Shared stores: the stream at `path` as the database holds it now."""
        raise NotImplementedError("only shared stores look streams up")

    async def retire(self, path: str, *, idle_since: float | None = None) -> Retired:
        """Shared stores: delete the stream, or soft-delete it while forks read it, and
        remove sources that nothing reads any more. With `idle_since` (an expiry) only
        if no access was recorded after it, so exactly one node expires a stream."""
        raise NotImplementedError("only shared stores retire streams")

    async def paths(self, after: str, limit: int) -> list[str]:
        """Shared stores: stream paths in order, after `after` (the expiry sweep's walk)."""
        raise NotImplementedError("only shared stores list paths")

    async def forks_of(self, path: str) -> list[str]:
        """Shared stores: the paths of the streams forked from the one at `path`."""
        raise NotImplementedError("only shared stores list forks")

    def watch(self, on_change: ChangeListener, on_resync: ResyncListener) -> None:
        """Shared stores: report changes made by other nodes to loaded streams."""

    def forget(self, path: str) -> None:
        """Shared stores: the engine dropped `path` from its cache."""

    @property
    def watching(self) -> bool:
        """Shared stores: True while other nodes' changes reach this node (`watch`). A
        resync follows every period without them."""
        return False

    @property
    def available(self) -> bool:
        """False while the store cannot serve (a shared store's database is down)."""
        return True

    @abstractmethod
    async def open(self) -> list[StoredStream]:
        """Recover (if persistent) and return every stream that exists, soft-deleted ones included."""

    @abstractmethod
    async def close(self) -> None:
        """Flush what is pending and release files and locks."""

    @abstractmethod
    async def create(self, config: StreamConfig, state: StreamState, data: bytes = b"") -> None:
        """Create a stream with its initial bytes (`state.tail == config.base_offset + len(data)`).
        Any earlier stream at the same path must have been deleted first."""

    @abstractmethod
    def append(self, path: str, data: bytes, commit: Commit) -> Awaitable[None]:
        """Queue `data` (may be empty for a close-only commit) and `commit`, to land
        atomically; the returned future resolves once they are durable, or fails.

        Appends to one stream land in call order, so a caller may queue the next one
        before the previous is durable (the engine does, to share flushes). An append
        that does not start at the stream's durable tail fails: it was computed on an
        earlier append that failed. Cancelling a waiter does not cancel the append."""

    @abstractmethod
    async def mark_soft_deleted(self, path: str) -> None:
        """Hide a stream that still has forks; its bytes stay readable for them."""

    @abstractmethod
    async def delete(self, path: str) -> None:
        """Remove a stream and reclaim its storage. The path is reusable at once and an
        old incarnation never comes back, also across a crash."""

    @abstractmethod
    async def read(self, path: str, start: int, end: int) -> bytes:
        """Return this stream's own bytes in [start, end)."""

    @abstractmethod
    async def next_boundary(self, path: str, position: int) -> int:
        """The end of the append that starts at or contains `position` (for
        `base_offset <= position < tail`): the smallest known append end greater than
        `position`, or the tail when none is known."""

    @abstractmethod
    async def retain(self, path: str, floor: int, marks: tuple[tuple[int, float], ...]) -> int:
        """Record the stream's floor (never lower than before) and its age marks, durably,
        then reclaim the storage of its own bytes below the floor: at once or later, in
        whole units of the store's choosing, but never before the floor is durable (a
        crash leaves a floor at or before the bytes present). The engine asks only for
        floors at append boundaries, below every live fork's base and every read in
        progress. Returns the bytes whose storage was released by this call."""

    # Documents: small records of the layers above streams (subscriptions, their signing
    # keys), grouped by `kind`, as durable as the store's streams. They are written
    # rarely compared with appends (a subscription's state changes once per wake or ack),
    # so each write is its own commit, and it returns once durable.

    @abstractmethod
    async def documents(self, kind: str) -> dict[str, Document]:
        """Every document of `kind`, by name."""

    async def document(self, kind: str, name: str) -> Document | None:
        """One document, or None."""
        return (await self.documents(kind)).get(name)

    @abstractmethod
    async def put_document(self, kind: str, name: str, body: bytes, *, replaces: int) -> int:
        """Write a document over version `replaces` (0: it does not exist yet) and return its
        new version. Shared stores raise StaleDocument when the stored version differs."""

    @abstractmethod
    async def delete_document(self, kind: str, name: str) -> None:
        """Remove a document; absent is fine."""

    @abstractmethod
    def touch(self, path: str, when: float) -> None:
        """Record a TTL-relevant access. Not awaited; persisted lazily (a crash may lose
        the last few seconds of access times, which only lengthens a sliding TTL)."""

