"""Waking live readers. One `Signal` per stream: a commit, close or delete wakes every
waiter (long-poll or SSE) at once. No polling.
SSE subscribers at the same position share one encoded event (`SharedEvents`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Awaitable, Callable, Iterator, TypeVar

T = TypeVar("T")


class Signal:
    """Each waiter has a future of its own, resolved by `fire()` or by its own timer:
    waking N readers costs N future results, with no shield or wait_for per reader."""

    def __init__(self) -> None:
        # A dict as an ordered set: waiters wake in the order they started waiting.
        self._waiters: dict[asyncio.Future[None], None] = {}

    async def wait(self, timeout: float) -> None:
        """Return when `fire()` is called or `timeout` seconds pass. Callers check their
        condition first and call this without awaiting in between, so no wake-up is lost."""
        if timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(timeout, _wake, waiter)
        self._waiters[waiter] = None
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiters.pop(waiter, None)

    def fire(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, {}
            for waiter in waiters:
                _wake(waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # a waiter cancelled with its task is done already
        waiter.set_result(None)


class SharedEvents:
    """A small cache of encoded SSE events (and long-poll answers) keyed by the stream
    snapshot they were read from, so N readers woken by one append read and encode it
    once. Concurrent subscribers await the same in-flight result."""

    def __init__(self, size: int = 2) -> None:
        self._size = size
        self._events: OrderedDict[tuple, asyncio.Future] = OrderedDict()
        self._subscribers = 0

    @contextlib.contextmanager
    def subscribed(self) -> Iterator[None]:
        """Hold while subscribed; the cache is dropped when the last subscriber leaves,
        so only streams being watched keep encoded events in memory."""
        self._subscribers += 1
        try:
            yield
        finally:
            self._subscribers -= 1
            if not self._subscribers:
                self._events.clear()

    def ready(self, key: tuple):
        """The finished result for `key`, or None: a reader that finds one goes on without
        a suspension (the in-flight wait of `get` costs every reader a wake-up)."""
        future = self._events.get(key)
        if future is None or not future.done() or future.cancelled() or future.exception() is not None:
            return None
        return future.result()

    def keep(self, key: tuple, value: object) -> None:
        """Store a result made by a subscriber itself, for the others to find with `ready`."""
        if not self._subscribers:
            return  # nobody watching: nothing would drop it
        future = asyncio.get_running_loop().create_future()
        future.set_result(value)
        self._events[key] = future
        if len(self._events) > self._size:
            self._events.popitem(last=False)

    async def get(self, key: tuple, produce: Callable[[], Awaitable[T]]) -> T:
        future = self._events.get(key)
        if future is None:
            future = asyncio.ensure_future(produce())
            # Mark a failure as seen even if every awaiting subscriber has gone.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._events[key] = future
            if len(self._events) > self._size:
                self._events.popitem(last=False)
            try:
                return await asyncio.shield(future)
            except BaseException:
                if self._events.get(key) is future and future.done():
                    del self._events[key]  # never cache a failure
                raise
        return await asyncio.shield(future)
