"""One live incarnation of a stream path: what the protocol layer may read, and the
engine's bookkeeping, which only the engine (streams.py, forks.py) touches.

The protocol layer sees a stream through `StreamView` (read-only): its fixed config,
its visible state (changed only by the engine, after the store holds a commit), how its
bytes are framed, its lifetime, and the SSE encodings readers share."""

from __future__ import annotations

import asyncio
from typing import Protocol

from ..store.base import StreamConfig, StreamState
from .expiry import Lifetime
from .fanout import SharedEvents, Signal
from .framing import Framing, framing_of


class StreamView(Protocol):
    """A stream as the protocol layer reads it; it never assigns to one."""

    @property
    def path(self) -> str: ...

    @property
    def config(self) -> StreamConfig: ...

    @property
    def state(self) -> StreamState: ...

    @property
    def framing(self) -> Framing: ...

    @property
    def lifetime(self) -> Lifetime: ...

    @property
    def sse_cache(self) -> SharedEvents: ...

    @property
    def removed(self) -> bool: ...

    @property
    def read_floor(self) -> int: ...


class Stream:
    __slots__ = ("config", "state", "framing", "lifetime", "sse_cache", "_removed",
                 "_source", "_forks", "_pins", "_live_readers", "_lock", "_pending",
                 "_in_flight", "_generation", "_signal", "_stale", "_watched_since",
                 "_retention", "_reads", "_last_append", "_last_queued")

    def __init__(self, config: StreamConfig, state: StreamState, source: Stream | None) -> None:
        # Read by the protocol layer (StreamView); plain attributes: the read path is hot.
        self.config = config
        self.state = state  # durable and visible; the engine applies commits to it
        self.framing = framing_of(config.content_type)
        self.lifetime = Lifetime.from_settings(config.settings)
        self.sse_cache = SharedEvents()  # one encoded SSE event per position, shared
        self._removed = False
        # Engine bookkeeping.
        self._source = source  # fork source (the object, so a re-created path is never confused)
        self._forks: set[Stream] = set()  # live forks
        self._pins = 0  # forks being created from this stream right now
        self._live_readers = 0  # long-polls and SSE connections waiting on it
        self._lock = asyncio.Lock()
        # Appends queued in the store but not durable yet: `_pending` is the state with
        # them applied (what the next append is checked against); readers see `state`.
        self._pending: StreamState | None = None
        self._in_flight = 0
        self._generation = 0  # bumped when a queued append fails: the ones behind it are void
        self._signal = Signal()
        # Shared stores: another node may have changed the stream since it was loaded;
        # the next append reloads it before checking (its readers may already see more).
        self._stale = False
        # Shared stores: the engine's watch period in which it was last loaded (-1: never);
        # within the same period every change since has been notified.
        self._watched_since = -1
        self._retention = None  # its RetentionRule, if one applies (set by the engine)
        # Starts of the reads in progress: the floor never passes one (their bytes stay).
        self._reads: list[int] = []
        self._last_append = -1  # where the newest append began, once one landed here
        self._last_queued: asyncio.Future | None = None  # lands with the newest queued append

    @property
    def path(self) -> str:
        return self.config.path

    @property
    def removed(self) -> bool:
        """Deleted or expired: its path may already belong to a new incarnation."""
        return self._removed

    @property
    def read_floor(self) -> int:
        """The earliest offset a reader of this stream can still read: its own floor, or
        a source's below the base of the fork reading it, whichever is higher (a fork
        reads its source below its base, and a source's floor may rise up to that base)."""
        floor, current, below = self.state.floor, self._source, self.config.base_offset
        while current is not None:
            floor = max(floor, min(current.state.floor, below))
            below = min(below, current.config.base_offset)
            current = current._source
        return floor

    @property
    def referenced(self) -> bool:
        """The reference count is non-zero: its bytes must be kept for forks."""
        return bool(self._forks) or self._pins > 0
