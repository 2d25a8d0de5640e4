"""The repository's example `Caddyfile`, run as documented: `durable-streams-server run
--config Caddyfile`, with its `{$DS_PORT}` and `{$DS_DATA_DIR}` set from the environment."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from runtime.helpers import free_port  # tests/ is on sys.path (rootdir-relative packages)
from runtime.process import request, running_server

from durable_streams.server.config import load_config

ROOT_CADDYFILE = Path(__file__).resolve().parents[2] / "Caddyfile"
CURL = {"User-Agent": "curl/8.5.0", "Accept": "*/*"}  # what a plain `curl` sends


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_root_caddyfile_serves_streams_and_stops_cleanly(tmp_path: Path, signum: int) -> None:
    pytest.importorskip("durable_streams.server.protocol.handler")
    port, data_dir = free_port(), tmp_path / "data"
    env = {"DS_PORT": str(port), "DS_DATA_DIR": str(data_dir)}
    grace = load_config(ROOT_CADDYFILE.read_text(), filename=str(ROOT_CADDYFILE), env=env).grace_period
    assert grace  # the example sets one; the wait below is bounded by it
    with running_server(ROOT_CADDYFILE, port, env=env, cwd=tmp_path) as proc:
        plain = {**CURL, "Content-Type": "text/plain"}
        assert request(port, "PUT", "/v1/stream/demo", headers=plain)[0] == 201
        assert request(port, "POST", "/v1/stream/demo", b"hello ", plain)[0] in (200, 204)
        assert request(port, "POST", "/v1/stream/demo", b"world", plain)[0] in (200, 204)
        status, headers, body = request(port, "GET", "/v1/stream/demo?offset=-1", headers=CURL)
        assert (status, body) == (200, b"hello world")
        assert headers["Content-Type"].startswith("text/plain")
        assert request(port, "GET", "/elsewhere", headers=CURL)[::2] == (404, b"not found")
        assert request(port, "GET", "/v1/stream/missing", headers=CURL)[0] == 404
        assert any(data_dir.rglob("*")), "streams are stored under DS_DATA_DIR"
        proc.send_signal(signum)
        assert proc.wait(timeout=grace + 20) == 0
        log = proc.stderr.read()
    assert f":{port}" in log and signal.Signals(signum).name in log and '"stopped"' in log
