"""A minimal server for tests: the project's HTTP server with DurableStreamsHandler.handle
as its only handler. `python tests/protocol/launcher.py PORT [key=value...]` serves on
127.0.0.1:PORT (0 = pick one; the bound port is printed as `listening PORT`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator

from durable_streams.server.http import HTTPServer
from durable_streams.server.config.model import DurableStreams
from durable_streams.server.protocol.handler import DurableStreamsHandler


@contextlib.asynccontextmanager
async def serving(handler: DurableStreamsHandler, port: int = 0, *,
                  shutdown_timeout: float = 1.0) -> AsyncIterator[int]:
    """Start `handler`, serve it on 127.0.0.1:`port`; yields the bound port."""
    await handler.start()
    server = HTTPServer(handler.handle)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    try:
        await server.listen(sock)
        yield sock.getsockname()[1]
    finally:
        await server.shutdown(shutdown_timeout)
        await handler.stop()


def settings_from(args: list[str]) -> DurableStreams:
    values = {}
    for arg in args:
        key, _, value = arg.partition("=")
        field_type = str(DurableStreams.__dataclass_fields__[key].type)
        values[key] = value if "str" in field_type else float(value) if "float" in field_type else int(value)
    return DurableStreams(**values)


async def serve(port: int, settings: DurableStreams) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serving(DurableStreamsHandler(settings), port) as bound:
        print("listening", bound, flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), settings_from(sys.argv[2:])))
