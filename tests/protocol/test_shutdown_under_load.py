"""SIGTERM while the daemon is busy: 200 SSE readers and concurrent appenders. The
process must exit 0 within its grace period, every SSE connection must end cleanly,
every append acknowledged before the shutdown must be there after a restart on the
same data_dir (exactly, in order), and nothing may be acknowledged and then lost."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

GRACE = 5  # the daemon's grace_period, seconds
# Guards against hangs, not performance expectations.
EXIT_SLACK = 10.0
START_GUARD = 30.0
STREAMS = 8  # one sequential appender each: 8 concurrent appenders
SSE_READERS = 200
LOAD_SECONDS = 1.5  # appends and SSE traffic before SIGTERM
TEXT = {"Content-Type": "text/plain"}
DAEMON = Path(sys.executable).parent / "durable-streams-server"
_EVENT = re.compile(r"event: (\w+)\n((?:data:[^\n]*\n)+)\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_caddyfile(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "Caddyfile"
    path.write_text(
        "{\n\tadmin off\n\tgrace_period %ds\n}\n"
        ":%d {\n\tbind 127.0.0.1\n\troute /v1/stream/* {\n"
        "\t\tdurable_streams {\n\t\t\tdata_dir %s\n\t\t}\n\t}\n}\n" % (GRACE, port, tmp_path / "data")
    )
    return path


@contextlib.contextmanager
def daemon(config: Path, port: int):
    """The real daemon as a subprocess, ready once its port accepts connections; killed
    if a test leaves it running. Output goes to a file (a full pipe would block it)."""
    log = open(config.parent / f"daemon-{time.monotonic_ns()}.log", "wb")
    proc = subprocess.Popen([str(DAEMON), "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_GUARD
        while True:
            assert proc.poll() is None, f"daemon exited early: {Path(log.name).read_text()}"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "daemon did not start listening"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def payload(stream: int, seq: int) -> bytes:
    return f"<{stream}:{seq}>".encode()


class Appender:
    """Appends numbered payloads to one stream, one at a time, until the first failure.
    Records each acknowledged payload with the tail the server reported for it."""

    def __init__(self, index: int, url: str) -> None:
        self.index, self.url = index, url
        self.acked: list[tuple[bytes, int]] = []
        self.unanswered: bytes | None = None  # the one attempt that failed
        self.refusal = ""  # how it failed: an HTTP status, or "refused" (connection error)

    async def run(self, http: aiohttp.ClientSession) -> None:
        seq = 0
        while True:
            body = payload(self.index, seq)
            try:
                async with http.post(self.url, data=body, headers=TEXT) as r:
                    await r.read()
                    if r.status != 204:
                        self.unanswered, self.refusal = body, str(r.status)
                        return
                    self.acked.append((body, int(r.headers["Stream-Next-Offset"].split("_")[1])))
            except (aiohttp.ClientError, OSError):
                self.unanswered, self.refusal = body, "refused"
                return
            seq += 1


class SseReader:
    """Reads one SSE connection to its end; records how it ended."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.text = b""
        self.ended: str | None = None

    async def run(self, http: aiohttp.ClientSession, connected: list[int]) -> None:
        try:
            async with http.get(self.url, params={"offset": "-1", "live": "sse"}) as r:
                assert r.status == 200, r.status
                connected[0] += 1
                sse = bytearray()
                async for piece in r.content.iter_any():
                    sse += piece
                self.text = _data_text(bytes(sse))
                self.ended = "eof"
        except (aiohttp.ClientError, OSError) as exc:
            self.ended = f"error: {exc!r}"


def _data_text(sse: bytes) -> bytes:
    """The stream text carried by data events (payloads here have no line breaks)."""
    out = []
    for kind, lines in _EVENT.findall(sse.decode()):
        if kind == "data":
            out.extend(line[len("data:"):] for line in lines.splitlines())
    return "".join(out).encode()


async def read_all(http: aiohttp.ClientSession, url: str) -> bytes:
    data, offset = b"", "-1"
    while True:
        async with http.get(url, params={"offset": offset}) as r:
            assert r.status == 200
            data += await r.read()
            offset = r.headers["Stream-Next-Offset"]
            if r.headers.get("Stream-Up-To-Date") == "true":
                return data


async def probe_until_exit(http: aiohttp.ClientSession, url: str, proc: subprocess.Popen) -> list[tuple[bytes, str]]:
    """Keep trying appends on fresh connections from SIGTERM until the process is gone:
    (payload, "204" | "503" | "refused") for each. Some land before the listener closes."""
    outcomes = []
    seq = 0
    while proc.poll() is None:
        body = f"<late:{seq}>".encode()
        try:
            async with http.post(url, data=body, headers={**TEXT, "Connection": "close"}) as r:
                outcomes.append((body, str(r.status)))
        except (aiohttp.ClientError, OSError):
            outcomes.append((body, "refused"))
        seq += 1
        await asyncio.sleep(0.01)
    return outcomes


async def test_sigterm_under_load_loses_no_acknowledged_append(tmp_path: Path):
    port = free_port()
    config = write_caddyfile(tmp_path, port)
    base = f"http://127.0.0.1:{port}/v1/stream/load"
    urls = [f"{base}-{i}" for i in range(STREAMS)]
    connector = aiohttp.TCPConnector(limit=0)  # 200 SSE connections plus the appenders
    timeout = aiohttp.ClientTimeout(total=GRACE + EXIT_SLACK + START_GUARD)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        with daemon(config, port) as proc:
            for url in [*urls, f"{base}-late"]:
                async with http.put(url, headers=TEXT) as r:
                    assert r.status == 201
            readers = [SseReader(urls[i % STREAMS]) for i in range(SSE_READERS)]
            connected = [0]
            reading = [asyncio.ensure_future(r.run(http, connected)) for r in readers]
            while connected[0] < SSE_READERS:
                assert not any(t.done() for t in reading), [r.ended for r in readers if r.ended]
                await asyncio.sleep(0.02)
            appenders = [Appender(i, url) for i, url in enumerate(urls)]
            appending = [asyncio.ensure_future(a.run(http)) for a in appenders]
            await asyncio.sleep(LOAD_SECONDS)
            assert all(a.acked for a in appenders)  # the load really ran
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            probing = asyncio.ensure_future(probe_until_exit(http, f"{base}-late", proc))
            while proc.poll() is None and time.monotonic() - signalled < GRACE + EXIT_SLACK:
                await asyncio.sleep(0.05)
            assert proc.poll() == 0, "daemon did not exit cleanly within its grace period"
            await asyncio.wait_for(asyncio.gather(*reading, *appending), EXIT_SLACK)
            late = await probing

        assert all(r.ended == "eof" for r in readers), {r.ended for r in readers}
        assert {outcome for _, outcome in late} <= {"204", "503", "refused"}, late
        # Appenders stop at their first failure: every one was turned away by the shutdown.
        assert {a.refusal for a in appenders} <= {"503", "refused"}, {a.refusal for a in appenders}

        with daemon(config, port) as proc:
            stored = [await read_all(http, url) for url in urls]
            stored_late = await read_all(http, f"{base}-late")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, GRACE + EXIT_SLACK) == 0

    for appender, data in zip(appenders, stored):
        acked = b"".join(body for body, _ in appender.acked)
        # Exactly the acknowledged appends, in order, plus at most the one whose answer
        # never came (it may have been committed as the connection went away); a 503
        # was not written.
        allowed = {acked} if appender.refusal == "503" else {acked, acked + appender.unanswered}
        assert data in allowed, (appender.index, appender.refusal, len(acked), len(data))
        position = 0
        for body, tail in appender.acked:  # each at the offset its acknowledgement gave
            position += len(body)
            assert tail == position
    # Late appends: acknowledged ones kept, refused (503) ones never written.
    for body, outcome in late:
        assert (body in stored_late) == (outcome == "204") or outcome == "refused", (body, outcome)
    for reader in readers:
        # Readers only ever saw committed data: a prefix of what survived.
        assert stored[urls.index(reader.url)].startswith(reader.text)
