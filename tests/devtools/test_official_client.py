"""The official Python client (`durable-streams` 0.1.0 from PyPI) against our test server,
and both distributions installed side by side in one environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from durable_streams.server.testing import BlockingDurableStreamTestServer

CHECKS = Path(__file__).with_name("official_client_checks.py")
GUARD_SECONDS = 120  # against a hang, not a performance expectation


def run_check(python: Path, check: str, base_url: str) -> None:
    done = subprocess.run([str(python), str(CHECKS), check, base_url], capture_output=True, text=True,
                          timeout=GUARD_SECONDS)
    # The last line: the server may log to stdout before it.
    last_line = done.stdout.strip().splitlines()[-1:]
    assert done.returncode == 0 and last_line == ["ok"], f"{check} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def server():
    with BlockingDurableStreamTestServer(long_poll_timeout=2.0) as running:
        yield running


@pytest.mark.parametrize("check", ["create_append_read", "live_long_poll", "live_sse", "idempotent_producer",
                                   "async_api"])
def test_official_client(client_python, server, check):
    run_check(client_python, check, server.url)


def test_server_and_client_distributions_coexist(client_python):
    # Our server (from the installed wheel, not this work tree) and the client in one interpreter.
    run_check(client_python, "coexistence", "-")
    where = subprocess.run(
        [str(client_python), "-c", "import durable_streams.server as s, durable_streams as c; print(s.__file__);"
                                   "print(c.__file__)"],
        capture_output=True, text=True, timeout=GUARD_SECONDS, check=True,
    ).stdout.split()
    assert all("site-packages" in path for path in where), where
