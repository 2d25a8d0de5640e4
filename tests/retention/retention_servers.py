"""Real server processes for the retention tests: `durable-streams-server run --config
<Caddyfile>` on a free loopback port, on the memory, file or PostgreSQL store, with the
`retention` lines a test gives (none: no retention at all)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

COMMAND = [sys.executable, "-m", "durable_streams.server.cli.main", "run", "--config"]
START_GUARD = 30.0  # against a hung start, not a performance expectation
PREFIX = "/v1/stream"
STORES = ["memory", "file", "postgres"]

CADDYFILE = """\
{{
	admin off
	auto_https off
	grace_period 2s
	log {{
		output stderr
		level WARN
	}}
}}

http://127.0.0.1:{port} {{
	route {prefix}/* {{
		request_body {{
			max_size 64MiB
		}}
		durable_streams {{
{settings}
		}}
	}}
	respond "not found" 404
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def retention_block(pattern: str | None = None, **limits: str) -> str:
    """`retention [pattern] { max_age ...; max_size ... }` as Caddyfile lines."""
    head = f"retention {pattern} {{" if pattern else "retention {"
    body = "".join(f"\t\t\t\t{name} {value}\n" for name, value in limits.items())
    return f"\t\t\t{head}\n{body}\t\t\t}}"


class Server:
    """One server process; restartable on its data (same data_dir or database)."""

    def __init__(self, workdir: Path, store: str, retention: list[str] | None = None, *,
                 dsn: str | None = None, name: str = "server", env: dict[str, str] | None = None,
                 settings: list[str] | None = None) -> None:
        """`retention`, `settings`: more lines for the durable_streams block (one tab-indented
        option each: `retention_block(...)`, `"\t\t\tsubscriptions"`)."""
        self.workdir = workdir
        self.store = store
        self.name = name
        self.data_dir = workdir / f"{name}-data"
        if store == "memory":
            store_line = ""
        elif store == "file":
            store_line = f"\t\t\tdata_dir {self.data_dir}"
        elif store == "postgres":
            assert dsn is not None
            store_line = f'\t\t\tpostgres "{dsn}"'
        else:
            raise ValueError(store)
        self._store_line = store_line
        self._retention = "\n".join([*(retention or []), *(settings or [])])
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base}{PREFIX}/{name}"

    def start(self) -> "Server":
        deadline = time.monotonic() + START_GUARD
        while True:
            self._spawn()
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return self
                except OSError:
                    time.sleep(0.05)
            log = self.log_text()
            if self.proc.poll() is None:
                self.kill()
                raise AssertionError(f"{self.name} did not start listening:\n{log[-3000:]}")
            # someone took the free port between the probe and the bind: another port
            if "address already in use" not in log or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} exited at start:\n{log[-3000:]}")

    def _spawn(self) -> None:
        self.port = free_port()
        self.starts += 1
        config = self.workdir / f"{self.name}.Caddyfile"
        settings = [self._store_line, "\t\t\tlong_poll_timeout 1s", "\t\t\tsse_reconnect_interval 60s",
                    self._retention]
        config.write_text(CADDYFILE.format(port=self.port, prefix=PREFIX,
                                           settings="\n".join(line for line in settings if line)))
        self.log_path = self.workdir / f"{self.name}-{self.starts}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([*COMMAND, str(config)], stdout=log, stderr=log, env=self.env)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no flush, no checkpoint."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=START_GUARD)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None

    def errors(self) -> str:
        """What the server logged that a test should never see."""
        return "\n".join(line for line in self.log_text().splitlines()
                         if "Traceback" in line or '"error"' in line)


@contextlib.contextmanager
def serving(server: Server):
    """A started server for a fixture: stopped afterwards, and its log must hold no errors."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.errors(), server.errors()


def client() -> httpx.Client:
    # A guard against a hung server, not a performance expectation.
    return httpx.Client(timeout=httpx.Timeout(30.0))


def data_blocks(data_dir: Path) -> tuple[int, int]:
    """(allocated bytes, apparent bytes) of every file under `data_dir`."""
    allocated = apparent = 0
    for root, _, files in os.walk(data_dir):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent
