"""Benchmark of the PostgreSQL store (many server nodes over one database), durable.

A throwaway PostgreSQL cluster (tests/postgres/pg_cluster.py) runs with fsync=on and
synchronous_commit=on, so every acknowledged append is on disk, as with the file stores
it is compared with. Every compared target runs in the same run, the order alternating
between rounds (A B C, C B A, ...); the figures are medians over rounds, and the
comparisons are ratios, because the 2 cores of these machines are shared.

    .venv/bin/python bench/postgres_bench.py            # full run, about 2.5 minutes
    .venv/bin/python bench/postgres_bench.py --quick    # smoke run, under a minute

Scenarios (see bench/README.md, "PostgreSQL benchmark"):
    wrk      appends/s and CPU per append under wrk: pg1 (1 node on PostgreSQL), pg2 (2
             nodes on one database, one wrk each, run concurrently), file (our file
             store), node (the Node reference server, file-backed); PostgreSQL's own CPU
             per append; conflicts scraped from each node's /metrics
    live     cross-node live delivery: appends on node A, SSE / long-poll readers on node B
    catchup  one non-live GET of a stream read back from PostgreSQL vs our file store
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import aiohttp

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent / "tests" / "postgres"))

import http_bench as hb  # noqa: E402  (the HTTP benchmark's processes, clients, helpers)
from pg_cluster import PgCluster, PostgresUnavailable  # noqa: E402

STREAM_ROOT = hb.STREAM_ROOT
HOST = hb.HOST
ALL_TESTS = ("wrk", "live", "catchup")
WORK_DIR_PREFIX = "ds-pg-bench-"


@dataclass(frozen=True)
class Settings:
    tests: frozenset[str]
    rounds: int  # wrk and live rounds (order alternates)
    wrk_seconds: float
    wrk_connections: int  # per node, and as many streams per node
    live_seconds: float
    live_rate: float  # appends/s on node A, all streams together
    live_streams: int
    live_readers: int  # readers per stream
    catchup_mib: int
    catchup_chunk_kib: int
    catchup_small_kib: int  # the small-append stream (0: skipped)
    catchup_small_bytes: int
    catchup_reads: int
    long_poll_ms: int = 2000
    file_handles: int = 512
    wrk_threads: int = 2


FULL = dict(rounds=2, wrk_seconds=5.0, live_seconds=4.0, catchup_mib=64, catchup_small_kib=256,
            catchup_reads=3)
QUICK = dict(rounds=1, wrk_seconds=1.0, live_seconds=1.0, catchup_mib=8, catchup_small_kib=128,
             catchup_reads=1)


# --------------------------------------------------------------------------------------
# Processes: our server (PostgreSQL or file store), the Node reference server, PostgreSQL


def ours_caddyfile(port: int, admin_port: int, storage: str, long_poll_ms: int) -> str:
    # The admin address serves /metrics (the stores' counters: conflicts, flushes, batch
    # sizes, notify lag) without the per-request series of the global `metrics` option,
    # so the figures measure the same request path as http_bench.py's.
    return (
        "{\n"
        f"\tadmin {HOST}:{admin_port}\n"
        "\tauto_https off\n"
        "}\n\n"
        f"http://{HOST}:{port} {{\n"
        f"\tbind {HOST}\n"
        f"\troute {STREAM_ROOT}/* {{\n"
        "\t\tdurable_streams {\n"
        f"{storage}"
        f"\t\t\tlong_poll_timeout {hb.caddy_duration(long_poll_ms)}\n"
        "\t\t}\n\t}\n}\n"
    )


class BenchServer(hb.ServerProcess):
    """A server process of http_bench.py; ours gets an admin address (for /metrics) and
    either `postgres <dsn>` or a data directory."""

    def __init__(self, name: str, kind: str, work_dir: Path, settings: Settings,
                 dsn: str | None = None):
        super().__init__(hb.TargetSpec(name, kind), work_dir, durable=(dsn is None),
                         settings=settings)
        self.log_path = work_dir / f"{name}.log"  # not "-memory": PostgreSQL is durable
        self.dsn = dsn
        self.admin_port: int | None = None

    def _command(self, port: int) -> list[str]:
        if self.spec.kind != "ours":
            return super()._command(port)
        if self.dsn:
            storage = f'\t\t\tpostgres "{self.dsn}"\n'
        else:
            self.data_dir = tempfile.mkdtemp(prefix=f"{self.spec.name}-data-", dir=self.work_dir)
            storage = (f"\t\t\tdata_dir {self.data_dir}\n"
                       f"\t\t\tmax_file_handles {self.file_handles}\n")
        self.admin_port = next(p for p in hb.free_ports(2) if p != port)
        cfg = self.work_dir / f"{self.spec.name}.Caddyfile"
        cfg.write_text(ours_caddyfile(port, self.admin_port, storage, self.long_poll_ms))
        exe = Path(sys.executable).parent / "durable-streams-server"
        return [str(exe) if exe.exists() else "durable-streams-server", "run", "--config", str(cfg)]

    async def scrape(self) -> dict[str, float]:
        """The /metrics exposition of the admin address, summed by series name."""
        if self.admin_port is None:
            return {}
        url = f"http://{HOST}:{self.admin_port}/metrics"
        values: dict[str, float] = {}
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
                async with s.get(url) as resp:
                    text = await resp.text()
            for line in text.splitlines():
                match = re.match(r"([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
                if match and not line.startswith("#"):
                    with contextlib.suppress(ValueError):
                        values[match[1]] = values.get(match[1], 0.0) + float(match[3])
        return values


class Postgres:
    """The throwaway cluster, and the CPU of all its processes (the postmaster's tree)."""

    def __init__(self, work_dir: Path):
        self.cluster = PgCluster(root=str(work_dir / "pg"), fsync=True, max_connections=200)
        self.postmaster: int | None = None

    def start(self, databases: list[str]) -> None:
        self.cluster.init().start()
        self.postmaster = int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        for db in databases:
            self.cluster.psql(f"CREATE DATABASE {db}")

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.cluster.socket_dir}"

    def settings(self) -> dict[str, str]:
        names = ("server_version", "fsync", "synchronous_commit", "wal_sync_method",
                 "full_page_writes", "shared_buffers", "max_connections")
        rows = self.cluster.psql("SELECT name, setting FROM pg_settings WHERE name IN ("
                                 + ",".join(f"'{n}'" for n in names) + ") ORDER BY name")
        return dict(line.split("|", 1) for line in rows.splitlines() if "|" in line)

    def cpu_seconds(self) -> float | None:
        return hb.proc_tree_cpu_seconds(self.postmaster) if self.postmaster else None

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.cluster.stop()
        self.cluster.remove()


@dataclass
class Target:
    name: str
    servers: list[BenchServer]  # pg2: [node A, node B]
    on_postgres: bool


class CpuMeter:
    """CPU of a target's server processes and of PostgreSQL over one window."""

    def __init__(self, servers: list[BenchServer], pg: Postgres | None):
        self.servers, self.pg = servers, pg

    def _read(self) -> tuple[float | None, float | None]:
        node = [s.cpu_seconds() for s in self.servers]
        return (None if None in node else sum(node)), (self.pg.cpu_seconds() if self.pg else None)

    def __enter__(self) -> "CpuMeter":
        self.t0 = time.perf_counter()
        self.node0, self.pg0 = self._read()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.client0 = usage.ru_utime + usage.ru_stime
        return self

    def __exit__(self, *exc) -> None:
        self.elapsed = time.perf_counter() - self.t0
        node1, pg1 = self._read()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.client_cpu = usage.ru_utime + usage.ru_stime - self.client0
        self.node = node1 - self.node0 if node1 is not None and self.node0 is not None else None
        self.pgcpu = pg1 - self.pg0 if pg1 is not None and self.pg0 is not None else None

    def figures(self, ops: int, unit: str = "op") -> dict:
        def per(value):
            return value / ops * 1e6 if value is not None and ops else None
        return {"node_cpu_s": self.node, f"node_cpu_us_per_{unit}": per(self.node),
                "pg_cpu_s": self.pgcpu, f"pg_cpu_us_per_{unit}": per(self.pgcpu),
                "client_cpu_util": self.client_cpu / self.elapsed if self.elapsed else None}


METRIC_NAMES = {
    "conflicts": "durable_streams_postgres_conflicts_total",
    "flushes": "durable_streams_store_flush_batch_size_count",
    "flushed_appends": "durable_streams_store_flush_batch_size_sum",
    "flush_seconds": "durable_streams_store_flush_duration_seconds_sum",
    "notify_count": "durable_streams_postgres_notify_lag_seconds_count",
    "notify_seconds": "durable_streams_postgres_notify_lag_seconds_sum",
    "memory_reads": "durable_streams_postgres_reads_from_memory_total",
}


async def scrape_all(servers: list[BenchServer]) -> dict[str, float] | None:
    if not any(s.admin_port for s in servers):
        return None
    totals = {k: 0.0 for k in METRIC_NAMES}
    for server in servers:
        values = await server.scrape()
        for key, name in METRIC_NAMES.items():
            totals[key] += values.get(name, 0.0)
    return totals


def metric_figures(before: dict | None, after: dict | None) -> dict:
    if before is None or after is None:
        return {}
    d = {k: after[k] - before[k] for k in METRIC_NAMES}
    return {
        "conflicts": round(d["conflicts"]), "flushes": round(d["flushes"]),
        "appends_per_flush": d["flushed_appends"] / d["flushes"] if d["flushes"] else None,
        "flush_ms": d["flush_seconds"] / d["flushes"] * 1e3 if d["flushes"] else None,
        "notify_lag_ms": d["notify_seconds"] / d["notify_count"] * 1e3 if d["notify_count"] else None,
        "memory_reads": round(d["memory_reads"]),
    }


# --------------------------------------------------------------------------------------
# 1-3. Appends under wrk


async def run_wrk(server: BenchServer, path: str, settings: Settings, seconds: float) -> dict:
    cmd = hb.wrk_command(server.base_url, "append", path, settings, seconds)
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {(err or out).decode()[-500:]}")
    return hb.parse_wrk_output(out.decode())


async def measure_wrk(target: Target, pg: Postgres, prefix: str, settings: Settings,
                      seconds: float | None = None) -> dict:
    """One wrk per server of the target, all at once, each on streams of its own."""
    seconds = seconds or settings.wrk_seconds
    paths = [f"{STREAM_ROOT}/{prefix}/{s.spec.name}" for s in target.servers]
    urls = {s: [f"{s.base_url}{p}/s{i}" for i in range(settings.wrk_connections)]
            for s, p in zip(target.servers, paths)}
    async with hb.new_session(8) as session:
        for server, server_urls in urls.items():
            await hb.create_streams(session, server_urls, hb.BINARY)
        try:
            before = await scrape_all(target.servers)
            wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            with CpuMeter(target.servers, pg) as cpu:
                results = await asyncio.gather(*(run_wrk(s, p, settings, seconds)
                                                 for s, p in zip(target.servers, paths)))
            wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            after = await scrape_all(target.servers)
        finally:
            for server_urls in urls.values():
                await hb.delete_streams(session, server_urls)
    appends = sum(r["requests"] for r in results)
    non2xx = sum(r["non2xx"] for r in results)
    socket_errors = sum(r[k] for r in results
                        for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    if not appends:
        raise RuntimeError("wrk completed no request")
    wrk_cpu = (wrk1.ru_utime + wrk1.ru_stime) - (wrk0.ru_utime + wrk0.ru_stime)
    figures = cpu.figures(appends, "append")
    node_cpu, pg_cpu = figures["node_cpu_us_per_append"], figures["pg_cpu_us_per_append"]
    return {
        "appends": appends, "errors": non2xx + socket_errors,
        "first_error": (f"{non2xx} non-2xx answers" if non2xx else
                        f"{socket_errors} socket errors" if socket_errors else None),
        "appends_per_s": sum(r["requests"] / (r["duration_us"] / 1e6) for r in results),
        "p50_ms": max(r["p50_us"] for r in results) / 1000,
        "p99_ms": max(r["p99_us"] for r in results) / 1000,
        **figures,
        "total_cpu_us_per_append": (node_cpu + pg_cpu if target.on_postgres and node_cpu is not None
                                    and pg_cpu is not None else node_cpu),
        "wrk_cpu_util": wrk_cpu / cpu.elapsed if cpu.elapsed else None,
        **metric_figures(before, after),
        "per_node": [{"node": s.spec.name, "requests": r["requests"],
                      "appends_per_s": r["requests"] / (r["duration_us"] / 1e6)}
                     for s, r in zip(target.servers, results)],
    }


# --------------------------------------------------------------------------------------
# 4. Live delivery across nodes


async def measure_live(writer: BenchServer, reader: BenchServer, cpu_servers: list[BenchServer],
                       pg: Postgres | None, mode: str, prefix: str, settings: Settings) -> dict:
    """Appends on `writer` at settings.live_rate over live_streams streams; live readers
    (SSE or long-poll) on `reader`; latency = append sent -> event received."""
    n = settings.live_streams
    per_stream = max(1, round(settings.live_rate * settings.live_seconds / n))
    grace = settings.long_poll_ms / 1000 + 5
    write_urls = [f"{writer.base_url}{STREAM_ROOT}/{prefix}/l{j}" for j in range(n)]
    read_urls = [f"{reader.base_url}{STREAM_ROOT}/{prefix}/l{j}" for j in range(n)]
    acks: list[dict[int, float]] = [{} for _ in range(n)]  # stream -> seq -> POST latency
    lags: list[float] = []
    write_errors: list[str] = []
    readers_total = n * settings.live_readers
    async with hb.new_session(8) as session, \
            hb.new_session(readers_total + 4, read_timeout=grace) as reader_session:
        await hb.create_streams(session, write_urls, hb.TEXT)
        tails = []
        for url in read_urls:  # through the reader's node: it loads the stream from the store
            async with session.head(url) as resp:
                if resp.status != 200 or not resp.headers.get("Stream-Next-Offset"):
                    raise RuntimeError(f"HEAD {url} -> {resp.status}")
                tails.append(resp.headers["Stream-Next-Offset"])
        readers = [(j, hb.LiveReader(read_urls[j], tails[j]))
                   for j in range(n) for _ in range(settings.live_readers)]
        deadline = time.perf_counter() + settings.live_seconds + grace + 10
        if mode == "sse":
            loops = [r.sse(reader_session, deadline) for _, r in readers]
        else:
            loops = [r.lean_long_poll(hb.LeanClient(read_urls[j], timeout=grace), deadline)
                     for j, r in readers]
        tasks = [asyncio.create_task(loop) for loop in loops]
        clients = [hb.LeanClient(url) for url in write_urls]
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(r.armed.wait() for _, r in readers)), 5)
            await asyncio.sleep(0.3)  # let the last requests reach the server and park

            async def post(j: int, seq: int | None) -> None:
                client = clients[j]
                message = hb.live_message(seq)  # stamped with the send time
                t0 = time.perf_counter()
                try:
                    resp = await client.send(client.post_request(hb.TEXT, message))
                    if resp.status not in (200, 204):
                        write_errors.append(f"POST -> {resp.status}")
                    elif seq is not None:
                        acks[j][seq] = time.perf_counter() - t0
                except (hb.HttpProtocolError, OSError, asyncio.TimeoutError) as exc:
                    write_errors.append(str(exc) or type(exc).__name__)

            async def stream_writer(j: int, start: float) -> None:
                # Stream j's k-th message is due at start + (k*n + j) / rate: the streams
                # take turns, so node A sees an even `rate` appends/s.
                for k in range(per_stream):
                    due = start + (k * n + j) / settings.live_rate
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    await post(j, k)
                await post(j, None)

            scraped = [writer] if reader is writer else [writer, reader]  # reads happen on the reader
            before = await scrape_all(scraped)
            lag_meter = asyncio.create_task(client_loop_lag(lags))
            with CpuMeter(cpu_servers, pg) as cpu:
                start = time.perf_counter()
                await asyncio.gather(*(stream_writer(j, start) for j in range(n)))
                written = time.perf_counter() - start
                lag_meter.cancel()
                await asyncio.wait(tasks, timeout=grace)
            after = await scrape_all(scraped)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in clients:
                client.close()
        await hb.delete_streams(session, write_urls)
    latencies = [lat for _, r in readers for seq, lat in r.received.items() if seq < per_stream]
    # Delivery minus the append's own latency: what the live path adds once the append is
    # durable (negative when the event overtakes the POST's answer), apart from the disk.
    after_ack = [lat - acks[j][seq] for j, r in readers for seq, lat in r.received.items()
                 if seq in acks[j]]
    ack_latencies = [lat for stream in acks for lat in stream.values()]
    appends = n * per_stream
    return {
        "mode": mode, "writer": writer.spec.name, "reader": reader.spec.name, "streams": n,
        "readers": readers_total, "appends": appends,
        "appends_per_s": appends / written if written else None,
        "deliveries": len(latencies), "missing": readers_total * per_stream - len(latencies),
        "memory_read_share": (metric_figures(before, after).get("memory_reads", 0) / len(latencies)
                              if latencies and before and after else None),
        "errors": len(write_errors) + sum(r.errors for _, r in readers),
        "first_error": write_errors[0] if write_errors else None,
        "p50_ms": hb._ms(hb.percentile(latencies, 50)), "p99_ms": hb._ms(hb.percentile(latencies, 99)),
        "max_ms": hb._ms(max(latencies) if latencies else None),
        "ack_p50_ms": hb._ms(hb.percentile(ack_latencies, 50)),
        "ack_p99_ms": hb._ms(hb.percentile(ack_latencies, 99)),
        "after_ack_p50_ms": hb._ms(hb.percentile(after_ack, 50)),
        "after_ack_p99_ms": hb._ms(hb.percentile(after_ack, 99)),
        "client_lag_p99_ms": hb._ms(hb.percentile(lags, 99)),
        **cpu.figures(appends, "append"),
        **metric_figures(before, after),
    }


async def client_loop_lag(lags: list[float], period: float = 0.002) -> None:
    """How late the client's own event loop wakes a timer, every `period`: a send or a
    receipt due meanwhile waits about as long, so its p99 shows what the client itself
    adds to the latency figures."""
    while True:
        due = time.perf_counter() + period
        await asyncio.sleep(period)
        lags.append(max(0.0, time.perf_counter() - due))


# --------------------------------------------------------------------------------------
# 5. Catch-up


async def fill_small(server: BenchServer, path: str, total: int, size: int) -> dict:
    """A stream of `size`-byte appends from one writer: one append per flush, so on
    PostgreSQL one row per append (the worst case for a catch-up read)."""
    url = f"{server.base_url}{path}"
    async with hb.new_session(2) as session:
        await hb.create_streams(session, [url], hb.BINARY)
    count = max(1, total // size)
    client = hb.LeanClient(url)
    raw = client.post_request(hb.BINARY, bytes(range(97, 97 + 26)) * (size // 26) + b"z" * (size % 26))
    start = time.perf_counter()
    try:
        for _ in range(count):
            resp = await client.send(raw)
            if resp.status not in (200, 204):
                raise RuntimeError(f"filling {url}: POST -> {resp.status}")
    finally:
        client.close()
    elapsed = time.perf_counter() - start
    return {"bytes": count * size, "appends": count, "fill_s": elapsed,
            "fill_mib_per_s": count * size / elapsed / (1 << 20)}


class CpuOf:
    """What hb.measure_catchup needs of a server: its URL and the CPU of the target."""

    def __init__(self, base_url: str, servers: list[BenchServer]):
        self.base_url, self.servers = base_url, servers

    def cpu_seconds(self) -> float | None:
        values = [s.cpu_seconds() for s in self.servers]
        return None if None in values else sum(values)


# --------------------------------------------------------------------------------------
# Orchestration, summary


@dataclass
class Case:
    key: str
    label: str
    metrics: tuple[tuple[str, str, str], ...]  # (field, unit, "higher"/"lower"/"")
    samples: dict[str, list[dict]] = field(default_factory=dict)


WRK_METRICS = (("appends_per_s", "appends/s", "higher"), ("p50_ms", "p50 ms", "lower"),
               ("p99_ms", "p99 ms", "lower"),
               ("node_cpu_us_per_append", "node CPU us/append", "lower"),
               ("pg_cpu_us_per_append", "pg CPU us/append", "lower"),
               ("total_cpu_us_per_append", "node+pg CPU us/app", "lower"),
               ("conflicts", "conflicts", "lower"),
               ("appends_per_flush", "appends/flush", ""),
               ("flush_ms", "flush ms (mean)", "lower"),
               ("wrk_cpu_util", "wrk CPU (cores)", ""))
LIVE_METRICS = (("p50_ms", "p50 ms", "lower"), ("p99_ms", "p99 ms", "lower"),
                ("max_ms", "max ms", "lower"), ("appends_per_s", "appends/s", ""),
                ("ack_p50_ms", "append ack p50 ms", "lower"),
                ("ack_p99_ms", "append ack p99 ms", "lower"),
                ("after_ack_p50_ms", "deliv-ack p50 ms", "lower"),
                ("after_ack_p99_ms", "deliv-ack p99 ms", "lower"),
                ("client_lag_p99_ms", "client loop lag p99 ms", "lower"),
                ("flush_ms", "flush ms (mean)", "lower"),
                ("notify_lag_ms", "notify lag ms", "lower"),
                ("memory_read_share", "reads from memory", ""),  # per delivery: no database read on the reader's node
                ("node_cpu_us_per_append", "node CPU us/append", "lower"),
                ("pg_cpu_us_per_append", "pg CPU us/append", "lower"),
                ("missing", "missing", "lower"), ("client_cpu_util", "client CPU (cores)", ""))
CATCHUP_METRICS = (("mib_per_s", "MiB/s", "higher"),
                   ("server_cpu_us_per_op", "node CPU us/MiB", "lower"),
                   ("pg_cpu_us_per_mib", "pg CPU us/MiB", "lower"),
                   ("fill_mib_per_s", "fill MiB/s", "higher"))


def progress(message: str) -> None:
    hb.progress(message)


def brief(case: Case, result: dict) -> str:
    if "failed" in result:
        return f"FAILED {result['failed'][:300]}"
    parts = [f"{unit}={hb.fmt(result.get(key))}" for key, unit, _ in case.metrics
             if result.get(key) is not None]
    if result.get("errors"):
        parts.append(f"errors={result['errors']} ({result.get('first_error')})")
    return "  ".join(parts)


async def interleaved(case: Case, jobs: list[tuple[str, object]], rounds: int) -> None:
    """jobs: (target name, async callable(prefix) -> dict); order reversed every round."""
    run = os.getpid()
    for r in range(rounds):
        for name, measure in (jobs if r % 2 == 0 else jobs[::-1]):
            prefix = f"pgbench-{run}/{case.key}/{re.sub(r'[^A-Za-z0-9_-]+', '_', name)}/r{r}"
            try:
                result = await measure(prefix)
            except Exception as exc:  # one failing figure must not lose the rest
                result = {"failed": f"{type(exc).__name__}: {exc}"}
            result["round"] = r
            case.samples.setdefault(name, []).append(result)
            progress(f"{case.label:<34} {name:<14} r{r}  {brief(case, result)}")


async def start(server: BenchServer) -> BenchServer:
    port = hb.free_ports(1)[0]
    progress(f"starting {server.spec.name}")
    await server.start(port)
    progress(f"{server.spec.name} ready at {server.base_url}")
    return server


async def run_wrk_test(targets: list[Target], pg: Postgres, settings: Settings) -> list[Case]:
    if shutil.which("wrk") is None:
        progress(hb.wrk_missing_message())
        return []
    c = settings.wrk_connections
    case = Case("wrk-append", f"wrk append {c}c/node own streams", WRK_METRICS)
    for target in targets:  # unrecorded warm-up under wrk (connections, Node's JIT, pools)
        with contextlib.suppress(Exception):
            await measure_wrk(target, pg, f"pgbench-warmup-{os.getpid()}/{target.name}",
                              settings, seconds=1)
    await interleaved(case, [(t.name, lambda prefix, t=t: measure_wrk(t, pg, prefix, settings))
                             for t in targets], settings.rounds)
    return [case]


async def run_live_test(pg_a: BenchServer, pg_b: BenchServer, file: BenchServer, pg: Postgres,
                        settings: Settings) -> list[Case]:
    cases = []
    label = (f"live {settings.live_rate:g}/s {settings.live_streams} streams "
             f"x{settings.live_readers}")
    both = [pg_a, pg_b]
    for mode in ("sse", "long-poll"):
        case = Case(f"live-{mode}", f"{label} {mode}", LIVE_METRICS)
        jobs = [("pg A->B", lambda p, m=mode: measure_live(pg_a, pg_b, both, pg, m, p, settings)),
                ("pg A->A", lambda p, m=mode: measure_live(pg_a, pg_a, both, pg, m, p, settings)),
                ("file", lambda p, m=mode: measure_live(file, file, [file], None, m, p, settings))]
        await interleaved(case, jobs, settings.rounds)
        cases.append(case)
    return cases


async def run_catchup_test(pg_a: BenchServer, pg_b: BenchServer, file: BenchServer,
                           pg: Postgres, settings: Settings) -> list[Case]:
    """Streams written through node A are read through node B (so from PostgreSQL, not
    from anything node A still holds), and the file store's through itself."""
    cases = []
    run = os.getpid()
    kinds = [("big", f"catch-up {settings.catchup_mib} MiB ({settings.catchup_chunk_kib} KiB appends)")]
    if settings.catchup_small_kib:
        kinds.append(("small", f"catch-up {settings.catchup_small_kib} KiB "
                               f"({settings.catchup_small_bytes} B appends)"))
    fill_settings = SimpleNamespace(catchup_mib=settings.catchup_mib,
                                    catchup_chunk_kib=settings.catchup_chunk_kib)
    for kind, label in kinds:
        case = Case(f"catchup-{kind}", label, CATCHUP_METRICS)
        path = f"{STREAM_ROOT}/pgbench-{run}/catchup-{kind}"
        fills = {}
        for name, writer in (("pg B<-A", pg_a), ("file", file)):
            try:
                if kind == "big":
                    fills[name] = await hb.fill_stream(writer, path, fill_settings)
                else:
                    fills[name] = await fill_small(writer, path, settings.catchup_small_kib * 1024,
                                                   settings.catchup_small_bytes)
                progress(f"filled {label} on {name} in {fills[name]['fill_s']:.2f}s")
            except Exception as exc:
                fills[name] = {"failed": f"{type(exc).__name__}: {exc}"}
                progress(f"fill FAILED on {name}: {exc}")

        async def measure(prefix: str, name: str, reader: BenchServer,
                          servers: list[BenchServer], pg_or_none: Postgres | None) -> dict:
            fill = fills[name]
            if "failed" in fill:
                raise RuntimeError(f"stream could not be filled: {fill['failed']}")
            pg0 = pg_or_none.cpu_seconds() if pg_or_none else None
            result = await hb.measure_catchup(CpuOf(reader.base_url, servers), path, fill["bytes"])
            pg1 = pg_or_none.cpu_seconds() if pg_or_none else None
            mib = fill["bytes"] / (1 << 20)
            return {**result, "server_cpu_us_per_op": (result["server_cpu_s"] / mib * 1e6
                                                       if result["server_cpu_s"] is not None else None),
                    "pg_cpu_us_per_mib": (pg1 - pg0) / mib * 1e6 if pg0 is not None and pg1 is not None else None,
                    "fill_mib_per_s": fill["fill_mib_per_s"], "fill": fill}

        jobs = [("pg B<-A", lambda p: measure(p, "pg B<-A", pg_b, [pg_a, pg_b], pg)),
                ("file", lambda p: measure(p, "file", file, [file], None))]
        await interleaved(case, jobs, settings.catchup_reads)
        async with hb.new_session(2) as session:
            await hb.delete_streams(session, [f"{pg_a.base_url}{path}", f"{file.base_url}{path}"])
        cases.append(case)
    return cases


async def run_all(settings: Settings, work_dir: Path, pg: Postgres) -> tuple[list[Case], dict]:
    pg.start(["bench_one", "bench_two"])
    progress(f"PostgreSQL up (postmaster {pg.postmaster}): {pg.settings()}")
    s = settings
    pg_a = await start(BenchServer("pg2-A", "ours", work_dir, s, dsn=pg.dsn("bench_two")))
    pg_b = await start(BenchServer("pg2-B", "ours", work_dir, s, dsn=pg.dsn("bench_two")))
    file = await start(BenchServer("file", "ours", work_dir, s))
    servers = [pg_a, pg_b, file]
    if "wrk" in s.tests:  # only wrk compares one node and the Node reference server
        pg1 = await start(BenchServer("pg1", "ours", work_dir, s, dsn=pg.dsn("bench_one")))
        node = await start(BenchServer("node", "node", work_dir, s))
        servers += [pg1, node]
    commands = {srv.spec.name: srv.command for srv in servers}
    cases: list[Case] = []
    if "wrk" in s.tests:
        targets = [Target("pg1", [pg1], True), Target("pg2", [pg_a, pg_b], True),
                   Target("file", [file], False), Target("node", [node], False)]
        cases += await run_wrk_test(targets, pg, s)
    if "live" in s.tests:
        cases += await run_live_test(pg_a, pg_b, file, pg, s)
    if "catchup" in s.tests:
        cases += await run_catchup_test(pg_a, pg_b, file, pg, s)
    return cases, {"commands": commands, "postgres": pg.settings()}


median_of = hb.median_of
clean = hb.clean


def summarize(cases: list[Case]) -> list[dict]:
    rows = []
    for case in cases:
        names = list(case.samples)
        for key, unit, better in case.metrics:
            values = {n: median_of(case.samples[n], key) for n in names}
            if all(v is None for v in values.values()):
                continue
            rows.append({"case": case.key, "label": case.label, "metric": key, "unit": unit,
                         "better": better, "values": values,
                         "clean": {n: clean(case.samples[n]) for n in names}})
    return rows


def value(rows: list[dict], case: str, metric: str, name: str) -> float | None:
    for row in rows:
        if row["case"] == case and row["metric"] == metric and row["clean"].get(name):
            return row["values"].get(name)
    return None


def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def findings(rows: list[dict]) -> list[dict]:
    """The figures the PostgreSQL store is held to, with their goals."""
    v = lambda *k: value(rows, *k)  # noqa: E731
    out = []

    def add(what, figure, goal=None, ok=None, unit="x"):
        out.append({"what": what, "value": figure, "unit": unit, "goal": goal,
                    "met": None if ok is None or figure is None else ok(figure)})

    file_cpu = v("wrk-append", "node_cpu_us_per_append", "file")
    add("node CPU/append, 1 node on PostgreSQL / our file store",
        ratio(v("wrk-append", "node_cpu_us_per_append", "pg1"), file_cpu), "<= 1.2",
        lambda x: x <= 1.2)
    add("node CPU/append, 2 nodes on PostgreSQL / our file store",
        ratio(v("wrk-append", "node_cpu_us_per_append", "pg2"), file_cpu), "<= 1.2",
        lambda x: x <= 1.2)
    add("node CPU/append, 1 node on PostgreSQL / Node reference (file)",
        ratio(v("wrk-append", "node_cpu_us_per_append", "pg1"),
              v("wrk-append", "node_cpu_us_per_append", "node")))
    add("node CPU/append, our file store / Node reference (file)",
        ratio(file_cpu, v("wrk-append", "node_cpu_us_per_append", "node")))
    add("PostgreSQL CPU per append, 1 node", v("wrk-append", "pg_cpu_us_per_append", "pg1"),
        "<= 50 us", lambda x: x <= 50, "us")
    add("PostgreSQL CPU per append, 2 nodes", v("wrk-append", "pg_cpu_us_per_append", "pg2"),
        "<= 50 us", lambda x: x <= 50, "us")
    add("conflicts, 2 nodes on distinct streams (sum over rounds)",
        _conflicts_total(rows), "0", lambda x: x == 0, "")
    add("appends/s, 2 nodes / 1 node",
        ratio(v("wrk-append", "appends_per_s", "pg2"), v("wrk-append", "appends_per_s", "pg1")))
    add("appends/s, 1 node on PostgreSQL / our file store",
        ratio(v("wrk-append", "appends_per_s", "pg1"), v("wrk-append", "appends_per_s", "file")))
    for mode in ("sse", "long-poll"):
        add(f"cross-node live p99 ({mode}, A->B)", v(f"live-{mode}", "p99_ms", "pg A->B"),
            "< 10 ms", lambda x: x < 10, "ms")
        add(f"cross-node live p50 ({mode}, A->B)", v(f"live-{mode}", "p50_ms", "pg A->B"),
            unit="ms")
        add(f"cross-node live p99 minus the append's own latency ({mode}, A->B)",
            v(f"live-{mode}", "after_ack_p99_ms", "pg A->B"), unit="ms")
        add(f"cross-node live p99 ({mode}), PostgreSQL A->B / our file store",
            ratio(v(f"live-{mode}", "p99_ms", "pg A->B"), v(f"live-{mode}", "p99_ms", "file")))
        add(f"live appends/s reached ({mode}, A->B; asked {LIVE_RATE[0]:g})",
            v(f"live-{mode}", "appends_per_s", "pg A->B"), unit="")
    for kind in ("big", "small"):
        add(f"catch-up MiB/s ({kind} appends), PostgreSQL / our file store",
            ratio(v(f"catchup-{kind}", "mib_per_s", "pg B<-A"), v(f"catchup-{kind}", "mib_per_s", "file")))
    return [f for f in out if f["value"] is not None]


CASES_BY_KEY: dict[str, Case] = {}
LIVE_RATE = [0.0]  # the asked rate, for the findings


def _conflicts_total(rows: list[dict]) -> int | None:
    case = CASES_BY_KEY.get("wrk-append")
    if case is None or "pg2" not in case.samples:
        return None
    values = [x.get("conflicts") for x in case.samples["pg2"] if "failed" not in x]
    return None if not values or None in values else sum(values)


def table(rows: list[dict], found: list[dict]) -> str:
    lines = []
    last = None
    for row in rows:
        names = list(row["values"])
        if row["label"] != last:
            lines.append("")
            lines.append(f"{row['label']:<36} {'metric':<20}" + "".join(f"{n:>14}" for n in names))
            lines.append("-" * (57 + 14 * len(names)))
            last = row["label"]
        cells = "".join(f"{hb.fmt(row['values'][n]) + ('' if row['clean'][n] else '!'):>14}"
                        for n in names)
        lines.append(f"{'':<36} {row['unit']:<20}{cells}")
    lines.append("\n! = errors, lost messages or a failed sample in that figure")
    lines.append("\nfindings (ratios are medians of the same run):")
    for f in found:
        verdict = "" if f["met"] is None else ("  met" if f["met"] else "  NOT met")
        goal = f"  (goal {f['goal']})" if f["goal"] else ""
        unit = "" if f["unit"] in ("", "x") else f" {f['unit']}"
        shown = f"{f['value']:.2f}" if isinstance(f["value"], float) else str(f["value"])
        lines.append(f"  {f['what']}: {shown}{unit}{goal}{verdict}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Settings]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run (under a minute)")
    p.add_argument("--tests", default=",".join(ALL_TESTS),
                   help=f"comma-separated subset of {','.join(ALL_TESTS)}")
    p.add_argument("--rounds", type=int, help="rounds of the wrk and live figures (full: 2)")
    p.add_argument("--wrk-seconds", type=float, help="one wrk run (full: 5)")
    p.add_argument("--wrk-connections", type=int, default=32,
                   help="wrk connections per node, and as many streams per node")
    p.add_argument("--live-seconds", type=float, help="writing window of a live figure (full: 4)")
    p.add_argument("--live-rate", type=float, default=1000.0, help="appends/s on node A")
    p.add_argument("--live-streams", type=int, default=50, help="streams the appends spread over")
    p.add_argument("--live-readers", type=int, default=1, help="live readers per stream")
    p.add_argument("--catchup-mib", type=int, help="size of the big catch-up stream (full: 64)")
    p.add_argument("--catchup-chunk-kib", type=int, default=64, help="its append size")
    p.add_argument("--catchup-small-kib", type=int,
                   help="size of the small-append catch-up stream (full: 256; 0: skip)")
    p.add_argument("--catchup-small-bytes", type=int, default=100, help="its append size")
    p.add_argument("--catchup-reads", type=int, help="full reads per target (full: 3)")
    p.add_argument("--output", type=Path,
                   help="JSON path (default bench/results/postgres-<utc>.json; the table "
                        "goes next to it as .txt)")
    p.add_argument("--keep-logs", action="store_true", help="keep server logs and configs")
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    tests = frozenset(t.strip() for t in args.tests.split(",") if t.strip())
    if not tests or tests - set(ALL_TESTS):
        p.error(f"--tests must be a subset of {','.join(ALL_TESTS)}")
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else base[name]  # noqa: E731
    settings = Settings(
        tests=tests, rounds=pick("rounds"), wrk_seconds=pick("wrk_seconds"),
        wrk_connections=args.wrk_connections, live_seconds=pick("live_seconds"),
        live_rate=args.live_rate, live_streams=args.live_streams, live_readers=args.live_readers,
        catchup_mib=pick("catchup_mib"), catchup_chunk_kib=args.catchup_chunk_kib,
        catchup_small_kib=pick("catchup_small_kib"), catchup_small_bytes=args.catchup_small_bytes,
        catchup_reads=pick("catchup_reads"))
    if min(settings.rounds, settings.catchup_reads, settings.live_streams, settings.live_readers,
           settings.wrk_connections) < 1 or settings.live_rate <= 0:
        p.error("counts, rounds and rates must be positive")
    if settings.wrk_connections < settings.wrk_threads:
        p.error("--wrk-connections must be at least 2 (wrk runs 2 threads)")
    if (settings.catchup_mib * 1024) % settings.catchup_chunk_kib:
        p.error("--catchup-mib must be a whole number of --catchup-chunk-kib chunks")
    return args, settings


def remove_stale_work_dirs() -> None:
    for path in Path(tempfile.gettempdir()).glob(f"{WORK_DIR_PREFIX}*-*"):
        pid = path.name[len(WORK_DIR_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            # A killed run may have left its PostgreSQL running: stop it first.
            data = path / "pg" / "data"
            if (data / "postmaster.pid").exists():
                with contextlib.suppress(Exception):
                    PgCluster(root=str(path / "pg")).stop()
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_args(sys.argv[1:] if argv is None else argv)
    hb.prepare_process()
    started = time.time()
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    output = args.output or hb.RESULTS_DIR / f"postgres-{run_id}{'-quick' if args.quick else ''}.json"
    remove_stale_work_dirs()
    work_dir = Path(tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}-"))
    os.chmod(work_dir, 0o755)  # the postgres user must reach its data directory inside
    print(f"settings: { {k: v for k, v in settings.__dict__.items() if k != 'tests'} }; "
          f"tests: {','.join(sorted(settings.tests))}", flush=True)
    try:
        pg = Postgres(work_dir)
    except PostgresUnavailable as exc:
        print(f"postgres_bench: {exc}", file=sys.stderr)
        return 2
    extra: dict = {}
    try:
        cases, extra = asyncio.run(run_all(settings, work_dir, pg))
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except (RuntimeError, PostgresUnavailable) as exc:
        print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
        return 1
    finally:
        hb.stop_all_servers()  # before their database goes
        pg.stop()
        hb.finish(work_dir, args.keep_logs)
    CASES_BY_KEY.update({c.key: c for c in cases})
    LIVE_RATE[0] = settings.live_rate
    rows = summarize(cases)
    found = findings(rows)
    text = table(rows, found)
    print(text)
    environment = hb.environment([])
    environment.pop("targets", None)
    doc = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": time.time() - started,
        "load_average": os.getloadavg(),
        "settings": {k: (sorted(v) if isinstance(v, frozenset) else v)
                     for k, v in settings.__dict__.items()},
        "environment": {**environment, **extra},
        "findings": found, "summary": rows, "samples": {c.key: c.samples for c in cases},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2) + "\n")
    output.with_suffix(".txt").write_text(
        f"postgres_bench {doc['started_utc']} ({doc['duration_s']:.0f}s, load average at the end "
        f"{', '.join(f'{x:.1f}' for x in doc['load_average'])})\n{text}\n")
    print(f"\nresults: {output} and {output.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
