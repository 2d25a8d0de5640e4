"""Webhook subscription benchmark: wake latency and server CPU per delivery, against Node.

    .venv/bin/python bench/subscription_bench.py              # about 2 minutes
    .venv/bin/python bench/subscription_bench.py --quick      # smoke run, ~40 s
    .venv/bin/python bench/subscription_bench.py --rate 200 --seconds 10 --rounds 2

Targets, all started at once and measured in the same run, in alternating order per round:
    ours-mem    our server, memory store, `subscriptions` on
    ours-file   our server, file store (data_dir), `subscriptions` on
    node        the Node reference server (bench/node, @durable-streams/server) in memory,
                with `webhooks: true` (bench/node/serve.mjs has no flag for it, so this
                benchmark writes its own five-line launcher into its work dir)

Each target gets 100 streams `events/s<i>`, each with its own webhook subscription
(`streams: ["events/s<i>"]`), all to one receiver. The receiver is a separate process (an
aiohttp server, `python -c`), so its CPU is not the benchmark client's nor the server's;
it records the receive time (CLOCK_MONOTONIC, shared by all processes) and answers
`{"done": true}`, which auto-acks the wake, so the next append makes a new wake.

One measurement = a paced, open-loop run of appends (--rate per second for --seconds) to
random streams; the send time of each append is taken just before the request goes out.
An append is matched to the first delivery of its subscription received after it was
sent whose `tail_offset` for the stream is >= the append's Stream-Next-Offset: a wake in
flight coalesces later appends, so their latency includes waiting for it to end.
  wake p50/p99   append sent -> webhook received
  CPU/delivery   server CPU (utime+stime of the server's process tree, /proc) over the
                 window from the first append to the last delivery, / deliveries
  CPU/append     the same appends to 100 streams with no subscription (baseline phase,
                 --baseline-seconds): what the append path alone costs
  net CPU/deliv  (CPU with subscriptions - baseline CPU per append x appends) / deliveries:
                 the cost of the subscription machinery itself, per delivery
Figures are the median over rounds; ratios are ours/node from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import http_bench as hb  # noqa: E402  (server processes, CPU accounting, helpers)

HOST = hb.HOST
STREAM_ROOT = hb.STREAM_ROOT
SUBS_ROOT = f"{STREAM_ROOT}/__ds/subscriptions"


@dataclass(frozen=True)
class Settings:
    subscriptions: int
    rate: float
    seconds: float
    baseline_seconds: float
    rounds: int
    append_bytes: int
    max_in_flight: int
    drain_timeout: float
    lease_ttl_ms: int
    seed: int
    warmup_seconds: float = 2.0
    # what hb.ServerProcess reads
    long_poll_ms: int = 2000
    file_handles: int = 512


FULL = dict(seconds=10.0, baseline_seconds=5.0, rounds=2)
QUICK = dict(seconds=3.0, baseline_seconds=2.0, rounds=1)


# --------------------------------------------------------------------------------------
# Processes

NODE_LAUNCHER = """\
// Written by bench/subscription_bench.py: DurableStreamTestServer in memory, webhooks on.
import { createRequire } from "node:module"
const [nodeDir, host, port] = process.argv.slice(2)
const { DurableStreamTestServer } = createRequire(nodeDir + "/package.json")("@durable-streams/server")
const server = new DurableStreamTestServer({ host, port: Number(port), webhooks: true })
let stopping = false
async function shutdown() {
  if (stopping) return
  stopping = true
  setTimeout(() => process.exit(0), 3000).unref()
  try { await server.stop() } catch {}
  process.exit(0)
}
process.on("SIGTERM", shutdown)
process.on("SIGINT", shutdown)
process.stdin.on("end", shutdown)
process.stdin.on("error", shutdown)
process.stdin.resume()
process.stdout.write(`READY ${await server.start()}\\n`)
"""


class SubsServer(hb.ServerProcess):
    """Our server with `subscriptions` on (memory or file store), or Node with webhooks."""

    def _command(self, port: int) -> list[str]:
        if self.spec.kind == "node":
            launcher = self.work_dir / "node-webhooks.mjs"
            launcher.write_text(NODE_LAUNCHER)
            return ["node", str(launcher), str(hb.NODE_DIR), HOST, str(port)]
        if self.durable:
            self.data_dir = tempfile.mkdtemp(prefix=f"{self.spec.name}-data-", dir=self.work_dir)
        text = hb.ours_caddyfile(port, self.data_dir, self.long_poll_ms, self.file_handles)
        marker = "                long_poll_timeout"
        assert marker in text, "hb.ours_caddyfile changed shape"
        text = text.replace(marker, "                subscriptions\n" + marker, 1)
        cfg = self.work_dir / f"{self.spec.name}-{port}.Caddyfile"
        cfg.write_text(text)
        exe = Path(sys.executable).parent / "durable-streams-server"
        return [str(exe) if exe.exists() else "durable-streams-server", "run", "--config", str(cfg)]


RECEIVER_SOURCE = r"""
import asyncio, json, sys, time
from aiohttp import web
try:
    import uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
except ImportError:
    pass
records = {}   # target -> [(t, subscription_id, {path: tail_offset})]
tails = {}     # target -> {subscription_id: {path: max tail_offset}}
bad = {}       # target -> deliveries without a signature or with an unreadable body
DONE = b'{"done": true}'

async def hook(request):
    t = time.monotonic()
    name = request.match_info["name"]
    raw = await request.read()
    try:
        body = json.loads(raw)
        sid = body["subscription_id"]
        got = {s["path"].lstrip("/"): s["tail_offset"] for s in body["streams"]}
        if "Webhook-Signature" not in request.headers:
            raise KeyError("Webhook-Signature")
    except (ValueError, KeyError, TypeError):
        bad[name] = bad.get(name, 0) + 1
        return web.Response(body=DONE, content_type="application/json")
    records.setdefault(name, []).append((t, sid, got))
    mine = tails.setdefault(name, {}).setdefault(sid, {})
    for path, tail in got.items():
        if tail > mine.get(path, ""):
            mine[path] = tail
    return web.Response(body=DONE, content_type="application/json")

async def get_tails(request):
    name = request.match_info["name"]
    return web.json_response({"tails": tails.get(name, {}), "count": len(records.get(name, []))})

async def take(request):
    name = request.match_info["name"]
    out = records.pop(name, [])
    return web.json_response({"records": out, "bad": bad.pop(name, 0)})

app = web.Application()
app.router.add_post("/hook/{name}", hook)
app.router.add_get("/tails/{name}", get_tails)
app.router.add_get("/take/{name}", take)
app.router.add_get("/ping", lambda r: web.Response(text="ok"))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


class Receiver:
    def __init__(self, work_dir: Path):
        self.log_path = work_dir / "receiver.log"
        self.proc: subprocess.Popen | None = None
        self.base_url = ""

    async def start(self, port: int) -> None:
        self.base_url = f"http://{HOST}:{port}"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", RECEIVER_SOURCE, str(port)], stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=hb._die_with_parent)
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"receiver exited: {self.log_path.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    async with s.get(f"{self.base_url}/ping") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError("receiver did not answer")

    def cpu_seconds(self) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        return hb.proc_tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                proc.kill()


# --------------------------------------------------------------------------------------
# Measurement


def stream_path(i: int, plain: bool = False) -> str:
    return f"{'plain' if plain else 'events'}/s{i}"


async def setup_target(server: SubsServer, receiver: Receiver, session: aiohttp.ClientSession,
                       settings: Settings) -> None:
    n = settings.subscriptions
    urls = [f"{server.base_url}{STREAM_ROOT}/{stream_path(i, plain)}"
            for plain in (False, True) for i in range(n)]
    await hb.create_streams(session, urls, hb.BINARY)
    limit = asyncio.Semaphore(16)

    async def subscribe(i: int) -> None:
        body = {"type": "webhook", "streams": [stream_path(i)],
                "webhook": {"url": f"{receiver.base_url}/hook/{server.spec.name}"},
                "lease_ttl_ms": settings.lease_ttl_ms}
        async with limit, session.put(f"{server.base_url}{SUBS_ROOT}/bench-s{i}", json=body) as resp:
            text = await resp.text()
            if resp.status not in (200, 201):
                raise RuntimeError(f"{server.spec.name}: PUT subscription bench-s{i} -> "
                                   f"{resp.status}: {text[:300]}")

    await asyncio.gather(*(subscribe(i) for i in range(n)))


async def paced_appends(server: SubsServer, session: aiohttp.ClientSession, settings: Settings,
                        seconds: float, plain: bool, rng: random.Random) -> tuple[list, int]:
    """Open-loop appends at settings.rate; [(stream index, t_send, next_offset)], errors."""
    total = max(1, round(settings.rate * seconds))
    picks = [rng.randrange(settings.subscriptions) for _ in range(total)]
    body = b"x" * settings.append_bytes
    headers = {"Content-Type": hb.BINARY}
    limit = asyncio.Semaphore(settings.max_in_flight)
    done: list[tuple[int, float, str]] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        url = f"{server.base_url}{STREAM_ROOT}/{stream_path(i, plain)}"
        async with limit:
            t = time.monotonic()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    offset = resp.headers.get("Stream-Next-Offset")
                    if resp.status not in (200, 204) or not offset:
                        errors += 1
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                errors += 1
                return
        done.append((i, t, offset))

    tasks = []
    start = time.monotonic()
    for k, i in enumerate(picks):
        delay = start + k / settings.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return done, errors


async def wait_drained(receiver: Receiver, session: aiohttp.ClientSession, name: str,
                       appends: list, timeout: float) -> list[str]:
    """Wait until the receiver has seen every append's offset; the subscriptions still behind."""
    want: dict[str, str] = {}
    for i, _, offset in appends:
        if offset > want.get(f"bench-s{i}", ""):
            want[f"bench-s{i}"] = offset
    deadline = time.monotonic() + timeout
    while True:
        async with session.get(f"{receiver.base_url}/tails/{name}") as resp:
            tails = (await resp.json())["tails"]
        behind = [sid for sid, offset in want.items()
                  if tails.get(sid, {}).get(stream_path(int(sid[len("bench-s"):])), "") < offset]
        if not behind or time.monotonic() > deadline:
            return behind
        await asyncio.sleep(0.02)


def match_latencies(appends: list, records: list) -> tuple[list[float], int]:
    """Seconds from each append's send to the first delivery covering it; unmatched count."""
    by_sub: dict[str, list[tuple[float, str]]] = {}
    for t, sid, tails in sorted(records, key=lambda r: r[0]):
        i = int(sid[len("bench-s"):])
        by_sub.setdefault(sid, []).append((t, tails.get(stream_path(i), "")))
    latencies, unmatched = [], 0
    for i, t_send, offset in appends:
        deliveries = by_sub.get(f"bench-s{i}", [])
        k = bisect.bisect_left(deliveries, (t_send, ""))
        while k < len(deliveries) and deliveries[k][1] < offset:
            k += 1
        if k == len(deliveries):
            unmatched += 1
        else:
            latencies.append(deliveries[k][0] - t_send)
    return latencies, unmatched


def log_problems(server: SubsServer) -> list[str]:
    with contextlib.suppress(OSError):
        lines = server.log_path.read_text(errors="replace").splitlines()
        return [ln for ln in lines if "input is not formatted" not in ln and any(w in ln.lower() for w in
                                          ("error", "traceback", "warn", "fail", "exception"))]
    return []


async def measure(server: SubsServer, receiver: Receiver, session: aiohttp.ClientSession,
                  settings: Settings, round_no: int) -> dict:
    name = server.spec.name
    result: dict = {"round": round_no}
    # Baseline: same rate to streams nobody subscribed to.
    if settings.baseline_seconds > 0:
        with hb.CpuWindow(server) as base:
            plain, errors = await paced_appends(server, session, settings,
                                                settings.baseline_seconds, True,
                                                random.Random(settings.seed + 1000 + round_no))
        result["baseline_appends"] = len(plain)
        result["baseline_cpu_us_per_append"] = (base.server_cpu / len(plain) * 1e6
                                                if base.server_cpu is not None and plain else None)
        result["errors"] = errors
    async with session.get(f"{receiver.base_url}/take/{name}") as resp:
        stale = (await resp.json())["records"]  # anything left over from an earlier round
    result["stale_deliveries"] = len(stale)
    recv0 = receiver.cpu_seconds()
    with hb.CpuWindow(server) as win:
        appends, errors = await paced_appends(server, session, settings, settings.seconds, False,
                                              random.Random(settings.seed + round_no))
        behind = await wait_drained(receiver, session, name, appends, settings.drain_timeout)
        drained = not behind
    recv1 = receiver.cpu_seconds()
    async with session.get(f"{receiver.base_url}/take/{name}") as resp:
        got = await resp.json()
    records = got["records"]
    latencies, unmatched = match_latencies(appends, records)
    deliveries = len(records)
    result.update({
        "appends": len(appends), "errors": result.get("errors", 0) + errors,
        "deliveries": deliveries, "bad_deliveries": got["bad"], "unmatched": unmatched,
        "drained": drained, "window_s": win.elapsed,
        "p50_ms": hb._ms(hb.percentile(latencies, 50)),
        "p99_ms": hb._ms(hb.percentile(latencies, 99)),
        "max_ms": hb._ms(max(latencies)) if latencies else None,
        "server_cpu_s": win.server_cpu,
        "cpu_us_per_delivery": (win.server_cpu / deliveries * 1e6
                                if win.server_cpu is not None and deliveries else None),
        "server_cpu_util": win.server_cpu / win.elapsed if win.server_cpu is not None else None,
        "receiver_cpu_us_per_delivery": ((recv1 - recv0) / deliveries * 1e6
                                         if recv0 is not None and recv1 is not None and deliveries
                                         else None),
        "client_cpu_util": win.client_cpu / win.elapsed,
    })
    if behind:  # what the server says about subscriptions whose last append never woke them
        last = {}
        for i, _, offset in appends:
            last[f"bench-s{i}"] = max(offset, last.get(f"bench-s{i}", ""))
        result["behind"] = behind
        result["behind_state"] = {}
        for sid in behind[:3]:
            async with session.get(f"{server.base_url}{SUBS_ROOT}/{sid}") as resp:
                state = await resp.json()
            result["behind_state"][sid] = {
                "last_append_next_offset": last[sid], "status": state.get("status"),
                "acked": [s.get("acked_offset") for s in state.get("streams", [])]}
    base_us = result.get("baseline_cpu_us_per_append")
    if base_us is not None and win.server_cpu is not None and deliveries:
        result["net_cpu_us_per_delivery"] = (win.server_cpu * 1e6 - base_us * len(appends)) / deliveries
    return result


METRICS = (
    ("p50_ms", "wake p50 ms"),
    ("p99_ms", "wake p99 ms"),
    ("cpu_us_per_delivery", "srv CPU us/delivery"),
    ("net_cpu_us_per_delivery", "net CPU us/delivery"),
    ("baseline_cpu_us_per_append", "srv CPU us/append (no subs)"),
    ("deliveries", "deliveries"),
    ("appends", "appends"),
    ("server_cpu_util", "server CPU util"),
    ("receiver_cpu_us_per_delivery", "receiver CPU us/delivery"),
)


def median(samples: list[dict], key: str):
    values = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(values) if values else None


def print_summary(samples: dict[str, list[dict]], names: list[str], peer: str) -> dict:
    ours = [n for n in names if n != peer]
    header = f"{'metric':<30}" + "".join(f"{n:>12}" for n in names) + "".join(
        f"{n + '/' + peer:>18}" for n in ours)
    print("\n" + header)
    print("-" * len(header))
    summary = {}
    for key, label in METRICS:
        vals = {n: median(samples.get(n, []), key) for n in names}
        summary[key] = vals
        row = f"{label:<30}" + "".join(f"{hb.fmt(vals[n]):>12}" for n in names)
        for n in ours:
            ratio = (vals[n] / vals[peer]) if vals[n] is not None and vals[peer] else None
            row += f"{(f'{ratio:.2f}x' if ratio is not None else '-'):>18}"
        print(row)
    print("\n(median over rounds; ratios < 1 mean ours is faster / cheaper than the peer)")
    return summary


def brief(r: dict) -> str:
    flags = [f"{k}={r[k]}" for k in ("errors", "unmatched", "bad_deliveries", "stale_deliveries")
             if r.get(k)]
    if not r.get("drained", True):
        flags.append(f"NOT DRAINED: {len(r.get('behind', ()))} subscriptions never woken for "
                     f"their last append: {r.get('behind_state')}")
    return (f"appends={r.get('appends')} deliveries={r.get('deliveries')} "
            f"p50={hb.fmt(r.get('p50_ms'))}ms p99={hb.fmt(r.get('p99_ms'))}ms "
            f"cpu/deliv={hb.fmt(r.get('cpu_us_per_delivery'))}us "
            f"net={hb.fmt(r.get('net_cpu_us_per_delivery'))}us "
            f"base/append={hb.fmt(r.get('baseline_cpu_us_per_append'))}us "
            + " ".join(flags))


async def run(settings: Settings, work_dir: Path, names: list[str]) -> dict[str, list[dict]]:
    specs = {"ours-mem": (hb.TargetSpec("ours-mem", "ours"), False),
             "ours-file": (hb.TargetSpec("ours-file", "ours"), True),
             "node": (hb.TargetSpec("node", "node"), False)}
    ports = hb.free_ports(len(names) + 1)
    receiver = Receiver(work_dir)
    servers: list[SubsServer] = []
    samples: dict[str, list[dict]] = {}
    try:
        await receiver.start(ports[0])
        for name, port in zip(names, ports[1:]):
            spec, durable = specs[name]
            server = SubsServer(spec, work_dir, durable, settings)
            await server.start(port)
            servers.append(server)
        hb.progress(f"started receiver and {', '.join(names)}")
        async with hb.new_session(settings.max_in_flight + 8) as session:
            for server in servers:
                await setup_target(server, receiver, session, settings)
            hb.progress(f"{settings.subscriptions} streams + webhook subscriptions on each target")
            if settings.warmup_seconds > 0:  # JIT, connection pools, caches; not measured
                for server in servers:
                    warm, _ = await paced_appends(server, session, settings,
                                                  settings.warmup_seconds, False,
                                                  random.Random(settings.seed - 1))
                    await wait_drained(receiver, session, server.spec.name, warm,
                                       settings.drain_timeout)
                    async with session.get(f"{receiver.base_url}/take/{server.spec.name}") as resp:
                        await resp.read()
                hb.progress(f"warmed up ({settings.warmup_seconds:g} s of appends per target)")
            for r, order in hb.round_orders(servers, settings.rounds):
                for server in order:
                    try:
                        result = await measure(server, receiver, session, settings, r)
                    except Exception as exc:  # keep the other targets' figures
                        result = {"round": r, "failed": f"{type(exc).__name__}: {exc}"}
                    samples.setdefault(server.spec.name, []).append(result)
                    hb.progress(f"{server.spec.name:<10} r{r}  "
                                + (f"FAILED {result['failed']}" if "failed" in result
                                   else brief(result)))
        for server in servers:
            problems = log_problems(server)
            if problems:
                print(f"\n{server.spec.name}: {len(problems)} suspicious log lines, e.g.:\n  "
                      + "\n  ".join(p[:300] for p in problems[:5]))
    finally:
        for server in servers:
            server.stop()
        receiver.stop()
    return samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run")
    p.add_argument("--targets", default="ours-mem,ours-file,node",
                   help="subset of ours-mem,ours-file,node (node is the peer)")
    p.add_argument("--subscriptions", type=int, default=100, help="streams = subscriptions")
    p.add_argument("--rate", type=float, default=200.0, help="appends per second")
    p.add_argument("--seconds", type=float, help="append window with subscriptions (full 10)")
    p.add_argument("--baseline-seconds", type=float,
                   help="append window to unsubscribed streams (full 5; 0: skip)")
    p.add_argument("--rounds", type=int, help="alternating rounds (full 2)")
    p.add_argument("--append-bytes", type=int, default=64)
    p.add_argument("--max-in-flight", type=int, default=64, help="append requests in flight")
    p.add_argument("--drain-timeout", type=float, default=15.0)
    p.add_argument("--lease-ttl-ms", type=int, default=30000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--warmup-seconds", type=float, default=2.0,
                   help="unmeasured appends per target before the first round")
    p.add_argument("--output", type=Path, help="JSON path (default bench/results/subs-<utc>.json)")
    p.add_argument("--keep-logs", action="store_true", help="keep server logs and configs")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    base = QUICK if args.quick else FULL
    settings = Settings(
        subscriptions=args.subscriptions, rate=args.rate,
        seconds=args.seconds or base["seconds"],
        baseline_seconds=(args.baseline_seconds if args.baseline_seconds is not None
                          else base["baseline_seconds"]),
        rounds=args.rounds or base["rounds"], append_bytes=args.append_bytes,
        max_in_flight=args.max_in_flight, drain_timeout=args.drain_timeout,
        lease_ttl_ms=args.lease_ttl_ms, seed=args.seed, warmup_seconds=args.warmup_seconds)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    if not names or set(names) - {"ours-mem", "ours-file", "node"}:
        p.error("--targets: a subset of ours-mem,ours-file,node")
    if "node" in names and not (hb.NODE_DIR / "node_modules").exists():
        subprocess.run(["npm", "ci", "--silent"], cwd=hb.NODE_DIR, check=True)
    peer = "node" if "node" in names else names[-1]

    hb.prepare_process()
    started = time.time()
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    output = args.output or hb.RESULTS_DIR / f"subs-{run_id}{'-quick' if args.quick else ''}.json"
    work_dir = Path(tempfile.mkdtemp(prefix=f"ds-subs-bench-{os.getpid()}-"))
    print(f"targets: {', '.join(names)}; peer: {peer}; settings: {settings.__dict__}", flush=True)
    try:
        samples = asyncio.run(run(settings, work_dir, names))
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        hb.finish(work_dir, args.keep_logs)
    summary = print_summary(samples, names, peer)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "started_utc": run_id, "duration_s": time.time() - started, "peer": peer,
        "settings": settings.__dict__, "environment": hb.environment([]),
        "summary": summary, "samples": samples}, indent=2) + "\n")
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
