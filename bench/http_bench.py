"""HTTP benchmark of Durable Streams servers, reported as ratios against a peer.

Every target is measured in the same run, case by case, with the target order
alternating between rounds (A B, B A, ...), so slow drifts of a noisy machine
hit all targets alike. The figure we report is target/peer, where the peer is
normally the Node reference server (bench/node/serve.mjs).

    .venv/bin/python bench/http_bench.py                      # ours vs node
    .venv/bin/python bench/http_bench.py --quick
    .venv/bin/python bench/http_bench.py --target a=node --target b=node --peer b

Targets (--target, repeatable):
    ours | node                 built-in launchers (our CLI with a generated Caddyfile,
                                the Node reference server); "NAME=ours" renames one
    NAME=cmd:TEMPLATE           shell command; {port}, {data_dir}, {long_poll_ms} are
                                substituted ({data_dir} is "" for in-memory runs)
    NAME=url:http://HOST:PORT   a server that is already running (in-memory cases only)

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import urlencode, urlsplit

import aiohttp

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
NODE_DIR = BENCH_DIR / "node"
RESULTS_DIR = BENCH_DIR / "results"
STREAM_ROOT = "/v1/stream"
HOST = "127.0.0.1"

# Identity encoding everywhere: aiohttp would otherwise ask for gzip and the Node
# server compresses bodies >= 1 KiB, which would turn catch-up into a zlib benchmark.
CLIENT_HEADERS = {"Accept-Encoding": "identity"}
BINARY = "application/octet-stream"
TEXT = "text/plain"


# --------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Settings:
    rounds: int
    durable_rounds: int
    writer_counts: tuple[int, ...]
    durable_writer_counts: tuple[int, ...]
    append_seconds: float
    append_bytes: int
    catchup_mib: int
    catchup_chunk_kib: int
    catchup_reads: int
    live_readers: int
    live_rate: float
    live_seconds: float
    long_poll_ms: int
    file_handles: int
    client: str
    tests: frozenset[str]
    flush_delays_ms: tuple[float, ...]  # "flush" test: added latency of every flush call
    flush_writer_counts: tuple[int, ...]
    wrk_seconds: float = 5.0  # "wrk" test: -d of one wrk run
    wrk_connections: int = 32  # -c, and as many streams
    wrk_threads: int = 2  # -t
    live_modes: tuple[str, ...] = ("long-poll", "sse")
    live_client: str = "c"  # live readers: bench/live_reader.c ("c") or this process ("python")
    live_reader: str | None = None  # the compiled live_reader, set by run_all


FULL = dict(rounds=3, durable_rounds=2, append_seconds=1.5, catchup_mib=64, catchup_reads=5,
            live_seconds=3.0, writer_counts=(1, 32, 256), durable_writer_counts=(1, 32, 256),
            flush_delays_ms=(1.0, 4.0), wrk_seconds=5.0)
# The smoke run skips 256 file-backed writers: creating and fsyncing 256 streams alone
# takes several seconds per server.
QUICK = dict(rounds=1, durable_rounds=1, append_seconds=0.4, catchup_mib=8, catchup_reads=1,
             live_seconds=1.0, writer_counts=(1, 32, 256), durable_writer_counts=(1, 32),
             flush_delays_ms=(2.0,), wrk_seconds=1.0)
ALL_TESTS = ("appends", "catchup", "live", "durable", "flush", "wrk")
FLUSH_SHIM_SOURCE = BENCH_DIR / "flush_delay.c"
FLUSH_DELAY_ENV = "DS_BENCH_FLUSH_DELAY_US"
LIVE_READER_SOURCE = BENCH_DIR / "live_reader.c"
WRK_SCRIPT = BENCH_DIR / "wrk_streams.lua"
WRK_APPEND_BYTES = 22  # the body of wrk_streams.lua


# --------------------------------------------------------------------------------------
# Server processes


@dataclass(frozen=True)
class TargetSpec:
    name: str
    kind: str  # "ours" | "node" | "cmd" | "url"
    value: str = ""  # command template for cmd, base URL for url

    def supports_durable(self) -> bool:
        return self.kind != "url"


def parse_target(text: str) -> TargetSpec:
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = text, text
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise argparse.ArgumentTypeError(f"bad target name {name!r}")
    if rest in ("ours", "node"):
        return TargetSpec(name, rest)
    if rest.startswith("cmd:") and "{port}" in rest:
        return TargetSpec(name, "cmd", rest[4:])
    if rest.startswith("url:http://"):
        return TargetSpec(name, "url", rest[4:].rstrip("/"))
    raise argparse.ArgumentTypeError(
        f"bad target {text!r}: expected ours, node, NAME=ours|node, "
        "NAME=cmd:TEMPLATE-with-{port} or NAME=url:http://host:port")


def free_ports(count: int) -> list[int]:
    # Hold every socket until all ports are chosen so two targets never get the same one.
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def caddy_duration(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def ours_caddyfile(port: int, data_dir: str | None, long_poll_ms: int, file_handles: int) -> str:
    storage = (f"                data_dir {data_dir}\n"
               f"                max_file_handles {file_handles}\n") if data_dir else ""
    # http:// because a site with a host and no scheme means HTTPS (as in Caddy);
    # bind keeps the listener on loopback (the site address alone is only a matcher).
    return (
        "{\n    admin off\n    auto_https off\n}\n\n"
        f"http://{HOST}:{port} {{\n"
        f"    bind {HOST}\n"
        f"    route {STREAM_ROOT}/* {{\n"
        "        durable_streams {\n"
        f"{storage}"
        f"                long_poll_timeout {caddy_duration(long_poll_ms)}\n"
        "        }\n    }\n}\n"
    )


def _die_with_parent() -> None:
    # Runs in the child before exec: if the harness is killed outright, the kernel
    # sends SIGTERM to the server, so no benchmark server outlives its run.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _process_cpu_seconds(pid: int, stat_fields: list[str]) -> float:
    # schedstat has nanosecond resolution but is per thread: sum the threads. The
    # clock-tick figures of /proc/<pid>/stat (10 ms steps) are the fallback.
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        if total:
            return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    return sum(int(x) for x in stat_fields[11:13]) / os.sysconf("SC_CLK_TCK")  # utime stime


def proc_tree_cpu_seconds(root_pid: int) -> float | None:
    """CPU time used so far by a process and its live descendants, from /proc."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesised command name; the name itself may hold spaces.
        fields = stat[stat.rfind(")") + 2:].split()
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    if root_pid not in stats:
        return None
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        total += _process_cpu_seconds(pid, stats[pid])
        todo.extend(children.get(pid, ()))
    return total


class ServerProcess:
    """One running target: launched, probed until it answers, torn down by process group."""

    def __init__(self, spec: TargetSpec, work_dir: Path, durable: bool, settings: Settings,
                 env: dict[str, str] | None = None, tag: str = ""):
        self.spec = spec
        self.work_dir = work_dir
        self.durable = durable
        self.env = env  # added to the inherited environment (the flush-delay shim)
        self.long_poll_ms = settings.long_poll_ms
        self.file_handles = settings.file_handles
        self.proc: subprocess.Popen | None = None
        self.base_url = spec.value if spec.kind == "url" else ""
        self.command: list[str] = []
        phase = "durable" if durable else "memory"
        if env and env.get(FLUSH_DELAY_ENV):
            phase += f"-flush{env[FLUSH_DELAY_ENV]}us"
        if tag:
            phase += f"-{tag}"
        self.log_path = work_dir / f"{spec.name}-{phase}.log"
        self.data_dir: str | None = None

    def _command(self, port: int) -> list[str]:
        if self.durable:
            self.data_dir = tempfile.mkdtemp(prefix=f"{self.spec.name}-data-", dir=self.work_dir)
        if self.spec.kind == "ours":
            cfg = self.work_dir / f"{self.spec.name}-{port}.Caddyfile"
            cfg.write_text(ours_caddyfile(port, self.data_dir, self.long_poll_ms,
                                          self.file_handles))
            exe = Path(sys.executable).parent / "durable-streams-server"
            exe_name = str(exe) if exe.exists() else "durable-streams-server"
            return [exe_name, "run", "--config", str(cfg)]
        if self.spec.kind == "node":
            cmd = ["node", str(NODE_DIR / "serve.mjs"), "--host", HOST, "--port", str(port),
                   "--long-poll-timeout-ms", str(self.long_poll_ms), "--watch-stdin"]
            if self.data_dir:
                cmd += ["--data-dir", self.data_dir, "--max-file-handles", str(self.file_handles)]
            return cmd
        # Plain replacement, not str.format: shell text may hold braces of its own.
        text = self.spec.value
        for name, value in (("port", port), ("data_dir", shlex.quote(self.data_dir or "")),
                            ("long_poll_ms", self.long_poll_ms)):
            text = text.replace("{" + name + "}", str(value))
        return ["/bin/sh", "-c", "exec " + text]

    async def start(self, port: int, timeout: float = 30.0) -> None:
        if self.spec.kind == "url":
            await self._wait_ready(timeout)
            return
        self.command = self._command(port)
        self.base_url = f"http://{HOST}:{port}"
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                self.command, cwd=REPO_DIR, stdin=subprocess.PIPE, stdout=log, stderr=log,
                env={**os.environ, **self.env} if self.env else None,
                start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()
        LIVE_SERVERS.append(self)
        await self._wait_ready(timeout)

    async def _wait_ready(self, timeout: float) -> None:
        # Ready = answers HTTP at all (a 404 for an unknown stream is an answer).
        deadline = time.monotonic() + timeout
        probe = f"{self.base_url}{STREAM_ROOT}/__bench_ready_probe__"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.spec.name} exited with {self.proc.returncode} "
                                       f"before answering:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    async with session.head(probe) as resp:
                        await resp.read()
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.spec.name} did not answer on {self.base_url} within "
                           f"{timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def cpu_seconds(self) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        return proc_tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is not None:
            print(f"WARNING: {self.spec.name} had exited with {proc.returncode} before the end "
                  f"of its phase; figures after that failed. Log tail:\n{self.log_tail()}",
                  file=sys.stderr, flush=True)
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
            # The group may hold children that outlived the leader (e.g. sh -c without exec).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


LIVE_SERVERS: list[ServerProcess] = []


def stop_all_servers() -> None:
    for server in list(LIVE_SERVERS):
        server.stop()


def finish(work_dir, keep_logs: bool) -> None:
    """A benchmark's end, however it ends: servers stopped, their work dir kept or removed."""
    stop_all_servers()
    if keep_logs:
        print(f"server logs and configs kept in {work_dir}")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Measurement helpers


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class CpuWindow:
    """Server and client CPU spent over one timed window."""

    def __init__(self, server: ServerProcess):
        self.server = server

    def __enter__(self) -> "CpuWindow":
        self.t0 = time.perf_counter()
        self.server0 = self.server.cpu_seconds()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.client0 = usage.ru_utime + usage.ru_stime
        return self

    def __exit__(self, *exc) -> None:
        self.elapsed = time.perf_counter() - self.t0
        server1 = self.server.cpu_seconds()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.client_cpu = usage.ru_utime + usage.ru_stime - self.client0
        self.server_cpu = (server1 - self.server0
                           if server1 is not None and self.server0 is not None else None)

    def figures(self, ops: int) -> dict:
        return {
            "server_cpu_s": self.server_cpu,
            "server_cpu_us_per_op": (self.server_cpu / ops * 1e6
                                     if self.server_cpu is not None and ops else None),
            "client_cpu_util": self.client_cpu / self.elapsed if self.elapsed else None,
        }


def new_session(connections: int, read_timeout: float | None = 30.0,
                read_bufsize: int = 1 << 16) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections,
                                       force_close=False),
        timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=read_timeout),
        headers=CLIENT_HEADERS, auto_decompress=False, read_bufsize=read_bufsize)


async def create_streams(session: aiohttp.ClientSession, urls: list[str],
                         content_type: str) -> None:
    limit = asyncio.Semaphore(32)

    async def create(url: str) -> None:
        async with limit, session.put(url, headers={"Content-Type": content_type}) as resp:
            await resp.read()
            if resp.status not in (200, 201):
                raise RuntimeError(f"PUT {url} -> {resp.status}: {(await resp.text())[:200]}")

    await asyncio.gather(*(create(u) for u in urls))


async def delete_streams(session: aiohttp.ClientSession, urls: list[str]) -> None:
    limit = asyncio.Semaphore(32)

    async def delete(url: str) -> None:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with limit, session.delete(url) as resp:
                await resp.read()

    await asyncio.gather(*(delete(u) for u in set(urls)))


# --------------------------------------------------------------------------------------
# Lean HTTP/1.1 client for the hot loops (appends, long-poll readers)
#
# aiohttp's client costs about 260 us of client CPU per request on these machines, so one
# Python process tops out near 4k requests/s, below what the servers take, and the append
# and long-poll figures would measure the client. This keep-alive client sends a prebuilt
# request and parses just enough of the response (status, headers, Content-Length or
# chunked body, Connection: close): about 70 us per request.
# --client aiohttp switches the hot loops back to aiohttp for comparison.


class HttpProtocolError(Exception):
    pass


@dataclass(frozen=True)
class LeanResponse:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers keep the last value
    body: bytes
    keep_alive: bool


class LeanConnection(asyncio.Protocol):
    """One keep-alive connection, one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(HttpProtocolError("connection closed by server"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            response = self._parse()
        except (HttpProtocolError, ValueError) as exc:
            self.waiter.set_exception(HttpProtocolError(f"bad response: {exc}"))
            return
        if response is not None:
            self.waiter.set_result(response)

    def _parse(self) -> LeanResponse | None:
        """The response once it is wholly buffered, else None."""
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        lines = bytes(self.buffer[:head_end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = head_end + 4
        if status in (204, 304) or status < 200:
            body, end = b"", start
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            dechunked = self._dechunk(start)
            if dechunked is None:
                return None
            body, end = dechunked
        elif "content-length" in headers:
            end = start + int(headers["content-length"])
            if len(self.buffer) < end:
                return None
            body = bytes(self.buffer[start:end])
        else:
            raise HttpProtocolError("response without a length")
        del self.buffer[:end]
        keep_alive = "close" not in headers.get("connection", "").lower()
        return LeanResponse(status, headers, body, keep_alive)

    def _dechunk(self, pos: int) -> tuple[bytes, int] | None:
        parts = []
        while True:
            line_end = self.buffer.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(self.buffer[pos:line_end]).split(b";")[0], 16)
            pos = line_end + 2
            if size == 0:  # no trailers expected: the terminating CRLF follows
                return (b"".join(parts), pos + 2) if len(self.buffer) >= pos + 2 else None
            if len(self.buffer) < pos + size + 2:
                return None
            parts.append(bytes(self.buffer[pos:pos + size]))
            pos += size + 2

    async def send(self, raw: bytes) -> LeanResponse:
        if self.closed:
            raise HttpProtocolError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class LeanClient:
    """Requests to one stream URL over a private keep-alive connection (reopened as needed)."""

    def __init__(self, url: str, timeout: float = 30.0):
        parsed = urlsplit(url)
        self.host, self.port, self.path = parsed.hostname, parsed.port, parsed.path
        self.timeout = timeout
        self.conn: LeanConnection | None = None

    def _head(self, method: str, target: str) -> str:
        return (f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Accept-Encoding: identity\r\n")

    def post_request(self, content_type: str, body: bytes) -> bytes:
        return (self._head("POST", self.path) + f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def get_request(self, params: dict[str, str]) -> bytes:
        return (self._head("GET", f"{self.path}?{urlencode(params)}") + "\r\n").encode()

    async def send(self, raw: bytes) -> LeanResponse:
        if self.conn is None or self.conn.closed:
            _, self.conn = await asyncio.get_running_loop().create_connection(
                LeanConnection, self.host, self.port)
        try:
            response = await asyncio.wait_for(self.conn.send(raw), self.timeout)
        except BaseException:
            self.close()  # a half-read response would poison the next request
            raise
        if not response.keep_alive:
            self.close()
        return response

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class LeanAppender:
    def __init__(self, url: str, content_type: str, body: bytes):
        self.client = LeanClient(url)
        self.raw = self.client.post_request(content_type, body)

    async def __call__(self) -> int:
        return (await self.client.send(self.raw)).status

    def close(self) -> None:
        self.client.close()


class AiohttpAppender:
    """Same interface as LeanAppender, through aiohttp."""

    def __init__(self, session: aiohttp.ClientSession, url: str, content_type: str, body: bytes):
        self.session, self.url, self.body = session, url, body
        self.headers = {"Content-Type": content_type}

    async def __call__(self) -> int:
        async with self.session.post(self.url, data=self.body, headers=self.headers) as resp:
            await resp.read()
            return resp.status

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------
# Test: small appends


async def measure_appends(server: ServerProcess, prefix: str, writers: int, shared: bool,
                          settings: Settings) -> dict:
    body = b"x" * settings.append_bytes
    base = f"{server.base_url}{STREAM_ROOT}/{prefix}"
    urls = [f"{base}/shared"] * writers if shared else [f"{base}/w{i}" for i in range(writers)]
    latencies: list[float] = []
    errors: list[str] = []
    count = 0
    async with new_session(writers + 4) as session:
        await create_streams(session, sorted(set(urls)), BINARY)
        appenders = [LeanAppender(u, BINARY, body) if settings.client == "lean"
                     else AiohttpAppender(session, u, BINARY, body) for u in urls]

        async def append(appender) -> float:
            t0 = time.perf_counter()
            status = await appender()
            if status not in (200, 204):
                raise RuntimeError(f"POST -> {status}")
            return time.perf_counter() - t0

        async def writer(appender, deadline: float) -> float:
            nonlocal count
            last = time.perf_counter()
            while last < deadline:
                try:
                    latencies.append(await append(appender))
                    count += 1
                except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError, OSError,
                        HttpProtocolError) as exc:
                    errors.append(str(exc) or type(exc).__name__)
                    if len(errors) > 1000:  # a broken server must not spin us forever
                        break
                last = time.perf_counter()
            return last

        try:
            # Warm-up: open every connection and touch every stream before the clock starts.
            await asyncio.gather(*(append(a) for a in appenders))
            with CpuWindow(server) as cpu:
                start = time.perf_counter()
                ends = await asyncio.gather(*(writer(a, start + settings.append_seconds)
                                              for a in appenders))
                elapsed = max(ends) - start
        finally:
            for appender in appenders:
                appender.close()
        await delete_streams(session, urls)
    return {
        "appends": count, "errors": len(errors), "first_error": errors[0] if errors else None,
        "elapsed_s": elapsed, "appends_per_s": count / elapsed if elapsed > 0 else None,
        "p50_ms": _ms(percentile(latencies, 50)), "p99_ms": _ms(percentile(latencies, 99)),
        **cpu.figures(count),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


# --------------------------------------------------------------------------------------
# Test: catch-up read


async def fill_stream(server: ServerProcess, path: str, settings: Settings) -> dict:
    url = f"{server.base_url}{path}"
    chunk = bytes(range(256)) * (settings.catchup_chunk_kib * 4)
    chunks = settings.catchup_mib * 1024 // settings.catchup_chunk_kib
    async with new_session(8) as session:
        await create_streams(session, [url], BINARY)
        todo = iter(range(chunks))
        start = time.perf_counter()

        async def appender() -> None:
            for _ in todo:
                async with session.post(url, data=chunk, headers={"Content-Type": BINARY}) as resp:
                    await resp.read()
                    if resp.status not in (200, 204):
                        raise RuntimeError(f"filling {url}: POST -> {resp.status}")

        await asyncio.gather(*(appender() for _ in range(4)))
        elapsed = time.perf_counter() - start
    return {"bytes": chunks * len(chunk), "fill_s": elapsed,
            "fill_mib_per_s": chunks * len(chunk) / elapsed / (1 << 20)}


async def measure_catchup(server: ServerProcess, path: str, expected: int) -> dict:
    url = f"{server.base_url}{path}"
    total, pages, offset, up_to_date = 0, 0, "-1", False
    max_pages = expected // 1024 + 100  # pages of >= 1 KiB, or something is wrong
    # A large read buffer: with the default 64 KiB, aiohttp pauses and resumes the socket
    # every few chunks, and the read measures that churn.
    async with new_session(1, read_timeout=60, read_bufsize=4 << 20) as session:
        with CpuWindow(server) as cpu:
            while not up_to_date and pages < max_pages:
                async with session.get(url, params={"offset": offset}) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"GET {url}?offset={offset} -> {resp.status}")
                    async for data in resp.content.iter_chunked(1 << 20):
                        total += len(data)
                    next_offset = resp.headers.get("Stream-Next-Offset")
                    up_to_date = resp.headers.get("Stream-Up-To-Date") == "true"
                pages += 1
                if not next_offset or (next_offset == offset and not up_to_date):
                    raise RuntimeError(f"catch-up made no progress at offset {offset}")
                offset = next_offset
    if total != expected or not up_to_date:
        raise RuntimeError(f"catch-up read {total} bytes in {pages} pages, expected {expected}"
                           f"{'' if up_to_date else ' (never up to date)'}")
    return {"bytes": total, "pages": pages, "elapsed_s": cpu.elapsed,
            "mib_per_s": total / cpu.elapsed / (1 << 20),
            **cpu.figures(max(1, total >> 20))}  # server CPU per MiB


# --------------------------------------------------------------------------------------
# Test: live delivery latency

# Each message carries its sequence number and the writer's CLOCK_MONOTONIC time
# (perf_counter_ns) taken just before the POST; readers subtract it on arrival.
MESSAGE_RE = re.compile(rb"<(\d{8}):(\d+)>|<END>")
MESSAGE_BYTES = 64


def live_message(seq: int | None) -> bytes:
    tag = b"<END>" if seq is None else b"<%08d:%d>" % (seq, time.perf_counter_ns())
    return tag.ljust(MESSAGE_BYTES, b".")


class LiveReader:
    """One tailing reader; records each message's append->delivery latency (first arrival)."""

    def __init__(self, url: str, offset: str):
        self.url = url
        self.offset = offset
        self.cursor: str | None = None
        self.received: dict[int, float] = {}  # seq -> latency in seconds
        self.done = False
        self.errors = 0
        self.armed = asyncio.Event()

    def consume(self, payload: bytes) -> None:
        now = time.perf_counter_ns()
        for match in MESSAGE_RE.finditer(payload):
            if match.group(1) is None:
                self.done = True
            else:
                self.received.setdefault(int(match.group(1)), (now - int(match.group(2))) / 1e9)

    def _params(self, live: str) -> dict:
        params = {"offset": self.offset, "live": live}
        if self.cursor:
            params["cursor"] = self.cursor
        return params

    async def _retry_pause(self) -> None:
        self.errors += 1
        await asyncio.sleep(0.05)

    async def long_poll(self, session: aiohttp.ClientSession, deadline: float) -> None:
        while not self.done and time.perf_counter() < deadline:
            self.armed.set()
            try:
                async with session.get(self.url, params=self._params("long-poll")) as resp:
                    if not self._long_poll_answer(resp.status, resp.headers, await resp.read()):
                        await self._retry_pause()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await self._retry_pause()

    async def lean_long_poll(self, client: "LeanClient", deadline: float) -> None:
        try:
            while not self.done and time.perf_counter() < deadline:
                self.armed.set()
                try:
                    resp = await client.send(client.get_request(self._params("long-poll")))
                    if not self._long_poll_answer(resp.status, resp.headers, resp.body):
                        await self._retry_pause()
                except (HttpProtocolError, OSError, asyncio.TimeoutError):
                    await self._retry_pause()
        finally:
            client.close()

    def _long_poll_answer(self, status: int, headers, body: bytes) -> bool:
        if status not in (200, 204):
            return False
        self.consume(body)
        # aiohttp's header lookups ignore case; the lean client's names are lower-case.
        self.offset = headers.get("stream-next-offset", self.offset)
        self.cursor = headers.get("stream-cursor", self.cursor)
        return True

    async def sse(self, session: aiohttp.ClientSession, deadline: float) -> None:
        while not self.done and time.perf_counter() < deadline:
            try:
                async with session.get(self.url, params=self._params("sse")) as resp:
                    if resp.status != 200:
                        await resp.read()
                        await self._retry_pause()
                        continue
                    b64 = resp.headers.get("Stream-SSE-Data-Encoding", "").lower() == "base64"
                    await self._read_events(resp, b64, deadline)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                await self._retry_pause()
        self.armed.set()

    async def _read_events(self, resp: aiohttp.ClientResponse, b64: bool, deadline: float) -> None:
        event, data = b"message", []
        while not self.done and time.perf_counter() < deadline:
            line = await resp.content.readline()
            if not line:
                return  # server ended the connection; reconnect from the last offset
            line = line.rstrip(b"\r\n")
            if line:
                name, _, value = line.partition(b":")
                if name == b"event":
                    event = value.strip()
                elif name == b"data":
                    data.append(value[1:] if value.startswith(b" ") else value)
                continue
            payload = b"\n".join(data)
            if event == b"data":
                self.consume(base64.b64decode(payload) if b64 else payload)
            elif event == b"control":
                control = json.loads(payload)
                self.offset = control.get("streamNextOffset", self.offset)
                self.cursor = control.get("streamCursor", self.cursor)
                self.armed.set()
                if control.get("streamClosed"):
                    self.done = True
            event, data = b"message", []


async def _post_messages(session: aiohttp.ClientSession, url: str, count: int, rate: float) -> int:
    """Append `count` tagged messages at `rate` per second, then <END>; returns errors."""
    errors = 0

    async def append(payload: bytes) -> None:
        nonlocal errors
        try:
            async with session.post(url, data=payload, headers={"Content-Type": TEXT}) as resp:
                await resp.read()
                errors += resp.status not in (200, 204)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            errors += 1

    start = time.perf_counter()
    for seq in range(count):
        due = start + seq / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await append(live_message(seq))
    await append(live_message(None))
    return errors


async def measure_live_c(server: ServerProcess, prefix: str, mode: str, settings: Settings) -> dict:
    """The live test with bench/live_reader.c as the readers (see its header comment):
    the readers' cost stays far below the server's, so the latencies are the server's."""
    path = f"{STREAM_ROOT}/{prefix}/live"
    url = f"{server.base_url}{path}"
    count = max(1, round(settings.live_rate * settings.live_seconds))
    grace = settings.long_poll_ms / 1000 + 5
    async with new_session(8) as writer_session:
        await create_streams(writer_session, [url], TEXT)
        async with writer_session.head(url) as resp:
            tail = resp.headers.get("Stream-Next-Offset")
        if not tail:
            raise RuntimeError(f"HEAD {url} gave no Stream-Next-Offset")
        port = urlsplit(server.base_url).port
        readers = await asyncio.create_subprocess_exec(
            settings.live_reader, mode, str(port), path, tail, str(settings.live_readers),
            str(count), str(settings.live_seconds + grace + 10),
            stdout=asyncio.subprocess.PIPE, preexec_fn=_die_with_parent)
        try:
            ready = await asyncio.wait_for(readers.stdout.readline(), 30)
            if ready.strip() != b"READY":
                raise RuntimeError(f"live_reader did not start: {ready!r}")
            if mode == "long-poll":
                await asyncio.sleep(0.3)  # let the last long-polls reach the server and park
            with CpuWindow(server) as cpu:
                write_errors = await _post_messages(writer_session, url, count, settings.live_rate)
                line = await asyncio.wait_for(readers.stdout.readline(), settings.live_seconds + grace + 30)
        finally:
            if readers.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    readers.kill()
            await readers.wait()
        await delete_streams(writer_session, [url])
    result = json.loads(line)
    return {
        "mode": mode, "readers": settings.live_readers, "messages": count,
        "deliveries": result["deliveries"], "missing": result["missing"],
        "errors": write_errors + result["errors"], "reconnects": result["reconnects"],
        "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"], "max_ms": result["max_ms"],
        **cpu.figures(result["deliveries"]),
        "reader_cpu_util": result["cpu_s"] / cpu.elapsed if cpu.elapsed else None,
    }


def build_live_reader(work_dir: Path) -> str | None:
    """Compile bench/live_reader.c; None, with a warning, where that is not possible."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    binary = work_dir / "live_reader"
    if compiler and sys.platform.startswith("linux"):
        done = subprocess.run([compiler, "-O2", "-o", str(binary), str(LIVE_READER_SOURCE)],
                              capture_output=True, text=True)
        if done.returncode == 0:
            return str(binary)
        progress(f"live readers fall back to Python: {compiler} could not build live_reader.c:\n{done.stderr}")
    else:
        progress("live readers fall back to Python: no C compiler (cc) or not Linux")
    return None


async def measure_live(server: ServerProcess, prefix: str, mode: str, settings: Settings) -> dict:
    if settings.live_reader:
        return await measure_live_c(server, prefix, mode, settings)
    url = f"{server.base_url}{STREAM_ROOT}/{prefix}/live"
    count = max(1, round(settings.live_rate * settings.live_seconds))
    grace = settings.long_poll_ms / 1000 + 5
    async with new_session(8) as writer_session, \
            new_session(settings.live_readers + 4, read_timeout=grace) as reader_session:
        await create_streams(writer_session, [url], TEXT)
        async with writer_session.head(url) as resp:
            tail = resp.headers.get("Stream-Next-Offset")
        if not tail:
            raise RuntimeError(f"HEAD {url} gave no Stream-Next-Offset")
        readers = [LiveReader(url, tail) for _ in range(settings.live_readers)]
        deadline = time.perf_counter() + settings.live_seconds + grace + 10
        if mode == "sse":
            loops = [r.sse(reader_session, deadline) for r in readers]
        elif settings.client == "lean":
            loops = [r.lean_long_poll(LeanClient(url, timeout=grace), deadline) for r in readers]
        else:
            loops = [r.long_poll(reader_session, deadline) for r in readers]
        tasks = [asyncio.create_task(loop) for loop in loops]
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(r.armed.wait() for r in readers)), 5)
            await asyncio.sleep(0.3)  # let the last long-polls reach the server and park

            with CpuWindow(server) as cpu:
                write_errors = await _post_messages(writer_session, url, count, settings.live_rate)
                await asyncio.wait(tasks, timeout=grace)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await delete_streams(writer_session, [url])
    latencies = [lat for r in readers for seq, lat in r.received.items() if seq < count]
    return {
        "mode": mode, "readers": len(readers), "messages": count,
        "deliveries": len(latencies), "missing": len(readers) * count - len(latencies),
        "errors": write_errors + sum(r.errors for r in readers),
        "p50_ms": _ms(percentile(latencies, 50)), "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(max(latencies) if latencies else None),
        **cpu.figures(len(latencies)),
    }


# --------------------------------------------------------------------------------------
# Test: wrk (C load generator) appends, server CPU per request
#
# The Python client costs about 70 us of CPU per request on the same 2 cores as the
# server; wrk costs a few. So this test puts the most load on the server per core left to
# it, and its "srv CPU us/req" is the closest to the server's own cost per request.

WRK_MODES = {"append": "POST 22 B", "now": "GET offset=now"}


def wrk_missing_message() -> str:
    return ("wrk test skipped: wrk (the C HTTP load generator) is not installed. Get it with "
            "`apt-get install wrk` (bench/run_all.sh does that itself when run as root where "
            "apt-get exists), or build it from https://github.com/wg/wrk")


def wrk_command(url: str, mode: str, prefix: str, settings: Settings,
                seconds: float | None = None) -> list[str]:
    """wrk against base URL `url`, over streams {prefix}/s0 .. s{connections-1}."""
    duration = seconds if seconds is not None else settings.wrk_seconds
    return ["wrk", f"-t{settings.wrk_threads}", f"-c{settings.wrk_connections}",
            f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s", str(WRK_SCRIPT), url,
            "--", mode, prefix, str(settings.wrk_connections), str(settings.wrk_threads)]


def parse_wrk_output(stdout: str) -> dict:
    for line in stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            return json.loads(line[len("WRK_RESULT "):])
    raise RuntimeError(f"wrk printed no WRK_RESULT line:\n{stdout[-500:]}")


def run_wrk(cmd: list[str], seconds: float) -> tuple[dict, float]:
    """Runs wrk to completion (blocking: nothing else runs meanwhile); its totals and the
    CPU seconds wrk itself used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {(done.stderr or done.stdout)[-500:]}")
    wrk_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return parse_wrk_output(done.stdout), wrk_cpu


async def measure_wrk(server: ServerProcess, prefix: str, mode: str, settings: Settings,
                      seconds: float | None = None) -> dict:
    path = f"{STREAM_ROOT}/{prefix}"
    urls = [f"{server.base_url}{path}/s{i}" for i in range(settings.wrk_connections)]
    seconds = settings.wrk_seconds if seconds is None else seconds
    cmd = wrk_command(server.base_url, mode, path, settings, seconds)
    async with new_session(8) as session:
        await create_streams(session, urls, BINARY)
        try:
            with CpuWindow(server) as cpu:
                result, wrk_cpu = run_wrk(cmd, seconds)
        finally:
            await delete_streams(session, urls)
    requests = result["requests"]
    socket_errors = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors",
                                            "timeouts"))
    errors = result["non2xx"] + socket_errors
    first_error = None
    if result["non2xx"]:
        first_error = f"{result['non2xx']} non-2xx answers, first {result['first_bad_status']}"
    elif socket_errors:
        first_error = f"{socket_errors} socket errors/timeouts"
    if not requests:
        raise RuntimeError(f"wrk completed no request ({first_error or 'no error reported'})")
    duration = result["duration_us"] / 1e6
    figures = cpu.figures(requests)
    # wrk's own CPU in cores (it runs 2 threads): the client share of the machine.
    figures["client_cpu_util"] = wrk_cpu / cpu.elapsed if cpu.elapsed else None
    return {
        "mode": mode, "connections": settings.wrk_connections, "threads": settings.wrk_threads,
        "requests": requests, "errors": errors, "first_error": first_error,
        "elapsed_s": duration, "requests_per_s": requests / duration if duration else None,
        "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
        "wrk": result, "wrk_cpu_s": wrk_cpu, **figures,
    }


# --------------------------------------------------------------------------------------
# Orchestration


@dataclass
class Case:
    """One figure family (e.g. "appends, 32 writers, shared stream, file-backed")."""
    key: str
    label: str
    metrics: tuple[tuple[str, str, str], ...]  # (result field, unit label, "higher"/"lower")
    samples: dict[str, list[dict]] = field(default_factory=dict)


Measure = Callable[[ServerProcess, str], Awaitable[dict]]

APPEND_METRICS = (("appends_per_s", "appends/s", "higher"), ("p50_ms", "p50 ms", "lower"),
                  ("p99_ms", "p99 ms", "lower"),
                  ("server_cpu_us_per_op", "srv CPU us/append", "lower"))
CATCHUP_METRICS = (("mib_per_s", "MiB/s", "higher"),
                   ("server_cpu_us_per_op", "srv CPU us/MiB", "lower"),
                   ("pages", "pages", "lower"))  # GETs to reach up-to-date (1: one response)
WRK_METRICS = (("requests_per_s", "req/s", "higher"), ("p50_ms", "p50 ms", "lower"),
               ("server_cpu_us_per_op", "srv CPU us/req", "lower"))
WRK_CROSS_METRICS = (("server_cpu_us_per_op", "srv CPU us/req", "lower"),)
LIVE_METRICS = (("p50_ms", "p50 ms", "lower"), ("p99_ms", "p99 ms", "lower"),
                ("server_cpu_us_per_op", "srv CPU us/delivery", "lower"))


RUN_STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - RUN_STARTED:5.0f}s] {message}", flush=True)


def round_orders(servers: list[ServerProcess], rounds: int):
    for r in range(rounds):
        yield r, (servers if r % 2 == 0 else servers[::-1])


async def run_interleaved(case: Case, servers: list[ServerProcess], rounds: int,
                          measure: Measure, run_id: str) -> None:
    for r, order in round_orders(servers, rounds):
        for server in order:
            prefix = f"bench-{run_id}/{case.key}/{server.spec.name}/r{r}"
            try:
                result = await measure(server, prefix)
            except Exception as exc:  # one failing figure must not lose the rest of the run
                result = {"failed": f"{type(exc).__name__}: {exc}"}
            result["round"] = r
            case.samples.setdefault(server.spec.name, []).append(result)
            progress(f"{case.label:<40} {server.spec.name:<8} r{r}  {brief(case, result)}")


def brief(case: Case, result: dict) -> str:
    if "failed" in result:
        return f"FAILED {result['failed'][:200]}"
    parts = [f"{unit}={fmt(result.get(key))}" for key, unit, _ in case.metrics]
    flags = [f"errors={result['errors']}"] if result.get("errors") else []
    if result.get("missing"):
        flags.append(f"missing={result['missing']}")
    return "  ".join(parts + flags)


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def append_cases(settings: Settings, durable: bool,
                 flush_delay_ms: float = 0.0) -> list[tuple[Case, Measure]]:
    storage = "file" if durable else "mem"
    counts = settings.durable_writer_counts if durable else settings.writer_counts
    key_suffix = label_suffix = ""
    if flush_delay_ms:
        counts = settings.flush_writer_counts
        key_suffix, label_suffix = f"-flush{flush_delay_ms:g}ms", f" +{flush_delay_ms:g}ms flush"
    cases = []
    for writers in counts:
        for shared in (False, True):
            where = "shared stream" if shared else "own streams"
            if flush_delay_ms:  # labels fit 40 columns
                where = "shared" if shared else "own"
            case = Case(f"append-{storage}-w{writers}-{'shared' if shared else 'own'}{key_suffix}",
                        f"append {storage} {writers:>3}w {where}{label_suffix}", APPEND_METRICS)
            cases.append((case, lambda server, prefix, writers=writers, shared=shared:
                          measure_appends(server, prefix, writers, shared, settings)))
    return cases


async def start_servers(specs: list[TargetSpec], work_dir: Path, durable: bool,
                        settings: Settings, env: dict[str, str] | None = None,
                        tag: str = "") -> list[ServerProcess]:
    servers = [ServerProcess(s, work_dir, durable, settings, env, tag) for s in specs]
    kind = "file-backed" if durable else "in-memory"
    if env and env.get(FLUSH_DELAY_ENV):
        kind += f", every flush +{int(env[FLUSH_DELAY_ENV]) / 1000:g} ms"
    for server, port in zip(servers, free_ports(len(servers))):
        progress(f"starting {server.spec.name} ({kind})")
        await server.start(port)
        progress(f"{server.spec.name} ready at {server.base_url}: "
                 f"{shlex.join(server.command) or '(external)'}")
    # Unrecorded warm-up (JIT, lazy imports, first file and metadata writes), so the first
    # figure of a fresh server is not penalised.
    warm_up = replace(settings, append_seconds=min(1.0, settings.append_seconds))
    for server in servers:
        with contextlib.suppress(Exception):
            await measure_appends(server, f"bench-warmup-{os.getpid()}/{server.spec.name}", 32,
                                  False, warm_up)
    return servers


def stop_servers(servers: list[ServerProcess]) -> None:
    for server in servers:
        server.stop()


async def run_all(specs: list[TargetSpec], settings: Settings, work_dir: Path,
                  run_id: str, peer: str) -> list[Case]:
    cases: list[Case] = []
    memory_tests = settings.tests & {"appends", "catchup", "live"}
    if memory_tests:
        servers = await start_servers(specs, work_dir, False, settings)
        try:
            if "appends" in settings.tests:
                for case, measure in append_cases(settings, durable=False):
                    cases.append(case)
                    await run_interleaved(case, servers, settings.rounds, measure, run_id)
            if "catchup" in settings.tests:
                cases.append(await run_catchup(servers, settings, run_id))
            if "live" in settings.tests:
                if settings.live_client == "c":
                    settings = replace(settings, live_reader=build_live_reader(work_dir))
                for mode in settings.live_modes:
                    case = Case(f"live-{mode}", f"live {mode} {settings.live_readers} readers",
                                LIVE_METRICS)
                    cases.append(case)
                    await run_interleaved(
                        case, servers, settings.rounds,
                        lambda server, prefix, mode=mode: measure_live(server, prefix, mode,
                                                                       settings),
                        run_id)
        finally:
            stop_servers(servers)
    durable_specs = [s for s in specs if s.supports_durable()]
    if "durable" in settings.tests and durable_specs:
        servers = await start_servers(durable_specs, work_dir, True, settings)
        try:
            for case, measure in append_cases(settings, durable=True):
                cases.append(case)
                await run_interleaved(case, servers, settings.durable_rounds, measure, run_id)
            if "catchup" in settings.tests:
                # Reads served by the file stores (through the page cache, as in production).
                cases.append(await run_catchup(servers, settings, run_id, storage="file"))
        finally:
            stop_servers(servers)
    if "wrk" in settings.tests:
        cases += await run_wrk_test(specs, settings, work_dir, run_id, peer)
    if "flush" in settings.tests and durable_specs and settings.flush_delays_ms:
        shim = build_flush_shim(work_dir)
        for delay_ms in settings.flush_delays_ms if shim else ():
            env = {"LD_PRELOAD": str(shim), FLUSH_DELAY_ENV: str(round(delay_ms * 1000))}
            servers = await start_servers(durable_specs, work_dir, True, settings, env)
            try:
                for case, measure in append_cases(settings, durable=True, flush_delay_ms=delay_ms):
                    cases.append(case)
                    await run_interleaved(case, servers, settings.durable_rounds, measure, run_id)
            finally:
                stop_servers(servers)
    return cases


def build_flush_shim(work_dir: Path) -> Path | None:
    """Compile bench/flush_delay.c (a slower disk for the "flush" test); None, with a
    warning, where there is no C compiler: the other figures do not need it."""
    if not sys.platform.startswith("linux"):
        progress("flush test skipped: the flush-delay shim needs Linux (LD_PRELOAD)")
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    shim = work_dir / "flush_delay.so"
    if compiler:
        done = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(shim),
                               str(FLUSH_SHIM_SOURCE), "-ldl"], capture_output=True, text=True)
        if done.returncode == 0:
            return shim
        progress(f"flush test skipped: {compiler} could not build the shim:\n{done.stderr}")
    else:
        progress("flush test skipped: no C compiler (cc) to build bench/flush_delay.c")
    return None


async def run_wrk_test(specs: list[TargetSpec], settings: Settings, work_dir: Path,
                       run_id: str, peer: str) -> list[Case]:
    """The "wrk" test: in-memory and file-backed servers of every target are up at the same
    time, so each round runs every (storage, target) pair back to back, the order reversed
    on odd rounds, and the durable append can be divided by the peer's in-memory one."""
    if shutil.which("wrk") is None:
        progress(wrk_missing_message())
        return []
    if settings.wrk_connections < settings.wrk_threads:
        progress("wrk test skipped: --wrk-connections is below the 2 wrk threads")
        return []
    conns = settings.wrk_connections
    append_mem = Case("wrk-append-mem", f"wrk append mem {conns}c own streams", WRK_METRICS)
    append_file = Case("wrk-append-file", f"wrk append file {conns}c own streams", WRK_METRICS)
    get_now = Case("wrk-get-now-mem", f"wrk GET offset=now mem {conns}c", WRK_METRICS)
    durable_specs = [s for s in specs if s.supports_durable()]
    servers: list[ServerProcess] = []
    try:
        mem = await start_servers(specs, work_dir, False, settings, tag="wrk")
        servers += mem
        files = await start_servers(durable_specs, work_dir, True, settings, tag="wrk")
        servers += files
        jobs = ([(append_mem, s, "append") for s in mem] + [(append_file, s, "append") for s in files]
                + [(get_now, s, "now") for s in mem])
        # Unrecorded warm-up under wrk itself (its connection pattern, Node's JIT).
        for case, server, mode in jobs:
            if mode == "append":
                with contextlib.suppress(Exception):
                    await measure_wrk(server, f"bench-warmup-{os.getpid()}/wrk/{server.spec.name}"
                                      f"-{case.key}", mode, settings, seconds=1)
        for r in range(settings.rounds):
            for case, server, mode in (jobs if r % 2 == 0 else jobs[::-1]):
                prefix = f"bench-{run_id}/{case.key}/{server.spec.name}/r{r}"
                try:
                    result = await measure_wrk(server, prefix, mode, settings)
                except Exception as exc:  # one failing figure must not lose the rest
                    result = {"failed": f"{type(exc).__name__}: {exc}"}
                result["round"] = r
                case.samples.setdefault(server.spec.name, []).append(result)
                progress(f"{case.label:<40} {server.spec.name:<8} r{r}  {brief(case, result)}")
    finally:
        stop_servers(servers)
    # The issue's second goal: a durable append against the peer's in-memory append.
    cross = Case("wrk-append-file-vs-peer-mem", f"wrk append file / {peer} mem {conns}c",
                 WRK_CROSS_METRICS)
    for name, samples in append_file.samples.items():
        if name != peer:
            cross.samples[name] = samples
    if peer in append_mem.samples:
        cross.samples[peer] = append_mem.samples[peer]
    cases = [append_mem, append_file]
    if len(cross.samples) > 1:
        cases.append(cross)
    return cases + [get_now]


async def run_catchup(servers: list[ServerProcess], settings: Settings, run_id: str,
                      storage: str = "mem") -> Case:
    case = Case(f"catchup-{storage}", f"catch-up {storage:<4} {settings.catchup_mib} MiB from -1",
                CATCHUP_METRICS)
    path = f"{STREAM_ROOT}/bench-{run_id}/catchup-{storage}"
    fills: dict[str, dict] = {}
    for server in servers:
        try:
            fills[server.spec.name] = await fill_stream(server, path, settings)
            progress(f"filled {settings.catchup_mib} MiB on {server.spec.name} in "
                     f"{fills[server.spec.name]['fill_s']:.2f}s")
        except Exception as exc:
            fills[server.spec.name] = {"failed": f"{type(exc).__name__}: {exc}"}
            progress(f"fill FAILED on {server.spec.name}: {exc}")

    async def measure(server: ServerProcess, prefix: str) -> dict:
        fill = fills[server.spec.name]
        if "failed" in fill:
            raise RuntimeError("stream could not be filled")
        return {**await measure_catchup(server, path, fill["bytes"]),
                "fill_mib_per_s": fill["fill_mib_per_s"]}

    await run_interleaved(case, servers, settings.catchup_reads, measure, run_id)
    async with new_session(2) as session:
        await delete_streams(session, [f"{s.base_url}{path}" for s in servers])
    return case


# --------------------------------------------------------------------------------------
# Summary, table, JSON


def median_of(samples: list[dict], key: str) -> float | None:
    values = [s[key] for s in samples if "failed" not in s and s.get(key) is not None]
    return statistics.median(values) if values else None


def clean(samples: list[dict]) -> bool:
    """A figure is only compared when every sample ran without errors or losses."""
    return bool(samples) and all("failed" not in s and not s.get("errors") and not s.get("missing")
                                 for s in samples)


def summarize(cases: list[Case], names: list[str], peer: str) -> list[dict]:
    rows = []
    for case in cases:
        for key, unit, better in case.metrics:
            row = {"case": case.key, "label": case.label, "metric": key, "unit": unit,
                   "better": better, "values": {}, "ratios": {}, "clean": {},
                   "client_bound": {}}
            for name in names:
                samples = case.samples.get(name, [])
                row["values"][name] = median_of(samples, key)
                row["clean"][name] = clean(samples)
                util = median_of(samples, "client_cpu_util")
                row["client_bound"][name] = util is not None and util > 0.9
            for name in names:
                if name == peer:
                    continue
                mine, theirs = row["values"][name], row["values"].get(peer)
                ok = row["clean"][name] and row["clean"].get(peer)
                row["ratios"][name] = mine / theirs if ok and mine is not None and theirs else None
            rows.append(row)
    return rows


def print_table(rows: list[dict], names: list[str], peer: str) -> None:
    others = [n for n in names if n != peer]
    head = (f"{'test':<40} {'metric':<20}" + "".join(f"{n:>12}" for n in names)
            + "".join(f"{n + '/' + peer:>14}" for n in others) + "  better")
    print("\n" + head + "\n" + "-" * len(head))
    last_label = None
    for row in rows:
        label = row["label"] if row["label"] != last_label else ""
        last_label = row["label"]
        cells = ""
        for n in names:
            mark = "!" if not row["clean"][n] else ("*" if row["client_bound"][n] else "")
            cells += f"{fmt(row['values'][n]) + mark:>12}"
        ratios = "".join(f"{fmt(row['ratios'][n]) if row['ratios'][n] is not None else 'n/a':>14}"
                         for n in others)
        print(f"{label:<40} {row['unit']:<20}{cells}{ratios}  {row['better']}")
    print("\n! = errors, lost messages or failure in some sample (no ratio);  "
          "* = client process CPU > 90% (the client may be the limit)")


WRK_GOALS = (("wrk-append-mem", "in-memory append"),
             ("wrk-append-file", "durable append (file store vs file store)"),
             ("wrk-append-file-vs-peer-mem", "durable append vs the peer's in-memory append"))
WRK_GOAL = 0.8  # issue 12: at most 0.8x the peer's server CPU per append


def print_wrk_goals(rows: list[dict], names: list[str], peer: str) -> None:
    """The wrk test's CPU-per-request ratios against issue 12's goal, one line each."""
    found = {row["case"]: row for row in rows if row["metric"] == "server_cpu_us_per_op"}
    lines = []
    for key, what in WRK_GOALS:
        row = found.get(key)
        for name in (n for n in names if n != peer and row):
            ratio = row["ratios"].get(name)
            verdict = ("n/a (errors or missing CPU figures)" if ratio is None
                       else f"{ratio:.2f}  {'met' if ratio <= WRK_GOAL else 'NOT met'}")
            lines.append(f"  {name}/{peer} srv CPU per request, {what}: {verdict}")
    if lines:
        print(f"\nwrk test, goal <= {WRK_GOAL}x {peer}'s server CPU per append:")
        print("\n".join(lines))


def environment(specs: list[TargetSpec]) -> dict:
    def out(cmd: list[str]) -> str | None:
        with contextlib.suppress(Exception):
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10,
                                  cwd=REPO_DIR).stdout.strip() or None
        return None

    def peer_version() -> str | None:
        package = NODE_DIR / "node_modules" / "@durable-streams" / "server" / "package.json"
        with contextlib.suppress(OSError, ValueError):
            return json.loads(package.read_text())["version"]
        return None

    return {
        "python": sys.version.split()[0], "aiohttp": aiohttp.__version__,
        "node": out(["node", "--version"]), "node_peer_version": peer_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(), "git_commit": out(["git", "rev-parse", "HEAD"]),
        "git_dirty": bool(out(["git", "status", "--porcelain"])),
        "targets": [{"name": s.name, "kind": s.kind, "value": s.value} for s in specs],
    }


def write_results(path: Path, settings: Settings, specs: list[TargetSpec], peer: str,
                  cases: list[Case], rows: list[dict], started: float) -> None:
    doc = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": time.time() - started, "peer": peer,
        "settings": {k: (sorted(v) if isinstance(v, frozenset) else v)
                     for k, v in settings.__dict__.items()},
        "environment": environment(specs),
        "summary": rows,
        "samples": {c.key: c.samples for c in cases},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


# --------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Settings]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", type=parse_target, metavar="SPEC",
                   help="target to measure (repeatable); default: ours and node")
    p.add_argument("--peer", help="target the others are divided by "
                                  "(default: 'node' if present, else the last)")
    p.add_argument("--quick", action="store_true", help="smoke run (< 1 minute)")
    p.add_argument("--tests", default=",".join(ALL_TESTS),
                   help=f"comma-separated subset of {','.join(ALL_TESTS)}")
    p.add_argument("--rounds", type=int, help="interleaved rounds per in-memory figure")
    p.add_argument("--durable-rounds", type=int, help="interleaved rounds per file-backed figure")
    p.add_argument("--writers", help="writer counts of all append tests, e.g. 1,32,256")
    p.add_argument("--append-seconds", type=float, help="timed window per append figure")
    p.add_argument("--append-bytes", type=int, default=100)
    p.add_argument("--client", choices=("lean", "aiohttp"), default="lean",
                   help="HTTP client of the append and long-poll loops (lean: minimal "
                        "keep-alive client, about 3.5x cheaper per request than aiohttp)")
    p.add_argument("--catchup-mib", type=int, help="size of the catch-up stream")
    p.add_argument("--catchup-chunk-kib", type=int, default=64, help="append size used to fill it")
    p.add_argument("--catchup-reads", type=int, help="interleaved full reads per target")
    p.add_argument("--live-readers", type=int, default=100)
    p.add_argument("--live-rate", type=float, default=10.0, help="messages/s written in live tests")
    p.add_argument("--live-seconds", type=float, help="writing window of a live figure")
    p.add_argument("--live-modes", default="long-poll,sse", help="live tests to run: long-poll,sse")
    p.add_argument("--live-client", choices=("c", "python"), default="c",
                   help="live readers: bench/live_reader.c (default) or this Python process")
    p.add_argument("--long-poll-ms", type=int, default=2000, help="server long-poll timeout")
    p.add_argument("--file-handles", type=int, default=512,
                   help="write-handle pool of file-backed servers (both built-ins get the same)")
    p.add_argument("--flush-delay-ms",
                   help="flush test: comma-separated latencies added to every fsync/fdatasync "
                        "of the file-backed servers (full run: 1,4; quick: 2; 0: no flush test)")
    p.add_argument("--flush-writers",
                   help="writer counts of the flush test (default 32, or --writers)")
    p.add_argument("--wrk-seconds", type=float,
                   help="wrk test: duration of one wrk run (full 5, quick 1; whole seconds)")
    p.add_argument("--wrk-connections", type=int, default=32,
                   help="wrk test: connections, and as many streams (-c; wrk runs 2 threads)")
    p.add_argument("--output", type=Path, help="JSON path (default bench/results/http-<utc>.json)")
    p.add_argument("--keep-logs", action="store_true", help="keep server logs and configs")
    args = p.parse_args(argv)

    base = QUICK if args.quick else FULL
    tests = frozenset(t.strip() for t in args.tests.split(",") if t.strip())
    if not tests or tests - set(ALL_TESTS):
        p.error(f"--tests must be a subset of {','.join(ALL_TESTS)}")
    try:
        writers = (tuple(int(w) for w in args.writers.split(",")) if args.writers
                   else base["writer_counts"])
    except ValueError:
        p.error(f"--writers wants comma-separated counts, got {args.writers!r}")
    try:
        delays = (tuple(float(d) for d in args.flush_delay_ms.split(",")) if args.flush_delay_ms
                  else base["flush_delays_ms"])
        flush_writers = (tuple(int(w) for w in args.flush_writers.split(",")) if args.flush_writers
                         else writers if args.writers else (32,))
    except ValueError:
        p.error("--flush-delay-ms and --flush-writers want comma-separated numbers")
    delays = tuple(d for d in delays if d > 0)
    if any(d > 1000 for d in delays) or min(flush_writers) < 1:
        p.error("--flush-delay-ms must be at most 1000 and --flush-writers positive")
    settings = Settings(
        rounds=args.rounds or base["rounds"],
        durable_rounds=args.durable_rounds or args.rounds or base["durable_rounds"],
        writer_counts=writers,
        durable_writer_counts=writers if args.writers else base["durable_writer_counts"],
        append_seconds=args.append_seconds or base["append_seconds"],
        append_bytes=args.append_bytes, catchup_mib=args.catchup_mib or base["catchup_mib"],
        catchup_chunk_kib=args.catchup_chunk_kib,
        catchup_reads=args.catchup_reads or base["catchup_reads"],
        live_readers=args.live_readers, live_rate=args.live_rate,
        live_seconds=args.live_seconds or base["live_seconds"], long_poll_ms=args.long_poll_ms,
        file_handles=args.file_handles, client=args.client, tests=tests,
        flush_delays_ms=delays, flush_writer_counts=flush_writers,
        wrk_seconds=args.wrk_seconds or base["wrk_seconds"],
        wrk_connections=args.wrk_connections, live_client=args.live_client,
        live_modes=tuple(m for m in args.live_modes.split(",") if m))
    if not settings.live_modes or set(settings.live_modes) - {"long-poll", "sse"}:
        p.error("--live-modes takes long-poll and/or sse")
    if (min(writers) < 1 or min(settings.rounds, settings.durable_rounds) < 1
            or settings.live_readers < 1 or settings.live_rate <= 0
            or settings.wrk_connections < 1 or settings.wrk_seconds <= 0):
        p.error("counts, rounds and rates must be positive")
    if (settings.catchup_mib * 1024) % settings.catchup_chunk_kib:
        p.error("--catchup-mib must be a whole number of --catchup-chunk-kib chunks")

    args.target = args.target or [TargetSpec("ours", "ours"), TargetSpec("node", "node")]
    names = [t.name for t in args.target]
    if len(set(names)) != len(names):
        p.error("target names must be unique (use NAME=kind)")
    if args.peer is None:
        args.peer = "node" if "node" in names else names[-1]
    if args.peer not in names:
        p.error(f"--peer {args.peer} is not a target")
    return args, settings


WORK_DIR_PREFIX = "ds-http-bench-"


def remove_stale_work_dirs() -> None:
    """Data dirs of earlier runs that were killed outright (their pid is in the name)."""
    for path in Path(tempfile.gettempdir()).glob(f"{WORK_DIR_PREFIX}*-*"):
        pid = path.name[len(WORK_DIR_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def prepare_process() -> None:
    """What every benchmark's main does first (bench/postgres_bench.py, retention_bench.py too)."""
    # SIGTERM/SIGHUP unwind like Ctrl-C so every server is torn down by the caller's finally.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    with contextlib.suppress(ImportError):
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # One client connection per writer/reader: make sure the fd limit allows it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_args(sys.argv[1:] if argv is None else argv)
    prepare_process()

    started = time.time()
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    output = args.output or RESULTS_DIR / f"http-{run_id}{'-quick' if args.quick else ''}.json"
    remove_stale_work_dirs()
    work_dir = Path(tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}-"))
    names = [t.name for t in args.target]
    print(f"targets: {', '.join(names)}; peer: {args.peer}; settings: "
          f"{ {k: v for k, v in settings.__dict__.items() if k != 'tests'} }; "
          f"tests: {','.join(sorted(settings.tests))}", flush=True)
    if "wrk" in settings.tests and shutil.which("wrk") is None:
        print(wrk_missing_message(), file=sys.stderr, flush=True)
    try:
        cases = asyncio.run(run_all(args.target, settings, work_dir, run_id, args.peer))
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
        return 1
    finally:
        finish(work_dir, args.keep_logs)
    rows = summarize(cases, names, args.peer)
    print_table(rows, names, args.peer)
    print_wrk_goals(rows, names, args.peer)
    write_results(output, settings, args.target, args.peer, cases, rows, started)
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
