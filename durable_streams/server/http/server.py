"""HTTPServer: serves one handler on any number of sockets, and shuts down gracefully."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterable
from typing import Protocol

from .client_hello import ClientHello, peek_client_hello
from .connection import AccessLog, Connection, Handler, PrepareHook
from .h2connection import H2Connection
from .settings import ServerSettings


def alpn_protocols(protocols: Iterable[str]) -> list[str]:
    """What a TLS listener offers by ALPN for `servers { protocols }` (empty: Caddy's
    default, h1 h2 h3). h3 is not served, nor h2c (HTTP/2 without TLS)."""
    return ["h2", "http/1.1"] if "h2" in (protocols or ("h1", "h2", "h3")) else ["http/1.1"]


log = logging.getLogger("durable_streams.server.http")

HELLO_TIMEOUT = 10.0  # a client that has not sent its ClientHello by then is dropped
HANDSHAKE_TIMEOUT = 60.0  # asyncio's default TLS handshake timeout


class ContextPicker(Protocol):
    """Chooses a TLS connection's context from its ClientHello, before the handshake."""

    def wants_hello(self) -> bool:
        """True while the choice needs the ClientHello (reading it costs a wait per connection)."""
        ...

    def context_for(self, hello: ClientHello | None) -> ssl.SSLContext | None:
        """The context for this hello (None: the listener's default)."""
        ...


class _AcceptLoop:
    """A listening socket served by our own accept loop, so that each connection's TLS
    context can be picked from its ClientHello (see client_hello.py); it stands where
    loop.create_server's Server would (sockets, close)."""

    def __init__(self, server: "HTTPServer", sock: socket.socket, context: ssl.SSLContext,
                 picker: ContextPicker) -> None:
        self._server = server
        self._sock = sock
        self._context = context
        self._picker = picker
        self._pending: set[asyncio.Task[None]] = set()
        self._task = asyncio.get_running_loop().create_task(self._accept())

    @property
    def sockets(self) -> list[socket.socket]:
        return [] if self._sock.fileno() < 0 else [self._sock]

    def close(self) -> None:
        self._task.cancel()
        self._sock.close()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(self._sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:  # e.g. EMFILE: let the moment pass rather than spin
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._start(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _start(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        try:
            context = self._context
            if self._picker.wants_hello():
                hello = await peek_client_hello(conn, HELLO_TIMEOUT)
                context = self._picker.context_for(hello) or context
            await asyncio.get_running_loop().connect_accepted_socket(
                self._server._protocol, conn, ssl=context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("TLS connection not established: %r", exc)
            conn.close()


class HTTPServer:
    def __init__(self, handler: Handler, settings: ServerSettings = ServerSettings(), *,
                 prepare_hook: PrepareHook | None = None, access_log: AccessLog | None = None) -> None:
        self.handler = handler
        self.settings = settings
        self.prepare_hook = prepare_hook  # called on every response just before its head is sent
        self.access_log = access_log
        self.connections: set[Connection | H2Connection] = set()
        self.shutting_down = False
        self.partial_head_bytes = 0  # held in incomplete request heads, all connections
        self.refused_connections = 0  # closed at once: max_connections were open
        self.accepted_connections = 0  # served (not refused), HTTP/2 ones included
        self.h2_connections = 0  # accepted ones that chose h2 by ALPN
        self._listeners: list[asyncio.AbstractServer] = []
        self._all_closed: asyncio.Future | None = None  # set while shutdown waits

    def connection_closed(self, conn: Connection | H2Connection) -> None:
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

    def serve_h2(self, transport: asyncio.BaseTransport) -> None:
        """A TLS connection that chose h2 by ALPN, handed over by its Connection right
        after the handshake."""
        self.h2_connections += 1
        conn = H2Connection(self)
        transport.set_protocol(conn)
        conn.connection_made(transport)

    async def listen(self, sock: socket.socket, ssl_context: ssl.SSLContext | None = None,
                     picker: ContextPicker | None = None) -> asyncio.AbstractServer:
        """Serve on `sock` (listening already); over TLS with `ssl_context`, or with a
        context chosen per connection by `picker` (default `ssl_context`)."""
        loop = asyncio.get_running_loop()
        listener: asyncio.AbstractServer
        if picker is not None and ssl_context is not None:
            listener = _AcceptLoop(self, sock, ssl_context, picker)  # type: ignore[assignment]
        else:
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
        seconds to finish (their responses say `Connection: close`; HTTP/2 connections get
        GOAWAY), then cut the rest."""
        await self.stop_listening()
        self.shutting_down = True
        for conn in list(self.connections):
            conn.begin_shutdown()  # HTTP/2: GOAWAY, and the streams already open finish
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
