"""Benchmark: parse (and parse + map, when the config layer is importable) of a
realistic ~2,000-line Caddyfile. Prints the median of several runs.

    .venv/bin/python bench/parse_bench.py [--lines 2000] [--runs 7]

Target: parse + map under 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import time

from durable_streams.server.caddyfile import parse

GLOBAL = """\
{
\tadmin off
\tauto_https off
\tgrace_period 10s
\tshutdown_delay 1s
\tlog {
\t\toutput stderr
\t\tformat json
\t\tlevel INFO
\t}
\tservers {
\t\ttimeouts {
\t\t\tread_body 30s
\t\t\tread_header 10s
\t\t\tidle 2m
\t\t}
\t\tmax_header_size 16KB
\t}
}

(security_headers) {
\theader {
\t\tX-Content-Type-Options nosniff
\t\tX-Frame-Options DENY
\t\t-Server
\t}
}

(stream_route) {
\troute {args[0]}/* {
\t\trespond @unauthorized 401
\t\tdurable_streams {
\t\t\tdata_dir {args[1]}
\t\t\tmax_file_handles 200
\t\t\tlong_poll_timeout 30s
\t\t\tsse_reconnect_interval 1m
\t\t}
\t}
}
"""

SITE = """\
# tenant {n}: streams and a health endpoint
:{port} {{
\timport security_headers
\tlog
\t@unauthorized {{
\t\tnot header Authorization "Bearer tenant-{n}-secret"
\t}}
\trequest_body {{
\t\tmax_size 10MB
\t}}
\timport stream_route /v1/stream ./data/tenant-{n}
\troute /v2/stream/* {{
\t\tdurable_streams {{
\t\t\tdata_dir ./data/tenant-{n}-v2
\t\t}}
\t}}
\thandle /health {{
\t\trespond "ok" 200
\t}}
\thandle {{
\t\trespond "not found" 404
\t}}
}}

"""


def realistic_caddyfile(lines: int) -> str:
    parts = [GLOBAL]
    n = 0
    while sum(p.count("\n") for p in parts) < lines:
        parts.append(SITE.format(n=n, port=9000 + n))
        n += 1
    return "".join(parts)


def medians_ms(fn, runs: int) -> str:  # noqa: ANN001
    """Median wall-clock and CPU time (CPU time is what matters on a loaded machine)."""
    wall, cpu = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return f"median {statistics.median(wall) * 1000:7.1f} ms wall, {statistics.median(cpu) * 1000:7.1f} ms cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()

    text = realistic_caddyfile(args.lines)
    tree = parse(text)  # also builds the cached Lark parser, outside the timings
    print(f"input: {text.count(chr(10))} lines, {len(text)} bytes, {len(tree.blocks)} blocks")
    print(f"parse:        {medians_ms(lambda: parse(text), args.runs)}")
    try:
        from durable_streams.server.config import load_config
    except ImportError:
        print("parse + map:  skipped (durable_streams.server.config.load_config not importable)")
        return
    try:
        load_config(text)
    except Exception as exc:  # noqa: BLE001 - report, don't crash the benchmark
        print(f"parse + map:  skipped (load_config rejected the input: {exc})")
        return
    print(f"parse + map:  {medians_ms(lambda: load_config(text), args.runs)} (target < 500 ms)")


if __name__ == "__main__":
    main()
