"""HTTPServer: serves one handler on any number of sockets, and shuts down gracefully."""

from __future__ import annotations

import asyncio
import socket
import ssl

from .connection import AccessLog, Connection, Handler, PrepareHook
from .settings import ServerSettings


class HTTPServer:
    def __init__(self, handler: Handler, settings: ServerSettings = ServerSettings(), *,
                 prepare_hook: PrepareHook | None = None, access_log: AccessLog | None = None) -> None:
        self.handler = handler
        self.settings = settings
        self.prepare_hook = prepare_hook  # called on every response just before its head is sent
        self.access_log = access_log
        self.connections: set[Connection] = set()
        self.shutting_down = False
        self.partial_head_bytes = 0  # held in incomplete request heads, all connections
        self.refused_connections = 0  # closed at once: max_connections were open
        self._listeners: list[asyncio.AbstractServer] = []
        self._all_closed: asyncio.Future | None = None  # set while shutdown waits

    def connection_closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._all_closed is not None and not self._all_closed.done():
            self._all_closed.set_result(None)

    @property
    def open_connections(self) -> int:
        return len(self.connections)

    def connection_refused(self) -> None:
        self.refused_connections += 1

    def _protocol(self) -> Connection:
        return Connection(self)

    async def listen(self, sock: socket.socket, ssl_context: ssl.SSLContext | None = None) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(self._protocol, sock=sock, ssl=ssl_context, backlog=1024)
        self._listeners.append(listener)
        return listener

    async def listen_unix(self, path: str, ssl_context: ssl.SSLContext | None = None) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        listener = await loop.create_unix_server(self._protocol, path, ssl=ssl_context, backlog=1024)
        self._listeners.append(listener)
        return listener

    async def stop_listening(self, listener: asyncio.AbstractServer | None = None) -> None:
        """Close listening sockets (one, or all); open connections go on."""
        for item in [listener] if listener is not None else list(self._listeners):
            if item in self._listeners:
                self._listeners.remove(item)
            item.close()

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, close idle connections, give requests in progress `timeout`
        seconds to finish (their responses say `Connection: close`), then cut the rest."""
        await self.stop_listening()
        self.shutting_down = True
        for conn in list(self.connections):
            if conn.idle:
                conn.close()
        if self.connections:
            self._all_closed = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._all_closed), timeout)
            except TimeoutError:
                pass
        for conn in list(self.connections):
            conn.abort()
        if self.connections:
            await asyncio.sleep(0)
