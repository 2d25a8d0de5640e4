"""Cross-node wake-ups: one dedicated LISTEN connection per store, never inside a
transaction. Each flush of any node notifies `id:tail[:c]` entries (flusher.py); the
listener hands those of streams this node has loaded to the store's callback.

A notification can be lost only while the connection is down. On reconnect the
listener LISTENs first and only then asks for a resync (the engine re-reads the tails
of streams with waiting readers), so a change is either notified or re-read: a lost
notification may delay a reader, never lose it data. Long-polls also re-check the
database when they time out."""

from __future__ import annotations

import asyncio
import binascii
import time
from collections.abc import Callable
from typing import NamedTuple

import structlog

log = structlog.get_logger("durable_streams.store.postgres")

CHANNEL = "durable_streams"  # one pg_notify per flush (flusher.py) on it; payloads as parse_payload reads them

RECONNECT_MIN = 0.1
RECONNECT_MAX = 2.0
KEEPALIVE = 5.0  # seconds between probes of an idle LISTEN connection


class Change(NamedTuple):
    stream_id: int
    tail: int  # -1: deleted
    closed: bool = False
    start: int = 0  # where `data` begins
    data: bytes | None = None  # the bytes of [start, tail), when the flush sent them


def parse_payload(payload: str) -> list[Change]:
    """`id:tail` (an append), `id:tail:c` (and closed), either followed by `:start:base64`
    when the entry carries the appended bytes (`id:tail::start:base64` when not closed),
    `id:d` (deleted or soft-deleted: reported with tail -1). Malformed entries are skipped."""
    entries = []
    for entry in payload.split(","):
        parts = entry.split(":")
        if len(parts) == 2 and parts[0].isdigit() and parts[1] == "d":
            entries.append(Change(int(parts[0]), -1))
        elif len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            stream_id, tail, closed = int(parts[0]), int(parts[1]), len(parts) > 2 and parts[2] == "c"
            data = None
            start = 0
            if len(parts) == 5 and parts[3].isdigit():
                try:
                    data = binascii.a2b_base64(parts[4])
                except binascii.Error:
                    data = None
                start = int(parts[3])
                if data is not None and start + len(data) != tail:
                    data = None  # not the bytes of [start, tail): never trust it
            entries.append(Change(stream_id, tail, closed, start, data))
    return entries


class Listener:
    def __init__(self, connect: Callable, on_notify: Callable[[list[Change]], None],
                 on_resync: Callable[[], None]) -> None:
        self._connect = connect  # () -> awaitable asyncpg connection
        self._on_notify = on_notify
        self._on_resync = on_resync
        self._task: asyncio.Task | None = None
        self._conn = None
        self._lost = asyncio.Event()
        self.connected = False
        self.reconnects = 0
        self.last_notify_at = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="postgres-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._drop()

    @property
    def backend_pid(self) -> int | None:
        return self._conn.get_server_pid() if self._conn is not None and not self._conn.is_closed() else None

    async def _run(self) -> None:
        delay = RECONNECT_MIN
        first = True
        while True:
            try:
                conn = await self._connect()
                self._lost.clear()
                conn.add_termination_listener(lambda _conn: self._lost.set())
                await conn.add_listener(CHANNEL, self._notified)
                self._conn = conn
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down: retry with back-off
                self.connected = False
                log.warning("postgres listener cannot connect", error=str(exc) or type(exc).__name__,
                            retry_in=round(delay, 2))
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX, delay * 2)
                continue
            self.connected = True
            delay = RECONNECT_MIN
            if not first:
                self.reconnects += 1
                log.info("postgres listener reconnected")
            first = False
            self._on_resync()  # after LISTEN: whatever changed meanwhile is re-read
            await self._watch(conn)
            self.connected = False
            await self._drop()

    async def _watch(self, conn) -> None:
        """Return when the connection is lost (terminated, or a keepalive fails)."""
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), KEEPALIVE)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await asyncio.wait_for(conn.execute("SELECT 1"), KEEPALIVE)
            except asyncio.CancelledError:
                raise
            except Exception:
                return

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.terminate()
            except Exception:
                pass

    def _notified(self, _conn, _pid, _channel, payload: str) -> None:
        self.last_notify_at = time.monotonic()
        self._on_notify(parse_payload(payload))
