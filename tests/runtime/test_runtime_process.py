"""The daemon as a process: signals, graceful shutdown, and the real protocol handler
behind `run --config` (PUT/POST/GET, data surviving a restart)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from .helpers import free_port
from .process import request, running_server, wait_for

GRACE = 5


def write_config(tmp_path: Path, port: int, body: str, options: str = "") -> Path:
    path = tmp_path / "Caddyfile"
    path.write_text(
        f"{{\n\tadmin off\n\tgrace_period {GRACE}s\n{options}}}\n:{port} {{\n\tbind 127.0.0.1\n{body}}}\n"
    )
    return path


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(tmp_path: Path, signum: int) -> None:
    port = free_port()
    config = write_config(tmp_path, port, "\trespond ok\n")
    with running_server(config, port) as proc:
        assert request(port, "GET", "/")[2] == b"ok"
        proc.send_signal(signum)
        assert proc.wait(timeout=GRACE + 20) == 0
        log = proc.stderr.read()
    assert signal.Signals(signum).name in log and '"stopped"' in log


def test_round_trip_through_durable_streams_route(tmp_path: Path) -> None:
    pytest.importorskip("durable_streams.server.protocol.handler")
    port = free_port()
    data = tmp_path / "data"
    body = f"\troute /v1/stream/* {{\n\t\tdurable_streams {{\n\t\t\tdata_dir {data}\n\t\t}}\n\t}}\n\trespond 404\n"
    config = write_config(tmp_path, port, body)
    with running_server(config, port) as proc:
        status, headers, _ = request(port, "PUT", "/v1/stream/t", headers={"Content-Type": "text/plain"})
        assert status == 201
        status, headers, _ = request(port, "POST", "/v1/stream/t", b"hello ", {"Content-Type": "text/plain"})
        assert status in (200, 204)
        request(port, "POST", "/v1/stream/t", b"world", {"Content-Type": "text/plain"})
        status, headers, payload = request(port, "GET", "/v1/stream/t?offset=-1")
        assert (status, payload) == (200, b"hello world")
        assert request(port, "GET", "/elsewhere")[0] == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GRACE + 20) == 0
    # the file store kept it: a new process serves the same bytes
    with running_server(config, port) as proc:
        status, _, payload = request(port, "GET", "/v1/stream/t?offset=-1")
        assert (status, payload) == (200, b"hello world")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GRACE + 20) == 0


def test_sigterm_ends_open_long_poll(tmp_path: Path) -> None:
    pytest.importorskip("durable_streams.server.protocol.handler")
    port = free_port()
    body = "\troute /v1/stream/* {\n\t\tdurable_streams {\n\t\t\tlong_poll_timeout 10m\n\t\t}\n\t}\n"
    config = write_config(tmp_path, port, body)
    with running_server(config, port) as proc:
        assert request(port, "PUT", "/v1/stream/lp", headers={"Content-Type": "text/plain"})[0] == 201
        _, headers, _ = request(port, "GET", "/v1/stream/lp?offset=-1")
        tail = headers["Stream-Next-Offset"]
        outcome: dict = {}

        def long_poll() -> None:
            try:
                outcome["response"] = request(port, "GET", f"/v1/stream/lp?offset={tail}&live=long-poll", timeout=60)
            except OSError as exc:  # the connection may close instead of answering
                outcome["error"] = exc

        reader = threading.Thread(target=long_poll)
        reader.start()
        # give the reader a moment to park (if it has not, it is refused: still never hangs)
        threading.Event().wait(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GRACE + 20) == 0
        reader.join(timeout=30)
        assert not reader.is_alive()
        assert outcome  # answered or disconnected: never left hanging


def test_sighup_reloads_and_refuses_a_bad_config(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "daemon.log"
    options = f"\tlog {{\n\t\toutput file {log}\n\t}}\n"
    config = write_config(tmp_path, port, "\trespond one\n", options)
    with running_server(config, port) as proc:
        assert request(port, "GET", "/")[2] == b"one"
        write_config(tmp_path, port, "\trespond two\n", options)
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: request(port, "GET", "/")[2] == b"two")
        config.write_text(config.read_text().replace("respond two", "frobnicate"))
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload refused" in log.read_text())
        assert "unrecognized directive: frobnicate" in log.read_text()
        assert request(port, "GET", "/")[2] == b"two"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GRACE + 20) == 0
