"""Issue 11: catch-up reads of a big file-backed stream are streamed from the store, so
memory stays bounded however many readers there are. 20 concurrent readers of a 256 MiB
stream (each GET ?offset=-1 answers the whole stream in one response) must raise the
daemon's peak RSS (VmHWM) by less than 64 MiB over its baseline.

The daemon is the real `durable-streams-server run` process. The stream is written first,
then the daemon is stopped cleanly and started again, so the baseline is not inflated by
the writes; VmHWM is reset (/proc/PID/clear_refs = 5) right before the readers start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

COMMAND = Path(sys.executable).parent / "durable-streams-server"
STREAM = "/v1/stream/big"
MiB = 1 << 20
STREAM_BYTES = 256 * MiB
POST_BYTES = 16 * MiB
READERS = 20
LIMIT = 64 * MiB


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class Daemon:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    async def start(self, http: aiohttp.ClientSession) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        caddyfile = self.tmp_path / "Caddyfile"
        caddyfile.write_text(
            "{\n\tadmin off\n\tauto_https off\n}\n\n"
            f"http://127.0.0.1:{self.port} {{\n\tbind 127.0.0.1\n"
            "\troute /v1/stream/* {\n\t\tdurable_streams {\n"
            f"\t\t\tdata_dir {self.tmp_path / 'data'}\n\t\t}}\n\t}}\n}}\n"
        )
        self.starts += 1
        self.log = self.tmp_path / f"server-{self.starts}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([str(COMMAND), "run", "--config", str(caddyfile)],
                                         stdout=out, stderr=out)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"server exited:\n{self.log.read_text()[-3000:]}"
            try:
                async with http.head(f"{self.base}/v1/stream/__ready_probe") as resp:
                    if resp.status == 404:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, f"server not ready:\n{self.log.read_text()[-3000:]}"
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=60) == 0, self.log.read_text()[-3000:]
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def _read_all(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    total = 0
    async with http.get(url, params={"offset": "-1"}) as resp:
        assert resp.status == 200, await resp.text()
        async for chunk in resp.content.iter_chunked(256 << 10):
            total += len(chunk)  # discarded
        return total, dict(resp.headers)


async def test_concurrent_catch_up_readers_keep_memory_bounded(tmp_path):
    daemon = Daemon(tmp_path)
    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=READERS + 5)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        try:
            await daemon.start(http)
            url = daemon.base + STREAM
            async with http.put(url, headers={"Content-Type": "application/octet-stream"}) as resp:
                assert resp.status == 201
            chunk = os.urandom(POST_BYTES)
            for _ in range(STREAM_BYTES // POST_BYTES):
                async with http.post(url, data=chunk, headers={"Content-Type": "application/octet-stream"}) as resp:
                    assert resp.status == 204, await resp.text()
            daemon.stop()

            await daemon.start(http)
            url = daemon.base + STREAM
            pid = daemon.proc.pid
            baseline = _status_kib(pid, "VmRSS") * 1024
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := current RSS
            assert _status_kib(pid, "VmHWM") * 1024 <= baseline + 8 * MiB

            results = await asyncio.gather(*(_read_all(http, url) for _ in range(READERS)))
            peak = _status_kib(pid, "VmHWM") * 1024
            for total, headers in results:
                assert total == STREAM_BYTES
                assert int(headers["Content-Length"]) == STREAM_BYTES
                assert headers["Stream-Up-To-Date"] == "true"
            growth = peak - baseline
            print(f"\n{READERS} concurrent catch-up readers of {STREAM_BYTES // MiB} MiB (file store): "
                  f"baseline RSS {baseline / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB, "
                  f"growth {growth / MiB:.1f} MiB (limit {LIMIT // MiB} MiB)")
            assert growth < LIMIT
            daemon.stop()
        finally:
            daemon.kill()
