"""Per-path locks for structural changes (create, delete, expiry, fork clean-up), so
creating or deleting one stream never waits for another stream's storage I/O."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class PathLocks:
    """One asyncio.Lock per path, existing only while someone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, path: str) -> AsyncIterator[None]:
        entry = self._locks.get(path)
        if entry is None:
            entry = self._locks[path] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[path]
