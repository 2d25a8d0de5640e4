"""Fixtures for the developer tools: a real server, and the `durable-stream` CLI run as a
subprocess (exactly as a user runs it)."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from durable_streams.server.testing import DurableStreamTestServer

CLI = [sys.executable, "-m", "durable_streams.server.cli.client"]
# A guard against a hung subprocess, not a performance expectation.
GUARD_SECONDS = 30.0


@dataclass
class CliResult:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8")


def cli_env(base_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STREAM_URL", "STREAM_AUTH")}
    if base_url is not None:
        env["STREAM_URL"] = base_url
    env.update(extra)
    return env


async def run_cli(*args: str, base_url: str | None, stdin: bytes | None = None, **env: str) -> CliResult:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(base_url, **env),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), GUARD_SECONDS)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return CliResult(proc.returncode, out, err.decode("utf-8", "replace"))


@pytest.fixture(name="run_cli")
def run_cli_fixture():
    """`await run_cli(*args, base_url=..., stdin=b"...", ENV=value)` -> CliResult."""
    return run_cli


class CliProcess:
    """A long-running CLI command (e.g. `read` following a stream)."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc

    async def readline(self) -> bytes:
        assert self.proc.stdout is not None
        return await asyncio.wait_for(self.proc.stdout.readline(), GUARD_SECONDS)

    async def read_exactly(self, count: int) -> bytes:
        """The next `count` bytes of stdout (for output without a newline)."""
        assert self.proc.stdout is not None
        return await asyncio.wait_for(self.proc.stdout.readexactly(count), GUARD_SECONDS)

    async def readline_stderr(self) -> bytes:
        assert self.proc.stderr is not None
        return await asyncio.wait_for(self.proc.stderr.readline(), GUARD_SECONDS)

    async def wait(self) -> tuple[int, str]:
        assert self.proc.stderr is not None
        err = await asyncio.wait_for(self.proc.stderr.read(), GUARD_SECONDS)
        return await asyncio.wait_for(self.proc.wait(), GUARD_SECONDS), err.decode("utf-8", "replace")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def start_cli() -> AsyncIterator:
    started: list[CliProcess] = []

    async def start(*args: str, base_url: str | None, stdin_pipe: bool = False, **env: str) -> CliProcess:
        proc = await asyncio.create_subprocess_exec(
            *CLI, *args,
            stdin=asyncio.subprocess.PIPE if stdin_pipe else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(base_url, **env),
        )
        started.append(CliProcess(proc))
        return started[-1]

    yield start
    for process in started:
        await process.stop()


@pytest.fixture
async def server() -> AsyncIterator[DurableStreamTestServer]:
    # A short long-poll timeout makes followers cycle through timeouts during the tests too.
    async with DurableStreamTestServer(long_poll_timeout=1.0) as running:
        yield running


# --------------------------------------------------------------------------------------
# A separate environment with our wheel and the official client from PyPI.
#
# The client is a regular package (durable_streams/__init__.py); our editable install makes
# durable_streams a namespace package, so the two cannot share the dev venv. Installed as
# wheels they merge into one site-packages/durable_streams/. The environment is cached in
# <repo>/.venv-client and refreshed when our sources change (key: hash of the sources).
# --------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
CLIENT_REQUIREMENT = "durable-streams==0.1.0"
CLIENT_VENV = REPO / ".venv-client"
INSTALL_TIMEOUT = 900.0


def _source_key() -> str:
    digest = hashlib.sha256(CLIENT_REQUIREMENT.encode())
    files = [REPO / "pyproject.toml", *sorted((REPO / "grammar").rglob("*")),
             *sorted(p for p in (REPO / "durable_streams").rglob("*") if "__pycache__" not in p.parts)]
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _run(*command: str | os.PathLike, cwd: Path | None = None) -> None:
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{done.stdout}\n{done.stderr}")


def build_client_venv() -> Path:
    """Return the python of an environment holding our wheel and the official client."""
    python = CLIENT_VENV / "bin" / "python"
    key_file = CLIENT_VENV / ".source-key"
    key = _source_key()
    CLIENT_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(REPO / ".venv-client.lock", "w") as lock:  # parallel test runs build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and key_file.exists() and key_file.read_text() == key:
            return python
        if not python.exists():
            shutil.rmtree(CLIENT_VENV, ignore_errors=True)
            _run(sys.executable, "-m", "venv", CLIENT_VENV)
        with tempfile.TemporaryDirectory() as wheel_dir:
            # With hatchling in the dev venv, no isolated build environment needs downloading.
            isolation = () if importlib.util.find_spec("hatchling") is None else ("--no-build-isolation",)
            _run(sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", wheel_dir, REPO)
            (wheel,) = Path(wheel_dir).glob("*.whl")
            # Dependencies first (a no-op when satisfied), then our current code over the old one.
            _run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel, CLIENT_REQUIREMENT)
            _run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 "--force-reinstall", "--no-deps", wheel)
        key_file.write_text(key)
        return python


@pytest.fixture(scope="session")
def client_python() -> Path:
    return build_client_venv()
