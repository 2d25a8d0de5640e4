"""A minimal server for tests: an aiohttp app whose catch-all route calls
DurableStreamsHandler.handle. `python tests/protocol/launcher.py PORT [key=value...]`
serves on 127.0.0.1:PORT (0 = pick one; the bound port is printed as `listening PORT`)."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from durable_streams.server.protocol.handler import DurableStreamsHandler, ProtocolSettings


def build_app(handler: DurableStreamsHandler) -> web.Application:
    app = web.Application(client_max_size=1 << 40)  # the handler enforces its own body limit
    app.router.add_route("*", "/{tail:.*}", handler.handle)

    async def lifecycle(app: web.Application):
        await handler.start()
        yield
        await handler.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


def settings_from(args: list[str]) -> ProtocolSettings:
    values = {}
    for arg in args:
        key, _, value = arg.partition("=")
        field_type = str(ProtocolSettings.__dataclass_fields__[key].type)
        values[key] = value if "str" in field_type else float(value) if "float" in field_type else int(value)
    return ProtocolSettings(**values)


async def serve(port: int, settings: ProtocolSettings) -> None:
    runner = web.AppRunner(build_app(DurableStreamsHandler(settings)), handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print("listening", site._server.sockets[0].getsockname()[1], flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    try:
        asyncio.run(serve(int(sys.argv[1]), settings_from(sys.argv[2:])))
    except KeyboardInterrupt:
        pass
