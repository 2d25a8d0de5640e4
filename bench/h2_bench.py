"""Server CPU per small append, HTTP/2 against HTTP/1.1, both over TLS, on one server
process measured in the same run (interleaved rounds; the machine is noisy).

The load generator is h2load (Debian's nghttp2-client): one C client that speaks both
protocols (`--h1` for HTTP/1.1), so the client side is the same for every figure. wrk
has no HTTP/2. Each round POSTs a small body to 8 streams from C connections:

- h1:        C connections, one request at a time on each (the peer: ratios divide by it)
- h2:        C connections, one stream at a time on each (the same concurrency as h1)
- h2-mux:    one connection, C streams at once (what h2 is for: a browser's single connection)

The server is `durable-streams-server run` with a `tls internal` site (its local CA; h2load
does not verify certificates), a memory store. Its CPU is read from /proc (per-thread
schedstat) before and after each window.

    .venv/bin/python bench/h2_bench.py [--requests N] [--connections C] [--rounds R] [--body-bytes B]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_bench import proc_tree_cpu_seconds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / ".venv" / "bin" / "durable-streams-server"
STREAMS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(workdir: Path):
    port = free_port()
    config = workdir / "Caddyfile"
    config.write_text(
        "{\n\tadmin off\n"
        f"\thttp_port {free_port()}\n\tstorage file_system {workdir / 'storage'}\n"
        "\tlog {\n\t\tlevel ERROR\n\t}\n}\n"
        f"https://127.0.0.1:{port} {{\n\ttls internal\n"
        "\troute /v1/stream/* {\n\t\tdurable_streams\n\t}\n}\n")
    log = open(workdir / "server.log", "w")
    proc = subprocess.Popen([str(SERVER), "run", "--config", str(config)], stdout=log, stderr=log, cwd=workdir)
    try:
        deadline = time.monotonic() + 30
        ctx = ssl._create_unverified_context()
        while True:
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=2)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: {(workdir / 'server.log').read_text()[-2000:]}")
                time.sleep(0.1)
        for n in range(STREAMS):
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
            conn.request("PUT", f"/v1/stream/bench-{n}", headers={"Content-Type": "application/octet-stream"})
            assert conn.getresponse().status in (200, 201)
            conn.close()
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def run_h2load(port: int, mode: str, requests: int, connections: int, body: Path) -> tuple[int, float]:
    """(2xx responses, requests per second) of one h2load run."""
    clients, streams = (1, connections) if mode == "h2-mux" else (connections, 1)
    command = ["h2load", "-n", str(requests), "-c", str(clients), "-m", str(streams), "-d", str(body),
               "-H", "content-type: application/octet-stream"]
    if mode == "h1":
        command.append("--h1")
    command += [f"https://127.0.0.1:{port}/v1/stream/bench-{n}" for n in range(STREAMS)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    out = done.stdout
    protocol = re.search(r"Application protocol: (\S+)", out)
    expected = "http/1.1" if mode == "h1" else "h2"
    if done.returncode != 0 or protocol is None or protocol.group(1) != expected:
        raise SystemExit(f"h2load {mode} failed:\n{out}\n{done.stderr}")
    ok = int(re.search(r"status codes: (\d+) 2xx", out).group(1))
    per_second = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    return ok, per_second


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000, help="appends per window (default 20000)")
    parser.add_argument("--connections", type=int, default=16, help="concurrency C (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--body-bytes", type=int, default=64, help="bytes per append (default 64)")
    args = parser.parse_args(argv)
    if shutil.which("h2load") is None:
        print("h2load is missing: apt-get install nghttp2-client", file=sys.stderr)
        return 2
    modes = ["h1", "h2", "h2-mux"]
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    rate: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="h2-bench-") as tmp:
        workdir = Path(tmp)
        body = workdir / "body.bin"
        body.write_bytes(b"x" * args.body_bytes)
        with running_server(workdir) as (proc, port):
            for mode in modes:  # warm-up: connections, code paths, the allocator
                run_h2load(port, mode, max(1000, args.requests // 10), args.connections, body)
            for _ in range(args.rounds):
                for mode in modes:
                    before = proc_tree_cpu_seconds(proc.pid)
                    ok, per_second = run_h2load(port, mode, args.requests, args.connections, body)
                    after = proc_tree_cpu_seconds(proc.pid)
                    if ok != args.requests:
                        raise SystemExit(f"{mode}: {ok} of {args.requests} appends succeeded")
                    cpu[mode].append((after - before) / ok * 1e6)
                    rate[mode].append(per_second)
    print(f"small appends ({args.body_bytes} B) over TLS, {args.requests} per window, C={args.connections}, "
          f"{args.rounds} rounds, medians; peer: h1")
    print(f"{'':24}{'h1':>10}{'h2':>10}{'h2-mux':>10}{'h2/h1':>8}{'mux/h1':>8}")
    for label, table, unit in (("srv CPU us/append", cpu, "lower"), ("appends/s", rate, "higher")):
        med = {m: statistics.median(table[m]) for m in modes}
        print(f"{label:24}{med['h1']:>10.1f}{med['h2']:>10.1f}{med['h2-mux']:>10.1f}"
              f"{med['h2'] / med['h1']:>8.2f}{med['h2-mux'] / med['h1']:>8.2f}   {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
