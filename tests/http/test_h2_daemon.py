"""HTTP/2 through the daemon: a real `durable-streams-server run` process with a
`tls <cert> <key>` site, and clients over real sockets: httpx (HTTP/2), the h2-library
client of h2tools.py (windows and frames), and the official TypeScript client on undici.
Streams are created and written over h2 too."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from h2tools import GUARD, H2Client, TLSFiles, write_tls_files

SCRIPT = Path(sys.executable).parent / "durable-streams-server"
HERE = Path(__file__).resolve().parent
NODE_ROOT = HERE.parents[1] / "conformance"
TS_TAILS = HERE / "ts_h2_tails.mjs"
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Daemon:
    proc: subprocess.Popen
    port: int
    admin: int
    tls: TLSFiles

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def alpn(self, offered: list[str]) -> str | None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=GUARD) as raw:
            with self.tls.client_context(offered).wrap_socket(raw, server_hostname="localhost") as conn:
                return conn.selected_alpn_protocol()

    def accepted(self) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{self.admin}/metrics", timeout=GUARD).text
        prefix = "durable_streams_http_connections_accepted_total{protocol=\""
        return {line[len(prefix):].split('"')[0]: float(line.split()[-1])
                for line in text.splitlines() if line.startswith(prefix)}

    async def h2(self, **kwargs) -> H2Client:
        return await H2Client.connect(self.port, self.tls, authority=f"127.0.0.1:{self.port}", **kwargs)

    def client(self, **kwargs) -> httpx.AsyncClient:
        return httpx.AsyncClient(http2=True, verify=self.tls.client_context(["h2", "http/1.1"]),
                                 base_url=self.base, timeout=GUARD, **kwargs)


@contextlib.contextmanager
def daemon(directory: Path, tls: TLSFiles, *, servers: str = "") -> Iterator[Daemon]:
    port, admin = free_port(), free_port()
    config = directory / "Caddyfile"
    config.write_text(
        f"{{\n\tadmin 127.0.0.1:{admin}\n\thttp_port {free_port()}\n\tgrace_period 10s\n{servers}}}\n\n"
        f"https://127.0.0.1:{port} {{\n\ttls {tls.cert} {tls.key}\n"
        "\troute /v1/stream/* {\n\t\tdurable_streams {\n\t\t\tlong_poll_timeout 2s\n\t\t}\n\t}\n}\n")
    proc = subprocess.Popen([str(SCRIPT), "run", "--config", str(config)], cwd=directory,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while True:  # listening on both (a guard, not a timing test)
            if proc.poll() is not None:
                raise AssertionError(f"server exited early ({proc.returncode}): {proc.stderr.read()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                socket.create_connection(("127.0.0.1", admin), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("server did not start listening") from None
                time.sleep(0.05)
        yield Daemon(proc, port, admin, tls)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            stream.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> TLSFiles:
    return write_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tls) -> Iterator[Daemon]:
    with daemon(tmp_path_factory.mktemp("daemon"), tls) as running:
        yield running


def test_alpn_offers_h2_by_default_and_only_http11_with_protocols_h1(server, tmp_path, tls):
    assert server.alpn(["h2", "http/1.1"]) == "h2"
    assert server.alpn(["http/1.1"]) == "http/1.1"
    with daemon(tmp_path, tls, servers="\tservers {\n\t\tprotocols h1\n\t}\n") as h1_only:
        assert h1_only.alpn(["h2", "http/1.1"]) == "http/1.1"
        with httpx.Client(http2=True, verify=tls.client_context(["h2", "http/1.1"]), timeout=GUARD) as client:
            answer = client.put(f"{h1_only.base}/v1/stream/h1-only")
        assert answer.status_code == 201 and answer.http_version == "HTTP/1.1"


async def test_appends_and_a_catch_up_beyond_a_mebibyte(server):
    body = os.urandom(3 * MiB)
    async with server.client() as client:
        created = await client.put("/v1/stream/big", headers={"Content-Type": "application/octet-stream"})
        assert created.status_code == 201 and created.http_version == "HTTP/2"
        for start in range(0, len(body), MiB):
            appended = await client.post("/v1/stream/big", content=body[start:start + MiB],
                                         headers={"Content-Type": "application/octet-stream"})
            assert appended.status_code == 204
        read = await client.get("/v1/stream/big", params={"offset": "-1"})
    assert read.status_code == 200 and read.http_version == "HTTP/2"
    assert read.headers["content-length"] == str(len(body)) and "transfer-encoding" not in read.headers
    assert hashlib.sha256(read.content).digest() == hashlib.sha256(body).digest()


async def test_a_catch_up_waits_on_a_slow_readers_window(server):
    body = os.urandom(2 * MiB)
    async with server.client() as client:
        await client.put("/v1/stream/windowed", content=body, headers={"Content-Type": "application/octet-stream"})
    reader = await server.h2(initial_window=16384, auto_ack=False)
    try:
        sid = reader.start("GET", "/v1/stream/windowed?offset=-1")
        state = reader.streams[sid]
        await reader.until(lambda: len(state.data) == 16384)
        await asyncio.sleep(0.1)  # would the server overrun the window? h2 would raise FlowControlError
        assert len(state.data) == 16384 and not state.ended
        while not state.ended:
            reader.ack(sid)
            await reader.until(lambda: state.unacked > 0 or state.ended)
        assert state.status == 200 and hashlib.sha256(state.data).digest() == hashlib.sha256(body).digest()
    finally:
        await reader.close()


async def test_long_poll_and_sse_share_one_connection(server):
    before = server.accepted()
    async with server.client() as client:
        await client.put("/v1/stream/live", headers={"Content-Type": "application/json"})
        tail = (await client.head("/v1/stream/live")).headers["stream-next-offset"]
        long_poll = asyncio.ensure_future(client.get("/v1/stream/live", params={"offset": tail, "live": "long-poll"}))
        events: list[str] = []
        seen_data = asyncio.Event()

        async def follow() -> None:
            async with client.stream("GET", "/v1/stream/live", params={"offset": tail, "live": "sse"}) as sse:
                assert sse.http_version == "HTTP/2" and sse.headers["content-type"] == "text/event-stream"
                async for line in sse.aiter_lines():
                    events.append(line)
                    if line.startswith("data:") and "hello" in line:
                        seen_data.set()
                        return

        follower = asyncio.ensure_future(follow())
        await asyncio.sleep(0.2)  # both waiting at the tail (if not, the append still reaches them)
        assert not long_poll.done()
        appended = await client.post("/v1/stream/live", content=b'{"msg": "hello"}',
                                     headers={"Content-Type": "application/json"})
        assert appended.status_code == 204
        polled = await asyncio.wait_for(long_poll, GUARD)
        await asyncio.wait_for(seen_data.wait(), GUARD)
        await asyncio.wait_for(follower, GUARD)
    assert polled.status_code == 200 and polled.json() == [{"msg": "hello"}]
    after = server.accepted()
    assert after["h2"] - before["h2"] == 1 and after["h1"] == before["h1"]


async def test_long_polls_woken_together_over_h2_are_answered_by_their_own_streams(tmp_path, tls):
    """Long-polls parked at one tail are answered together by the live fan-out on HTTP/1.1
    (Request.answer_now); an h2 stream declines that and its handler answers: every poll
    gets the data, and the fan-out never fails over (it would log and hand them back)."""
    with daemon(tmp_path, tls) as running:
        async with running.client() as client:
            await client.put("/v1/stream/many", headers={"Content-Type": "application/json"})
            tail = (await client.head("/v1/stream/many")).headers["stream-next-offset"]
            polls = [asyncio.ensure_future(client.get("/v1/stream/many", params={"offset": tail, "live": "long-poll"}))
                     for _ in range(5)]
            await asyncio.sleep(0.3)  # parked at the tail (if not yet, the append still reaches them)
            assert (await client.post("/v1/stream/many", content=b'{"n": 1}',
                                      headers={"Content-Type": "application/json"})).status_code == 204
            answers = await asyncio.wait_for(asyncio.gather(*polls), GUARD)
        assert [(a.status_code, a.json()) for a in answers] == [(200, [{"n": 1}])] * 5
        running.proc.send_signal(signal.SIGTERM)
        running.proc.wait(timeout=30)
        log = running.proc.stderr.read()
    assert "handed its readers back" not in log and "Traceback" not in log, log


async def test_a_reset_stream_leaves_the_connection_serving(server):
    async with server.client() as client:
        await client.put("/v1/stream/reset", headers={"Content-Type": "text/plain"})
    conn = await server.h2()
    try:
        sse = conn.start("GET", "/v1/stream/reset?offset=-1&live=sse")
        await conn.until(lambda: b"upToDate" in conn.streams[sse].data)
        conn.reset(sse)
        upload = conn.start("POST", "/v1/stream/reset", [("content-type", "text/plain")], end=False)
        await conn.send_body(upload, b"half a bo", end=False)
        conn.reset(upload)  # an aborted upload: nothing of it may be appended
        answer = await conn.request("GET", "/v1/stream/reset?offset=-1")
        assert answer.status == 200 and bytes(answer.data) == b""
        answer = await conn.request("POST", "/v1/stream/reset", [("content-type", "text/plain")], body=b"whole")
        assert answer.status == 204
        answer = await conn.request("GET", "/v1/stream/reset?offset=-1")
        assert bytes(answer.data) == b"whole"
    finally:
        await conn.close()


async def test_graceful_shutdown_sends_goaway_and_finishes_the_open_stream(tmp_path, tls):
    with daemon(tmp_path, tls) as running:
        conn = await running.h2()
        try:
            created = await conn.request("PUT", "/v1/stream/bye", [("content-type", "text/plain")])
            assert created.status == 201
            poll = conn.start("GET", f"/v1/stream/bye?offset={created.headers['stream-next-offset']}&live=long-poll")
            await asyncio.sleep(0.2)  # the long-poll is waiting (if not yet, it still must finish)
            running.proc.send_signal(signal.SIGTERM)
            answer = await conn.response(poll)
            # the long-poll ends as on HTTP/1.1 (its handler is stopped first): up to date, no data
            assert answer.ended and answer.reset is None
            assert answer.status == 204 and answer.headers["stream-up-to-date"] == "true"
            await conn.until(lambda: conn.goaway is not None)
            assert conn.goaway.error_code == 0 and conn.goaway.last_stream_id >= poll
            await conn.until(lambda: conn.eof)  # then the server closes the connection
        finally:
            await conn.close()
        assert running.proc.wait(timeout=30) == 0


def _node() -> str:
    """node and the npm packages (conformance/); missing is a failure in CI, a skip elsewhere."""
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed"
    elif not (NODE_ROOT / "node_modules" / "undici").exists() or \
            not (NODE_ROOT / "node_modules" / "@durable-streams" / "client").exists():
        problem = "conformance/node_modules is missing undici or @durable-streams/client: run `npm ci` in conformance/"
    if problem is not None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(problem)
        pytest.skip(problem)
    return node


def test_ts_client_reads_and_tails_ten_streams_over_one_h2_connection(server):
    node = _node()
    before = server.accepted()
    done = subprocess.run([node, str(TS_TAILS), server.base, str(server.tls.ca), "10"], capture_output=True,
                          text=True, timeout=120, cwd=NODE_ROOT, env={**os.environ, "DS_NODE_MODULES_ROOT": str(NODE_ROOT)})
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines[-1:] == ["ok"], f"{done.stdout}\n{done.stderr}"
    # The tails' Agent: one connection, all ten requests in flight on it at once.
    assert json.loads(lines[-2]) == {"connected": 1, "running": 10}
    after = server.accepted()
    # Two h2 connections in all (the tails', and the writes' of a second Agent), none HTTP/1.1.
    assert after["h2"] - before["h2"] == 2 and after["h1"] == before["h1"]
