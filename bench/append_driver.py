"""The append path in one process, without sockets or a load generator: the server's own
Python work per request, steady enough to count instructions with callgrind.

The real runtime (ServerApp from the same Caddyfile as bench/http_bench.py's `ours`)
serves connections whose transport is a stand-in that records writes. Each round feeds one
request to each of `--streams` connections (one stream each, like wrk's 32 connections on
32 streams) and runs the loop until every one is answered; a durable store's writer
thread does its fsyncs as usual.

    .venv/bin/python bench/append_driver.py [--mode append|now] [--store mem|file] [--requests N]

It prints CPU seconds per request (process time: every thread). For instruction counts,
run it twice under callgrind with different --requests and divide the difference:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python \
        bench/append_driver.py --requests 2000      # then 12000: (I2 - I1) / 10000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

from durable_streams.server.config import load_config
from durable_streams.server.runtime.app import ServerApp, _new_loop

BODY = b"0123456789abcdefghijkl"  # 22 bytes, as wrk_streams.lua


class RecordingTransport(asyncio.Transport):
    """What a Connection needs of a transport; a write completes the request."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.writes = 0
        self.last = b""
        self.answered: asyncio.Future | None = None
        self.closed = False

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data) -> None:
        self.writes += 1
        self.last = bytes(data)
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(None)

    def writelines(self, parts) -> None:
        self.write(b"".join(parts))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass


def caddyfile(data_dir: str | None) -> str:
    store = f"data_dir {data_dir}\n                max_file_handles 512\n" if data_dir else ""
    return f"""{{
    admin off
    auto_https off
}}
http://127.0.0.1:0 {{
    bind 127.0.0.1
    route /v1/stream/* {{
        durable_streams {{
            {store}long_poll_timeout 2s
        }}
    }}
}}
"""


async def drive(args: argparse.Namespace, data_dir: str | None) -> None:
    app = ServerApp(load_config(caddyfile(data_dir)))
    await app.start()
    loop = asyncio.get_running_loop()
    conns = []
    try:
        http = app.listeners[0].http
        for i in range(args.streams):
            transport = RecordingTransport(loop)
            conn = http._protocol()
            conn.connection_made(transport)
            conns.append((conn, transport, f"/v1/stream/drv/s{i}".encode()))

        async def round_of(requests: list[bytes]) -> None:
            waits = []
            for (conn, transport, _), request in zip(conns, requests):
                transport.answered = loop.create_future()
                waits.append(transport.answered)
                loop.call_soon(conn.data_received, request)  # as a transport calls it: outside any task
            await asyncio.gather(*waits)
            for _, transport, _ in conns:
                status = transport.last[9:12]
                if status[:1] != b"2":
                    sys.exit(f"unexpected answer: {transport.last[:200]!r}")

        await round_of([b"PUT %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                        b"Content-Length: 0\r\n\r\n" % path for _, _, path in conns])
        if args.mode == "append":
            requests = [b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/octet-stream\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (path, len(BODY), BODY) for _, _, path in conns]
        else:
            requests = [b"GET %s?offset=now HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n" % path
                        for _, _, path in conns]
        rounds = max(1, args.requests // args.streams)
        for _ in range(max(1, rounds // 10)):  # warm-up
            await round_of(requests)
        if args.show:
            print(conns[0][1].last.decode("latin-1"))
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(rounds):
            await round_of(requests)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        n = rounds * args.streams
        print(f"{args.store} {args.mode}: {n} requests, {cpu / n * 1e6:.1f} us CPU/request, "
              f"{wall / n * 1e6:.1f} us wall/request")
    finally:
        for conn, _, _ in conns:
            conn.connection_lost(None)
        await app.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("append", "now"), default="append")
    parser.add_argument("--store", choices=("mem", "file"), default="mem")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--show", action="store_true", help="print one response first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ds-append-driver-") as tmp:
        data_dir = os.path.join(tmp, "data") if args.store == "file" else None
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(drive(args, data_dir))


if __name__ == "__main__":
    main()
