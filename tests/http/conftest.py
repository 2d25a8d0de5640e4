from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import pytest

from durable_streams.server.http import HTTPServer, ServerSettings

from rawhttp import TIMEOUT, RawClient, listening_socket


@dataclass
class Served:
    server: HTTPServer
    port: int
    clients: list[RawClient] = field(default_factory=list)

    async def connect(self, *, nodelay: bool = False) -> RawClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), TIMEOUT)
        if nodelay:
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = RawClient(reader, writer)
        self.clients.append(client)
        return client


@pytest.fixture
async def serve():
    """`await serve(handler, settings, **kwargs)` starts an HTTPServer on an ephemeral port."""
    started: list[Served] = []

    async def start(handler, settings: ServerSettings = ServerSettings(), **kwargs) -> Served:
        server = HTTPServer(handler, settings, **kwargs)
        sock = listening_socket()
        port = sock.getsockname()[1]
        await server.listen(sock)
        served = Served(server, port)
        started.append(served)
        return served

    yield start
    for served in started:
        for client in served.clients:
            client.close()
        await served.server.shutdown(0)
