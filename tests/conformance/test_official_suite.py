"""The official Durable Streams conformance suite (npm @durable-streams/server-conformance-tests,
pinned in conformance/package.json) run against a real server process.

conformance/suite.test.mjs runs it with the reserved subscription APIs enabled (its CLI
runner never enables them): all 338 tests must pass, none skipped. Over HTTP/1.1 on both
stores, and once over HTTP/2 (TLS, ALPN h2; conformance/h2-dispatcher.mjs has the suite's
fetch use undici's h2), where every connection the server accepted must have been h2."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "conformance" / "run.sh"
CADDYFILE = ROOT / "tests" / "conformance" / "Caddyfile"
EXPECTED_PASSED = 338  # suite 0.3.6, run with subscriptions enabled (conformance/suite.test.mjs)
EXPECTED_SKIPPED = 0
# Guards against a hung run, not performance expectations.
START_GUARD = 30
SUITE_GUARD = 600
H2_PRELOAD = ROOT / "conformance" / "h2-dispatcher.mjs"
SITE = "http://:{$DS_PORT:4437} {\n\t# Tests listen on loopback only.\n\tbind 127.0.0.1\n"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are required to run the official conformance suite",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_GUARD
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.communicate()[1]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not start listening")


@pytest.fixture(params=["memory", "file", "memory-h2"])
def served(request, tmp_path):
    """`durable-streams-server run` with tests/conformance/Caddyfile on a free port, on the
    in-memory store and on the file store; "-h2": the same site over TLS (a test CA), with
    the admin address for its metrics. Yields the origin, and the environment for the suite."""
    store, _, protocol = request.param.partition("-")
    port = free_port()
    config, suite_env, admin = CADDYFILE, {}, None
    if protocol == "h2":
        sys.path.insert(0, str(ROOT / "tests" / "http"))
        from h2tools import write_tls_files

        tls = write_tls_files(tmp_path)
        admin = free_port()
        text = CADDYFILE.read_text()
        assert SITE in text and "\tadmin off\n" in text
        config = tmp_path / "Caddyfile"
        config.write_text(text.replace(SITE, f"https://127.0.0.1:{port} {{\n\ttls {tls.cert} {tls.key}\n")
                          .replace("\tadmin off\n", f"\tadmin 127.0.0.1:{admin}\n"))
        suite_env = {"H2_CA": str(tls.ca),
                     "NODE_OPTIONS": f"{os.environ.get('NODE_OPTIONS', '')} --import {H2_PRELOAD}".strip()}
    env = {**os.environ, "DS_PORT": str(port), "DS_STORE": store, "DS_DATA_DIR": str(tmp_path / "data")}
    process = subprocess.Popen(
        [sys.executable, "-m", "durable_streams.server.cli.main", "run", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )
    try:
        wait_until_serving(port, process)
        yield f"{'https' if protocol else 'http'}://127.0.0.1:{port}", suite_env
        if admin is not None:
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=START_GUARD).read().decode()
            accepted = dict(re.findall(r'^durable_streams_http_connections_accepted_total\{protocol="(h[12])"\} (\S+)$',
                                       metrics, re.MULTILINE))
            assert float(accepted["h1"]) == 0 and float(accepted["h2"]) > 0, accepted
    finally:
        process.terminate()
        try:
            _, errors = process.communicate(timeout=START_GUARD)
        except subprocess.TimeoutExpired:
            process.kill()
            _, errors = process.communicate()
        assert "Traceback" not in errors, errors


def test_official_conformance_suite(served):
    server_url, suite_env = served
    # A longer per-test budget than vitest's 5 s default: "chunk-size pagination" makes
    # 102,400 expect() calls, which a loaded 2-core CI machine can take longer than 5 s
    # over. It only loosens time limits; every assertion of the suite still applies.
    result = subprocess.run(
        ["bash", str(RUN_SH), server_url, "--testTimeout=15000"],
        capture_output=True, text=True, timeout=SUITE_GUARD,
        env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0", **suite_env},
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    summary = re.search(r"^\s*Tests\s+(.*)$", output, re.MULTILINE)
    assert summary, output[-4000:]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped)", summary.group(1))}
    failures = "\n".join(line for line in output.splitlines() if re.search(r"(FAIL|×|✗)", line))
    assert counts.get("failed", 0) == 0, failures[-4000:]
    assert counts.get("passed") == EXPECTED_PASSED, summary.group(0)
    assert counts.get("skipped", 0) == EXPECTED_SKIPPED, summary.group(0)
    assert result.returncode == 0, output[-4000:]
