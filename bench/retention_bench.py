"""Cost of retention: appends/s and server CPU per append without and with a retention
policy that compacts continuously, in the same run (goal: under 10%).

Our server runs on each store (file store, in-memory store) in two or more variants that
differ only in a `retention { max_size ... }` block: `plain` (no retention) and
`ret-<size>` for each --max-size. Every sample appends under wrk (bench/wrk_streams.lua,
32 connections on 32 streams) to streams that were filled past the bound beforehand, so
every stream of a `ret-` server is over its bound for the whole window and its floor moves
every max_size/8 of growth. The order of the variants alternates between rounds (A B C,
C B A, ...); figures are medians over rounds, and the comparison is ret/plain.

    .venv/bin/python bench/retention_bench.py                  # about 3 minutes
    .venv/bin/python bench/retention_bench.py --quick          # smoke run; don't quote it
    .venv/bin/python bench/retention_bench.py --max-size 64KiB,4KiB --rounds 6

Every server has an admin address; its /metrics is scraped before and after each window
(outside it), which shows that retention ran: streams compacted, bytes dropped and
reclaimed, and the bytes retained at the end of the window. See bench/README.md,
"Retention benchmark".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import http_bench as hb  # noqa: E402  (the HTTP benchmark's processes, wrk, helpers)

from durable_streams.server.config.durations import parse_duration  # noqa: E402
from durable_streams.server.config.sizes import parse_size  # noqa: E402

STREAM_ROOT = hb.STREAM_ROOT
HOST = hb.HOST
STORES = ("file", "mem")
PEER = "plain"
WORK_DIR_PREFIX = "ds-ret-bench-"
GOAL = 0.10  # at most 10% fewer appends/s, and at most 10% more server CPU per append


@dataclass(frozen=True)
class Settings:
    stores: tuple[str, ...]
    max_sizes: tuple[str, ...]  # Caddy sizes, one `ret-<size>` variant each
    rounds: int
    wrk_seconds: float
    wrk_connections: int  # -c, and as many streams
    overfill: float  # each stream is filled to this many times max_size before a window
    idle_streams: int = 0  # extra streams created on every server at the start, never appended to
    max_age: str | None = None  # Caddy duration added to every ret- variant's rule
    long_poll_ms: int = 2000
    file_handles: int = 512
    wrk_threads: int = 2


FULL = dict(rounds=4, wrk_seconds=5.0)
QUICK = dict(rounds=1, wrk_seconds=1.0)


def variant_name(max_size: str | None, max_age: str | None = None) -> str:
    if max_size is None:
        return PEER
    return f"ret-{max_size}" + (f"+{max_age}" if max_age else "")


# --------------------------------------------------------------------------------------
# Our server with an admin address (/metrics) and an optional retention block


def ours_caddyfile(port: int, admin_port: int, data_dir: str | None, max_size: str | None,
                   settings: Settings) -> str:
    storage = (f"\t\t\tdata_dir {data_dir}\n\t\t\tmax_file_handles {settings.file_handles}\n"
               if data_dir else "")
    age = f"\t\t\t\tmax_age {settings.max_age}\n" if settings.max_age else ""
    retention = (f"\t\t\tretention {{\n\t\t\t\tmax_size {max_size}\n{age}\t\t\t}}\n"
                 if max_size else "")
    # The admin address serves /metrics (retention counters, store counters) without the
    # per-request series of the global `metrics` option: the request path stays the one
    # http_bench.py measures. Both variants have it, so it is no part of the difference.
    return (
        "{\n"
        f"\tadmin {HOST}:{admin_port}\n"
        "\tauto_https off\n"
        "}\n\n"
        f"http://{HOST}:{port} {{\n"
        f"\tbind {HOST}\n"
        f"\troute {STREAM_ROOT}/* {{\n"
        "\t\tdurable_streams {\n"
        f"{storage}{retention}"
        f"\t\t\tlong_poll_timeout {hb.caddy_duration(settings.long_poll_ms)}\n"
        "\t\t}\n\t}\n}\n"
    )


class RetentionServer(hb.ServerProcess):
    def __init__(self, store: str, max_size: str | None, work_dir: Path, settings: Settings):
        name = variant_name(max_size, settings.max_age)
        super().__init__(hb.TargetSpec(name, "ours"), work_dir, durable=(store == "file"),
                         settings=settings, tag="retention")
        self.log_path = work_dir / f"{store}-{name}.log"
        self.store = store
        self.max_size = max_size
        self.max_size_bytes = parse_size(max_size) if max_size else None
        self.settings = settings
        self.admin_port: int | None = None

    def _command(self, port: int) -> list[str]:
        if self.durable:
            self.data_dir = tempfile.mkdtemp(prefix=f"{self.store}-{self.spec.name}-data-",
                                             dir=self.work_dir)
        self.admin_port = next(p for p in hb.free_ports(2) if p != port)
        cfg = self.work_dir / f"{self.store}-{self.spec.name}.Caddyfile"
        cfg.write_text(ours_caddyfile(port, self.admin_port, self.data_dir, self.max_size,
                                      self.settings))
        exe = Path(sys.executable).parent / "durable-streams-server"
        return [str(exe) if exe.exists() else "durable-streams-server", "run", "--config", str(cfg)]

    async def scrape(self) -> dict[str, float]:
        """The admin address's /metrics, summed by series name."""
        url = f"http://{HOST}:{self.admin_port}/metrics"
        values: dict[str, float] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(url) as resp:
                text = await resp.text()
        for line in text.splitlines():
            match = re.match(r"([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
            if match and not line.startswith("#"):
                with contextlib.suppress(ValueError):
                    values[match[1]] = values.get(match[1], 0.0) + float(match[3])
        return values


METRICS = {
    "compacted": "durable_streams_retention_streams_compacted_total",
    "dropped": "durable_streams_retention_dropped_bytes_total",
    "reclaimed": "durable_streams_retention_reclaimed_bytes_total",
    "retained": "durable_streams_retained_bytes",  # a gauge: read at the end of the window
    "flushes": "durable_streams_store_flush_batch_size_count",
    "flushed_records": "durable_streams_store_flush_batch_size_sum",
}


async def scrape(server: RetentionServer) -> dict[str, float]:
    values = await server.scrape()
    return {key: values.get(name, 0.0) for key, name in METRICS.items()}


# --------------------------------------------------------------------------------------
# One sample: fill the streams past the bound, then wrk appends for the window


async def prefill(session: aiohttp.ClientSession, urls: list[str], total: int, chunk: int) -> None:
    """Each stream gets `total` bytes in appends of `chunk` (untimed)."""
    body = b"p" * chunk
    limit = asyncio.Semaphore(32)

    async def fill(url: str) -> None:
        for _ in range(max(1, -(-total // chunk))):
            async with limit, session.post(url, data=body,
                                           headers={"Content-Type": hb.BINARY}) as resp:
                await resp.read()
                if resp.status not in (200, 204):
                    raise RuntimeError(f"prefill POST {url} -> {resp.status}")

    await asyncio.gather(*(fill(u) for u in urls))


async def settle(server: RetentionServer, streams: int, bound: int) -> float:
    """Until the retention pass has brought every filled stream under its bound (or 5 s):
    the window then measures the steady state, not the first compaction of the fill."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 5.0:
        if server.max_size_bytes is None:
            await asyncio.sleep(0.3)  # the same pause as a retained server's usual settle
            break
        if (await scrape(server))["retained"] <= streams * bound:
            break
        await asyncio.sleep(0.05)
    return time.perf_counter() - t0


async def measure(server: RetentionServer, prefix: str, settings: Settings,
                  fill_size: int, fill_chunk: int, seconds: float | None = None) -> dict:
    seconds = settings.wrk_seconds if seconds is None else seconds
    path = f"{STREAM_ROOT}/{prefix}"
    n = settings.wrk_connections
    urls = [f"{server.base_url}{path}/s{i}" for i in range(n)]
    cmd = hb.wrk_command(server.base_url, "append", path, settings, seconds)
    async with hb.new_session(32) as session:
        await hb.create_streams(session, urls, hb.BINARY)
        try:
            await prefill(session, urls, fill_size, fill_chunk)
            settle_s = await settle(server, n, server.max_size_bytes or 0)
            before = await scrape(server)
            with hb.CpuWindow(server) as cpu:
                result, wrk_cpu = hb.run_wrk(cmd, seconds)
            after = await scrape(server)  # before the streams go
        finally:
            await hb.delete_streams(session, urls)
    appends = result["requests"]
    socket_errors = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors",
                                            "timeouts"))
    if not appends:
        raise RuntimeError("wrk completed no request")
    duration = result["duration_us"] / 1e6
    delta = {k: after[k] - before[k] for k in METRICS}
    figures = cpu.figures(appends)
    figures["client_cpu_util"] = wrk_cpu / cpu.elapsed if cpu.elapsed else None
    bound = server.max_size_bytes
    return {
        "store": server.store, "variant": server.spec.name, "streams": n,
        "fill_bytes_per_stream": fill_size, "settle_s": settle_s,
        "appends": appends, "errors": result["non2xx"] + socket_errors,
        "first_error": (f"{result['non2xx']} non-2xx answers, first {result['first_bad_status']}"
                        if result["non2xx"] else
                        f"{socket_errors} socket errors/timeouts" if socket_errors else None),
        "elapsed_s": duration, "appends_per_s": appends / duration if duration else None,
        "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
        **figures, "wrk_cpu_s": wrk_cpu,
        # The share of the machine the server got: on shared cores appends/s follows it.
        "server_cores": (cpu.server_cpu / cpu.elapsed
                         if cpu.server_cpu is not None and cpu.elapsed else None),
        "compactions": round(delta["compacted"]),
        "compactions_per_s": delta["compacted"] / cpu.elapsed if cpu.elapsed else None,
        "dropped_kib": delta["dropped"] / 1024, "reclaimed_kib": delta["reclaimed"] / 1024,
        "retained_kib_end": after["retained"] / 1024,
        # Retained bytes per stream at the end of the window, over the bound: at most 1.
        "retained_over_bound": (after["retained"] / n / bound if bound else None),
        "records_per_flush": (delta["flushed_records"] / delta["flushes"]
                              if delta["flushes"] else None),
        "metrics_before": before, "metrics_after": after,
    }


# --------------------------------------------------------------------------------------
# Orchestration


WINDOW_METRICS = (("appends_per_s", "appends/s", "higher"), ("p50_ms", "p50 ms", "lower"),
                  ("p99_ms", "p99 ms", "lower"),
                  ("server_cpu_us_per_op", "srv CPU us/append", "lower"),
                  ("server_cores", "srv CPU (cores)", "-"),
                  ("compactions", "compactions", "-"),
                  ("compactions_per_s", "compactions/s", "-"),
                  ("dropped_kib", "dropped KiB", "-"),
                  ("reclaimed_kib", "reclaimed KiB", "-"),
                  ("retained_kib_end", "retained KiB (end)", "-"),
                  ("records_per_flush", "records/flush", "-"))


def fill_size(settings: Settings) -> int:
    """Bytes each stream gets before a window: past the largest bound, the same for every
    variant (so plain and ret- streams hold as much data when the window starts)."""
    largest = max((parse_size(s) for s in settings.max_sizes), default=64 * 1024)
    return int(largest * settings.overfill)


def fill_chunk(settings: Settings) -> int:
    """Append size of the fill: an eighth of the smallest bound (at most 16 KiB), so that
    a pass can bring every stream under its bound (the newest append is always kept whole)."""
    smallest = min((parse_size(s) for s in settings.max_sizes), default=64 * 1024)
    return max(1, min(smallest // 8, 16 * 1024))


async def run_all(settings: Settings, work_dir: Path, run_id: str) -> list[hb.Case]:
    variants = [None, *settings.max_sizes]
    servers: dict[str, list[RetentionServer]] = {}
    cases = []
    for store in settings.stores:
        servers[store] = [RetentionServer(store, v, work_dir, settings) for v in variants]
        for server, port in zip(servers[store], hb.free_ports(len(variants))):
            hb.progress(f"starting {store} {server.spec.name}")
            await server.start(port)
            hb.progress(f"{store} {server.spec.name} ready at {server.base_url}: "
                        f"{' '.join(server.command)}")
    size, chunk = fill_size(settings), fill_chunk(settings)
    try:
        if settings.idle_streams:  # streams that exist but take no appends (matched by the rule)
            for store in settings.stores:
                for server in servers[store]:
                    hb.progress(f"creating {settings.idle_streams} idle streams on {store} "
                                f"{server.spec.name}")
                    async with hb.new_session(32) as session:
                        await hb.create_streams(session, [
                            f"{server.base_url}{STREAM_ROOT}/bench-idle-{os.getpid()}/i{k}"
                            for k in range(settings.idle_streams)], hb.BINARY)
        for store in settings.stores:  # unrecorded warm-up, retention paths included
            for server in servers[store]:
                await measure(server, f"bench-warmup-{os.getpid()}/{store}/{server.spec.name}",
                              settings, size, chunk, seconds=1.0)
        for store in settings.stores:
            case = hb.Case(f"retention-{store}", f"wrk append {store} "
                           f"{settings.wrk_connections}c own streams", WINDOW_METRICS)
            cases.append(case)
        # Rounds outermost, so both stores see the whole run's drift alike.
        for r in range(settings.rounds):
            for case, store in zip(cases, settings.stores):
                order = servers[store] if r % 2 == 0 else servers[store][::-1]
                for server in order:
                    prefix = f"bench-{run_id}/{store}/{server.spec.name}/r{r}"
                    try:
                        result = await measure(server, prefix, settings, size, chunk)
                    except Exception as exc:  # one failing sample must not lose the run
                        result = {"failed": f"{type(exc).__name__}: {exc}"}
                    result["round"] = r
                    case.samples.setdefault(server.spec.name, []).append(result)
                    hb.progress(f"{case.label:<32} {server.spec.name:<10} r{r}  "
                                f"{hb.brief(case, result)}")
    finally:
        for store_servers in servers.values():
            hb.stop_servers(store_servers)
    return cases


# --------------------------------------------------------------------------------------
# Findings


def paired_ratios(case: hb.Case, name: str, key: str) -> list[float]:
    """Per round: variant / plain of the same round (both measured within a minute)."""
    mine = {s["round"]: s.get(key) for s in case.samples.get(name, []) if "failed" not in s}
    peer = {s["round"]: s.get(key) for s in case.samples.get(PEER, []) if "failed" not in s}
    return [mine[r] / peer[r] for r in sorted(mine) if mine[r] and peer.get(r)]


def findings(cases: list[hb.Case], rows: list[dict], settings: Settings) -> list[dict]:
    found = []
    by_key = {(row["case"], row["metric"]): row for row in rows}
    for case, store in zip(cases, settings.stores):
        for size in settings.max_sizes:
            name = variant_name(size, settings.max_age)
            rate = by_key[(case.key, "appends_per_s")]["ratios"].get(name)
            cpu = by_key[(case.key, "server_cpu_us_per_op")]["ratios"].get(name)
            samples = [s for s in case.samples.get(name, []) if "failed" not in s]
            compactions = sum(s["compactions"] for s in samples)
            cost = None
            if rate is not None and cpu is not None:
                cost = max(1 - rate, cpu - 1)
            found.append({
                "store": store, "variant": name, "appends_per_s_ratio": rate,
                "cpu_per_append_ratio": cpu,
                "paired_appends_per_s_ratios": paired_ratios(case, name, "appends_per_s"),
                "paired_cpu_ratios": paired_ratios(case, name, "server_cpu_us_per_op"),
                "cost": cost, "goal_met": None if cost is None else cost < GOAL,
                "compactions": compactions,
                "reclaimed_kib": sum(s["reclaimed_kib"] for s in samples),
                "retention_ran": bool(samples) and all(s["compactions"] > 0 for s in samples),
                "max_retained_over_bound": max((s["retained_over_bound"] for s in samples
                                                if s["retained_over_bound"] is not None),
                                               default=None),
            })
    return found


def print_findings(found: list[dict], settings: Settings) -> None:
    def rng(values: list[float]) -> str:
        return f"{min(values):.2f}-{max(values):.2f}" if values else "-"

    print(f"\nretention cost (ret/plain, medians over {settings.rounds} rounds; per-round "
          f"ratios in brackets), goal < {GOAL:.0%}:")
    for f in found:
        if f["cost"] is None:
            verdict = "n/a (errors or missing figures)"
        else:
            verdict = (f"cost {f['cost']:+.1%}  {'met' if f['goal_met'] else 'NOT met'}")
        ran = ("retention ran in every window" if f["retention_ran"]
               else "RETENTION DID NOT RUN in some window")
        bound = f["max_retained_over_bound"]
        print(f"  {f['store']:<4} {f['variant']:<10} appends/s {fmt_ratio(f['appends_per_s_ratio'])} "
              f"[{rng(f['paired_appends_per_s_ratios'])}]  CPU/append "
              f"{fmt_ratio(f['cpu_per_append_ratio'])} [{rng(f['paired_cpu_ratios'])}]  {verdict}")
        print(f"       {ran}: {f['compactions']} compactions, "
              f"{f['reclaimed_kib']:,.0f} KiB reclaimed; retained at the end of a window "
              f"<= {bound:.2f}x the bound per stream" if bound is not None else f"       {ran}")


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# --------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Settings]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run (1 round of 1 s)")
    p.add_argument("--stores", default=",".join(STORES),
                   help=f"comma-separated subset of {','.join(STORES)}")
    p.add_argument("--max-size", default="64KiB",
                   help="comma-separated retention bounds, one ret-<size> variant each "
                        "(Caddy sizes; default 64KiB)")
    p.add_argument("--rounds", type=int, help="rounds per figure (full 4, quick 1)")
    p.add_argument("--wrk-seconds", type=float, help="window of one sample (full 5, quick 1)")
    p.add_argument("--wrk-connections", type=int, default=32,
                   help="wrk connections, and as many streams")
    p.add_argument("--overfill", type=float, default=1.25,
                   help="each stream is filled to this many times the largest bound first")
    p.add_argument("--max-age", help="also a max_age (Caddy duration, e.g. 1h) in every ret- "
                                     "variant's rule; a long one drops nothing in the windows "
                                     "but costs its age bookkeeping")
    p.add_argument("--idle-streams", type=int, default=0,
                   help="extra streams created on every server at the start and never "
                        "appended to (default 0)")
    p.add_argument("--output", type=Path,
                   help="JSON path (default bench/results/retention-<utc>.json)")
    p.add_argument("--keep-logs", action="store_true", help="keep server logs and configs")
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    stores = tuple(s.strip() for s in args.stores.split(",") if s.strip())
    if not stores or set(stores) - set(STORES):
        p.error(f"--stores must be a subset of {','.join(STORES)}")
    sizes = tuple(s.strip() for s in args.max_size.split(",") if s.strip())
    for size in sizes:
        try:
            if parse_size(size) < 1:
                raise ValueError("must be at least 1 byte")
        except ValueError as exc:
            p.error(f"--max-size {size!r}: {exc}")
    if not sizes:
        p.error("--max-size needs at least one size")
    if args.max_age is not None:
        try:
            if parse_duration(args.max_age) <= 0:
                raise ValueError("must be positive")
        except ValueError as exc:
            p.error(f"--max-age {args.max_age!r}: {exc}")
    settings = Settings(stores=stores, max_sizes=sizes, rounds=args.rounds or base["rounds"],
                        wrk_seconds=args.wrk_seconds or base["wrk_seconds"],
                        wrk_connections=args.wrk_connections, overfill=args.overfill,
                        idle_streams=args.idle_streams, max_age=args.max_age)
    if (settings.rounds < 1 or settings.wrk_seconds <= 0 or settings.overfill <= 1
            or settings.idle_streams < 0):
        p.error("--rounds and --wrk-seconds must be positive, --overfill above 1, "
                "--idle-streams not negative")
    if settings.wrk_connections < settings.wrk_threads:
        p.error(f"--wrk-connections must be at least {settings.wrk_threads}")
    return args, settings


def remove_stale_work_dirs() -> None:
    for path in Path(tempfile.gettempdir()).glob(f"{WORK_DIR_PREFIX}*-*"):
        pid = path.name[len(WORK_DIR_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_args(sys.argv[1:] if argv is None else argv)
    if shutil.which("wrk") is None:
        print(hb.wrk_missing_message(), file=sys.stderr)
        return 2
    hb.prepare_process()
    started = time.time()
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    output = args.output or hb.RESULTS_DIR / f"retention-{run_id}{'-quick' if args.quick else ''}.json"
    remove_stale_work_dirs()
    work_dir = Path(tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}-"))
    print(f"settings: {settings.__dict__}; fill {fill_size(settings):,} B per stream in "
          f"{fill_chunk(settings):,} B appends; "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    try:
        cases = asyncio.run(run_all(settings, work_dir, run_id))
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
        return 1
    finally:
        hb.finish(work_dir, args.keep_logs)
    names = [variant_name(v, settings.max_age) for v in (None, *settings.max_sizes)]
    rows = hb.summarize(cases, names, PEER)
    hb.print_table(rows, names, PEER)
    found = findings(cases, rows, settings)
    print_findings(found, settings)
    environment = hb.environment([])
    environment.pop("targets", None)
    doc = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": time.time() - started, "load_average_end": os.getloadavg(),
        "settings": settings.__dict__, "fill_bytes_per_stream": fill_size(settings),
        "fill_append_bytes": fill_chunk(settings),
        "environment": environment, "findings": found, "summary": rows,
        "samples": {c.key: c.samples for c in cases},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
