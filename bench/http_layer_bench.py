"""The HTTP layer alone, ours (llhttp through httptools, http/) against aiohttp's
low-level server (`aiohttp.web.Server`), in one run: server CPU per request under `wrk`.

Both run on uvloop in a subprocess with the same two handlers: `GET /` answered with an
empty 200, and `POST /` whose 22-byte body is read and answered 204 (the shape of an
append, without the protocol). Rounds alternate ours/aiohttp so both share the machine's
noise. The difference between the two is what the choice of framing layer costs on every
request, whatever the handler does after it.

    .venv/bin/python bench/http_layer_bench.py [--seconds 5] [--rounds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile

SERVE = r'''
import asyncio, socket, sys
import uvloop
kind, port = sys.argv[1], int(sys.argv[2])

async def main():
    if kind == "ours":
        from durable_streams.server.http import HTTPServer, Response
        async def handle(request):
            if request.method == "POST":
                await request.read()
                return Response(status=204)
            return Response(status=200)
        server = HTTPServer(handle)
        sock = socket.socket(); sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port)); sock.listen(1024); sock.setblocking(False)
        await server.listen(sock)
    else:
        from aiohttp import web
        async def handle(request):
            if request.method == "POST":
                await request.read()
                return web.Response(status=204)
            return web.Response(status=200)
        server = web.Server(handle, access_log=None)
        await asyncio.get_running_loop().create_server(server, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
'''

POST_LUA = 'wrk.method = "POST"\nwrk.body = "0123456789abcdefghijkl"\n' \
           'wrk.headers["Content-Type"] = "application/octet-stream"\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind: str, method: str, seconds: float, connections: int, lua: str) -> tuple[float, float]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, kind, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        script = ["-s", lua] if method == "POST" else []
        url = f"http://127.0.0.1:{port}/"
        subprocess.run(["wrk", "-t1", "-c4", "-d1s", *script, url], capture_output=True, check=True)  # warm up
        args = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", *script, url]
        before = cpu_seconds(proc.pid)
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        used = cpu_seconds(proc.pid) - before
        requests = int(next(line for line in out.splitlines() if "requests in" in line).split()[0])
        if "Non-2xx" in out or "Socket errors" in out:
            raise RuntimeError(f"{kind} {method}: errors under load:\n{out}")
        return requests / seconds, used / requests * 1e6
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    opts = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(POST_LUA)
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(opts.rounds):
        for method in ("GET", "POST"):
            for kind in ("ours", "aiohttp"):
                results.setdefault((kind, method), []).append(
                    measure(kind, method, opts.seconds, opts.connections, f.name))
    os.unlink(f.name)
    print(f"{'layer':8} {'request':8} {'req/s':>9} {'CPU us/req':>11}   (median of {opts.rounds} rounds)")
    medians = {}
    for (kind, method), rows in sorted(results.items(), key=lambda item: (item[0][1], item[0][0] != "ours")):
        rate = sorted(r for r, _ in rows)[len(rows) // 2]
        cpu = sorted(c for _, c in rows)[len(rows) // 2]
        medians[kind, method] = cpu
        print(f"{kind:8} {method:8} {rate:9.0f} {cpu:11.1f}")
    for method in ("GET", "POST"):
        print(f"aiohttp.web.Server / ours, CPU per request, {method}: "
              f"{medians['aiohttp', method] / medians['ours', method]:.2f}x")


if __name__ == "__main__":
    main()
