"""Run the real `durable-streams-server` console script as a subprocess."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "durable-streams-server"


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def wait_for(predicate, timeout: float = 30) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass (a guard, not a timing test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def wait_ready(proc: subprocess.Popen, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
        try:
            request(port, "GET", "/__ready__", timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start listening")


@contextlib.contextmanager
def running_server(config_path: Path, port: int, *args: str, env: dict[str, str] | None = None,
                   cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        [str(SCRIPT), "run", "--config", str(config_path), *args],
        cwd=cwd or config_path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        wait_ready(proc, port)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
