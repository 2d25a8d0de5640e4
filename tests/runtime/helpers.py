"""Start a real ServerApp from Caddyfile text, with `durable_streams` swapped for an echo
handler (so routing is tested without the protocol layer)."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator

from durable_streams.server.config import load_config
from durable_streams.server.config.model import DurableStreams
from durable_streams.server.http import Request, Response, json_response
from durable_streams.server.runtime.app import ServerApp


class EchoHandler:
    """Terminal test handler: reports which `durable_streams` block answered (its data_dir
    is used as a label), the path it saw and the body size limit in force."""

    def __init__(self, config: DurableStreams) -> None:
        self.label = config.data_dir or "memory"
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def __call__(self, request: Request, next) -> Response:
        from durable_streams.server.runtime.context import context_of

        received = len(await request.read()) if request.body_exists else 0
        body = {
            "received": received,
            "label": self.label,
            "path": request.path,
            "method": request.method,
            "max_body_size": context_of(request).max_body_size,
        }
        return json_response(body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serve(text: str, *, echo: bool = True) -> AsyncIterator[ServerApp]:
    config = load_config(text)
    factories = {DurableStreams: lambda c, _compiler: EchoHandler(c)} if echo else None
    app = ServerApp(config, handler_factories=factories)
    await app.start()
    try:
        yield app
    finally:
        await app.shutdown()


def port_of(app: ServerApp, server: str = "srv0") -> int:
    for name, sockname in app.bound_addresses:
        if name == server:
            return sockname[1]
    raise LookupError(server)


def decode(text: str) -> dict:
    return json.loads(text)
