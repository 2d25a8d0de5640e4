"""Server nodes over one database, as operators run them: `durable-streams-server run`
processes with a Caddyfile whose `durable_streams` block says `postgres <dsn>`; and a
small HTTP proxy that sends each request to the next node in turn, so a client's
consecutive requests cross nodes."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

COMMAND = [sys.executable, "-m", "durable_streams.server.cli.main"]
START_GUARD = 30.0

CADDYFILE = """\
{{
	{admin}
	auto_https off
	grace_period 2s
	log {{
		output stderr
		level WARN
	}}
}}

http://127.0.0.1:{port} {{
	route /v1/stream/* {{
		request_body {{
			max_size 64MiB
		}}
		durable_streams {{
			postgres "{dsn}"
			long_poll_timeout {long_poll}
			sse_reconnect_interval 60s{retention}
		}}
	}}
	respond /readyz 200
	respond "not found" 404
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Node:
    """One server process; restartable on the same port."""

    def __init__(self, dsn: str, workdir: Path, name: str, long_poll: str = "1s", admin: bool = False,
                 retention: dict[str, str] | None = None, options: tuple[str, ...] = ()) -> None:
        """`retention`: the limits of one `retention` block for every stream (max_age,
        max_size: Caddyfile values), or none. `options`: more durable_streams lines."""
        self.dsn = dsn
        self.name = name
        self.port = free_port()
        # the admin address serves the real /readyz (and /metrics); the site's is static
        self.admin_port = free_port() if admin else None
        self.config = workdir / f"{name}.Caddyfile"
        block = "" if not retention else "\n\t\t\tretention {\n" + "".join(
            f"\t\t\t\t{name} {value}\n" for name, value in retention.items()) + "\t\t\t}"
        block += "".join(f"\n\t\t\t{option}" for option in options)
        self.config.write_text(CADDYFILE.format(
            port=self.port, dsn=dsn, long_poll=long_poll, retention=block,
            admin=f"admin 127.0.0.1:{self.admin_port}" if admin else "admin off"))
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        assert self.admin_port is not None, "Node(admin=True) serves the admin endpoints"
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> "Node":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*COMMAND, "run", "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=log, env=os.environ.copy())
        log.close()
        deadline = time.monotonic() + START_GUARD
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"node {self.name} exited: {self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"node {self.name} did not start listening")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=START_GUARD)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def errors(self) -> str:
        """What the node logged that a test should never see."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(line for line in text.splitlines() if "Traceback" in line or '"error"' in line)


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host", "content-length"}


class AlternatingProxy:
    """Forwards request 1 to node A, request 2 to node B, and so on; responses are
    streamed back as they arrive (long-poll and SSE included)."""

    def __init__(self, upstreams: list[str]) -> None:
        self.port = free_port()  # known before the nodes start: they may need to name it
        self.route_to(upstreams)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def route_to(self, upstreams: list[str]) -> None:
        self.upstreams = upstreams
        self._turn = itertools.cycle(range(len(upstreams)))
        self.forwarded = [0] * len(upstreams)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "AlternatingProxy":
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None),
            connector=aiohttp.TCPConnector(limit=0))
        app = web.Application(client_max_size=128 << 20)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        index = next(self._turn)
        self.forwarded[index] += 1
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        body = await request.read()
        async with self._session.request(request.method, self.upstreams[index] + request.raw_path,
                                         headers=headers, data=body if body else None,
                                         # never a header the client did not send
                                         skip_auto_headers=("Content-Type", "User-Agent", "Accept",
                                                            "Accept-Encoding"),
                                         allow_redirects=False) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    response.headers.add(k, v)
            if upstream.headers.get("Content-Length") is not None and request.method != "HEAD":
                response.content_length = int(upstream.headers["Content-Length"])
            try:
                await response.prepare(request)
                async for piece in upstream.content.iter_any():
                    await response.write(piece)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientError):
                pass  # the client left (SSE readers do), or the node cut the response
            return response


async def wait_ready(url: str, timeout: float = 20.0) -> None:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + timeout
        while True:
            try:
                async with http.get(url + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not ready")
            await asyncio.sleep(0.05)
