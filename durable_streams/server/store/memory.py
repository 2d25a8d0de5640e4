"""In-memory store: bytes and state in process memory, lost on exit (`durable = False`)."""

from __future__ import annotations

import asyncio
from array import array
from bisect import bisect_right

from .base import Commit, Document, StoredStream, StreamConfig, StreamState, StreamStore


class _Entry:
    __slots__ = ("config", "state", "data", "boundaries", "start")

    def __init__(self, config: StreamConfig, state: StreamState, data: bytes) -> None:
        self.config = config
        self.state = state
        self.start = config.base_offset  # offset of data[0]: moves up as retention drops a prefix
        self.data = bytearray(data)
        self.boundaries = array("q")  # end offset of each append (and of the initial data)
        if data:
            self.boundaries.append(config.base_offset + len(data))


class MemoryStore(StreamStore):
    durable = False

    def __init__(self) -> None:
        self._streams: dict[str, _Entry] = {}
        self._documents: dict[str, dict[str, Document]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # get_running_loop() costs a getpid syscall on 3.11

    async def open(self) -> list[StoredStream]:
        return [StoredStream(e.config, e.state.copy()) for e in self._streams.values()]

    async def close(self) -> None:
        pass

    async def create(self, config: StreamConfig, state: StreamState, data: bytes = b"") -> None:
        self._streams[config.path] = _Entry(config, state.copy(), data)

    def append(self, path: str, data: bytes, commit: Commit) -> asyncio.Future:
        entry = self._streams[path]
        entry.data += data
        entry.state.apply(commit)
        if data:
            entry.boundaries.append(commit.tail)
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        done = loop.create_future()
        done.set_result(None)  # in memory, landed is durable
        return done

    async def mark_soft_deleted(self, path: str) -> None:
        self._streams[path].state.soft_deleted = True

    async def delete(self, path: str) -> None:
        self._streams.pop(path, None)

    async def read(self, path: str, start: int, end: int) -> bytes:
        entry = self._streams[path]
        base = entry.start
        # One copy (a bytearray slice, then bytes(), would be two); the view is released
        # before returning, so appends can still grow the bytearray.
        with memoryview(entry.data) as view:
            with view[start - base : end - base] as piece:
                return bytes(piece)

    async def next_boundary(self, path: str, position: int) -> int:
        entry = self._streams[path]
        i = bisect_right(entry.boundaries, position)
        return entry.boundaries[i] if i < len(entry.boundaries) else entry.state.tail

    async def retain(self, path: str, floor: int, marks: tuple[tuple[int, float], ...]) -> int:
        entry = self._streams[path]
        entry.state.floor = max(entry.state.floor, floor)
        entry.state.marks = marks
        drop = entry.state.floor - entry.start
        if drop <= 0:
            return 0
        del entry.data[:drop]  # the prefix is released (bytearray shrinks in place)
        entry.start += drop
        del entry.boundaries[:bisect_right(entry.boundaries, entry.start)]
        return drop

    def touch(self, path: str, when: float) -> None:
        entry = self._streams.get(path)
        if entry is not None:
            entry.state.last_access = when

    async def documents(self, kind: str) -> dict[str, Document]:
        return dict(self._documents.get(kind, {}))

    async def put_document(self, kind: str, name: str, body: bytes, *, replaces: int) -> int:
        version = replaces + 1
        self._documents.setdefault(kind, {})[name] = Document(bytes(body), version)
        return version

    async def delete_document(self, kind: str, name: str) -> None:
        self._documents.get(kind, {}).pop(name, None)
