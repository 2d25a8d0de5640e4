"""The real daemon under a stand-in systemd: notify messages, watchdog, health, metrics.

The test plays the service manager: it binds the $NOTIFY_SOCKET datagram socket,
starts `durable-streams-server run` with $WATCHDOG_USEC, and sends SIGHUP/SIGTERM
the way `systemctl reload/stop` would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

COMMAND = Path(sys.executable).parent / "durable-streams-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceManager:
    """Receives sd_notify datagrams; keeps WATCHDOG=1 pings apart from state changes."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="ds-sd-", dir="/tmp")  # sun_path is short
        self.path = os.path.join(self.directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.watchdog_pings = 0

    async def next_state(self, timeout: float = 20) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        while True:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout)
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            if fields == {"WATCHDOG": "1"}:
                self.watchdog_pings += 1
                continue
            return fields

    async def wait_for_pings(self, count: int, timeout: float = 20) -> None:
        loop = asyncio.get_running_loop()
        while self.watchdog_pings < count:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout)
            assert data == b"WATCHDOG=1", data  # no state change expected meanwhile
            self.watchdog_pings += 1

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.directory)


@pytest.fixture
def manager():
    m = ServiceManager()
    yield m
    m.close()


def _series(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_daemon_speaks_sd_notify_and_serves_health_and_metrics(manager, tmp_path):
    if not COMMAND.exists():
        pytest.skip(f"{COMMAND} is not installed (pip install -e .)")
    port, admin_port = _free_port(), _free_port()
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(
        "{\n"
        f"\tadmin 127.0.0.1:{admin_port}\n"
        "\tmetrics\n"
        "\tgrace_period 2s\n"
        "}\n\n"
        f"http://127.0.0.1:{port} {{\n"
        "\tbind 127.0.0.1\n"
        "\troute /v1/stream/* {\n"
        f"\t\tdurable_streams {{\n\t\t\tdata_dir {tmp_path / 'data'}\n\t\t}}\n"
        "\t}\n"
        "}\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": manager.path, "WATCHDOG_USEC": "200000"}
    env.pop("WATCHDOG_PID", None)
    log = tmp_path / "server.log"
    with log.open("wb") as log_file:
        server = await asyncio.create_subprocess_exec(
            str(COMMAND), "run", "--config", str(caddyfile), env=env, stdout=log_file, stderr=log_file
        )
    base, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    try:
        # Start-up: STATUS while opening stores, then READY=1 once listening.
        state = await manager.next_state()
        while "READY" not in state:
            assert "STOPPING" not in state, log.read_text()
            state = await manager.next_state()
        assert state["READY"] == "1" and "STATUS" in state

        async with aiohttp.ClientSession() as http:
            # READY=1 means the listeners and the admin endpoint answer now.
            async with http.get(f"{admin}/readyz") as resp:
                assert resp.status == 200
                assert (await resp.json())["status"] == "ready"
            async with http.get(f"{admin}/healthz") as resp:
                assert resp.status == 200

            stream = f"{base}/v1/stream/ops"
            async with http.put(stream, headers={"Content-Type": "text/plain"}, data=b"abc") as resp:
                assert resp.status == 201
            async with http.post(stream, headers={"Content-Type": "text/plain"}, data=b"def") as resp:
                assert resp.status == 204
            async with http.get(stream, params={"offset": "-1"}) as resp:
                assert await resp.read() == b"abcdef"

            async with http.get(f"{admin}/metrics") as resp:
                assert resp.status == 200
                series = _series(await resp.text())
            create = ("durable_streams_http_requests_total",
                      (("method", "PUT"), ("operation", "create"), ("status_class", "2xx")))
            append = ("durable_streams_http_requests_total",
                      (("method", "POST"), ("operation", "append"), ("status_class", "2xx")))
            assert series[create] == 1 and series[append] == 1
            # The protocol, engine and store feed theirs through the same object.
            assert series[("durable_streams_appended_bytes_total", ())] == 6
            assert series[("durable_streams_served_bytes_total", ())] == 6
            assert series[("durable_streams_streams", ())] == 1
            # Appended bytes reach their data file once the store's writer has been idle
            # for a moment (staged writes); the file then stays open in the pool.
            for _ in range(100):
                if series[("durable_streams_store_open_files", ())] >= 1:
                    break
                await asyncio.sleep(0.05)
                async with http.get(f"{admin}/metrics") as resp:
                    series = _series(await resp.text())
            assert series[("durable_streams_store_open_files", ())] >= 1
            assert series[("durable_streams_store_flush_duration_seconds_count", ())] >= 1
            assert series[("durable_streams_store_flush_batch_size_sum", ())] >= 2  # create + append
            assert series[("durable_streams_recovery_duration_seconds", ())] > 0
            assert not any("/v1/stream" in str(key) for key in series)

            # The watchdog pings from the event loop (every 0.1 s here).
            await manager.wait_for_pings(2)

            # systemctl reload: RELOADING=1 with a timestamp, then READY=1 again.
            server.send_signal(signal.SIGHUP)
            reloading = await manager.next_state()
            assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
            assert (await manager.next_state())["READY"] == "1"
            async with http.get(f"{admin}/readyz") as resp:
                assert resp.status == 200

        # systemctl stop: STOPPING=1, then a clean exit.
        server.send_signal(signal.SIGTERM)
        assert (await manager.next_state())["STOPPING"] == "1"
        assert await asyncio.wait_for(server.wait(), 30) == 0, log.read_text()
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
