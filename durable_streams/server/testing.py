"""An embeddable Durable Streams server for tests.

It is the daemon itself, in-process: a Caddyfile is generated from the arguments, loaded
by the same config layer and served by the same runtime (`ServerApp`), protocol handler
and engine as `durable-streams-server run`.

    async with DurableStreamTestServer() as server:
        url = f"{server.url}/my-stream"          # http://127.0.0.1:PORT/v1/stream/my-stream
        url = f"{server.origin}/my-stream"       # any path is a stream: http://127.0.0.1:PORT/my-stream

For synchronous test suites, `BlockingDurableStreamTestServer` runs the same server on a
background thread with its own event loop:

    with BlockingDurableStreamTestServer() as server:
        requests.put(f"{server.url}/my-stream")
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .config import load_config
from .config.durations import format_duration
from .runtime.app import ServerApp

DEFAULT_PATH_PREFIX = "/v1/stream"


def _quoted(text: str) -> str:
    if "\n" in text or "\r" in text:
        raise ValueError(f"unsupported character in {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DurableStreamTestServer:
    """A server on `host:port` (port 0 picks a free one). In memory unless `data_dir` is given.

    Like `durable-streams-server dev`, it serves a stream at every path; `path_prefix` only
    sets where `url` points (default `/v1/stream`).

    After `stop()`, `start()` again listens on the same port, so a client can be tested
    against a server restart (with `data_dir`, the streams survive it)."""

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        data_dir: str | None = None,
        long_poll_timeout: float | None = None,  # None: the `durable_streams` default (30 s)
        *,
        sse_reconnect_interval: float | None = None,  # None: the default (60 s)
        max_file_handles: int | None = None,  # None: the default (100)
        path_prefix: str = DEFAULT_PATH_PREFIX,
        grace_period: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.data_dir = data_dir
        self.long_poll_timeout = long_poll_timeout
        self.sse_reconnect_interval = sse_reconnect_interval
        self.max_file_handles = max_file_handles
        self.path_prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
        self.grace_period = grace_period
        self._app: ServerApp | None = None

    @property
    def origin(self) -> str:
        """`http://host:port`: `{origin}/{any path}` is a stream too."""
        if self._app is None and self.port == 0:
            raise RuntimeError("the server has no port yet: start() it first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL where streams live: `{url}/{stream id}` is a stream."""
        return self.origin + self.path_prefix

    @property
    def running(self) -> bool:
        return self._app is not None

    def caddyfile(self) -> str:
        """The configuration this server runs (what `durable-streams-server run` would be given)."""
        options = []
        if self.data_dir is not None:
            options.append(f"data_dir {_quoted(str(self.data_dir))}")
        if self.long_poll_timeout is not None:
            options.append(f"long_poll_timeout {format_duration(self.long_poll_timeout)}")
        if self.sse_reconnect_interval is not None:
            options.append(f"sse_reconnect_interval {format_duration(self.sse_reconnect_interval)}")
        if self.max_file_handles is not None:
            options.append(f"max_file_handles {self.max_file_handles}")
        block = " {\n" + "".join(f"\t\t\t{line}\n" for line in options) + "\t\t}" if options else ""
        return (
            "{\n\tadmin off\n\tauto_https off\n"
            f"\tgrace_period {format_duration(self.grace_period)}\n}}\n\n"
            f":{self.port} {{\n\tbind {self.host}\n"
            f"\troute {{\n\t\tdurable_streams{block}\n\t}}\n}}\n"
        )

    async def start(self) -> DurableStreamTestServer:
        if self._app is not None:
            raise RuntimeError("the server is already running")
        app = ServerApp(load_config(self.caddyfile(), filename="DurableStreamTestServer"))
        await app.start()  # opens (recovers) the store, then binds
        self.port = app.bound_addresses[0][1][1]
        self._app = app
        return self

    async def stop(self) -> None:
        """Stop listening, end live readers, close the store. Safe to call twice."""
        app, self._app = self._app, None
        if app is not None:
            await app.shutdown()

    async def __aenter__(self) -> DurableStreamTestServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        state = self.url if self.running else "stopped"
        return f"<{type(self).__name__} {state}>"


class BlockingDurableStreamTestServer:
    """`DurableStreamTestServer` on a background thread with its own event loop, for code
    that is not async. Same arguments; `start()`/`stop()` block until done."""

    def __init__(self, *args: Any, startup_timeout: float = 30.0, **kwargs: Any) -> None:
        self.server = DurableStreamTestServer(*args, **kwargs)
        self.startup_timeout = startup_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def origin(self) -> str:
        return self.server.origin

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def running(self) -> bool:
        return self.server.running

    def _call(self, coroutine: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(self.startup_timeout)

    def start(self) -> BlockingDurableStreamTestServer:
        if self._thread is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="durable-streams-test-server", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        try:
            self._call(self.server.start())
        except BaseException:
            self._shut_down_loop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and its thread. `start()` may be called again (same port)."""
        if self._thread is None:
            return
        try:
            self._call(self.server.stop())
            self._call(self._loop.shutdown_asyncgens())
        finally:
            self._shut_down_loop()

    def _shut_down_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.startup_timeout)
        loop.close()

    def __enter__(self) -> BlockingDurableStreamTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self.running else "stopped"
        return f"<{type(self).__name__} {state}>"
