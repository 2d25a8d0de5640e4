"""Issue 11: the official clients read big streams whole and byte-exact in non-live mode
(one GET each), on the memory store and the file store.

- Python: `durable-streams` 0.1.0 from PyPI (the client venv of conftest.py),
  `stream(url, live=False).read_bytes()` / `.read_json()`.
- TypeScript: `@durable-streams/client` 0.2.7 from npm (a devDependency of conformance/),
  `stream({url, live: false}).body()` / `.json()`, run with node (ts_client_check.mjs).

Each server holds a 5 MiB and a 64 MiB binary stream (random bytes) and a JSON stream of
100,000 messages (~10 MB), written over plain HTTP in several-MiB POSTs; the clients'
results are compared by length (item count) and sha256 with what was written.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from durable_streams.server.testing import BlockingDurableStreamTestServer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHECKS = HERE / "official_client_checks.py"
TS_CHECK = HERE / "ts_client_check.mjs"
NODE_ROOT = REPO / "conformance"
TS_CLIENT_MANIFEST = NODE_ROOT / "node_modules" / "@durable-streams" / "client" / "package.json"
TS_CLIENT_VERSION = "0.2.7"
GUARD_SECONDS = 180  # against a hang, not a performance expectation
POST_BYTES = 8 << 20
MiB = 1 << 20


@dataclass
class Expected:
    url: str
    size: int  # bytes, or JSON items
    sha256: str


def _request(url: str, method: str, body: bytes, content_type: str) -> int:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request(method, parts.path, body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _write_binary(url: str, size: int, seed: int) -> Expected:
    rng = random.Random(seed)
    digest = hashlib.sha256()
    assert _request(url, "PUT", b"", "application/octet-stream") == 201
    left = size
    while left:
        chunk = rng.randbytes(min(POST_BYTES, left))
        digest.update(chunk)
        assert _request(url, "POST", chunk, "application/octet-stream") == 204
        left -= len(chunk)
    return Expected(url, size, digest.hexdigest())


def _write_json(url: str, count: int) -> Expected:
    messages = [{"i": i, "name": f"message-{i}", "text": "é-" * (i % 17), "tags": [i % 7, "x"]}
                for i in range(count)]
    assert _request(url, "PUT", b"", "application/json") == 201
    for start in range(0, count, 25_000):  # ~2.5 MB per POST, a JSON array of messages
        body = json.dumps(messages[start:start + 25_000]).encode()
        assert _request(url, "POST", body, "application/json") == 204
    rendered = json.dumps(messages, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Expected(url, count, hashlib.sha256(rendered).hexdigest())


@pytest.fixture(scope="module", params=["memory", "file"])
def big_streams(request, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("big-data")) if request.param == "file" else None
    with BlockingDurableStreamTestServer(data_dir=data_dir) as server:
        streams = {
            "bin-5MiB": _write_binary(f"{server.url}/big/bin5", 5 * MiB, 5),
            "bin-64MiB": _write_binary(f"{server.url}/big/bin64", 64 * MiB, 64),
            "json-100k": _write_json(f"{server.url}/big/json", 100_000),
        }
        # The server holds more than one old-style 1 MiB page of each.
        yield streams


def _mode(name: str) -> str:
    return "json" if name.startswith("json") else "bytes"


@pytest.mark.parametrize("name", ["bin-5MiB", "bin-64MiB", "json-100k"])
def test_python_client_reads_whole_stream(client_python, big_streams, name):
    expected = big_streams[name]
    check = "read_json" if _mode(name) == "json" else "read_bytes"
    done = subprocess.run([str(client_python), str(CHECKS), check, expected.url, str(expected.size),
                           expected.sha256], capture_output=True, text=True, timeout=GUARD_SECONDS)
    last_line = done.stdout.strip().splitlines()[-1:]
    assert done.returncode == 0 and last_line == ["ok"], f"{check} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="session")
def node() -> str:
    """node and the npm client; missing is a failure in CI, a skip elsewhere."""
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed"
    elif not TS_CLIENT_MANIFEST.exists():
        problem = f"{TS_CLIENT_MANIFEST} missing: run `npm ci` in conformance/"
    elif json.loads(TS_CLIENT_MANIFEST.read_text())["version"] != TS_CLIENT_VERSION:
        problem = f"conformance/node_modules has not @durable-streams/client {TS_CLIENT_VERSION}: run `npm ci`"
    if problem is not None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(problem)
        pytest.skip(problem)
    return node


@pytest.mark.parametrize("name", ["bin-5MiB", "bin-64MiB", "json-100k"])
def test_typescript_client_reads_whole_stream(node, big_streams, name):
    expected = big_streams[name]
    done = subprocess.run([node, str(TS_CHECK), _mode(name), expected.url, str(expected.size), expected.sha256],
                          capture_output=True, text=True, timeout=GUARD_SECONDS, cwd=NODE_ROOT,
                          env={**os.environ, "DS_NODE_MODULES_ROOT": str(NODE_ROOT)})
    last_line = done.stdout.strip().splitlines()[-1:]
    assert done.returncode == 0 and last_line == ["ok"], f"{name} failed:\n{done.stdout}\n{done.stderr}"
    assert f"client {TS_CLIENT_VERSION} " in done.stdout
