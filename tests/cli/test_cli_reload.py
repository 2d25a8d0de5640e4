"""`durable-streams-server reload`: validates locally, then POSTs to the running daemon's
admin address; the daemon swaps configs without dropping connections or refuses."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from runtime.helpers import free_port  # tests/ is on sys.path (rootdir-relative packages)
from runtime.process import SCRIPT, request, running_server, wait_for

GRACE = 5


def write_config(path: Path, port: int, admin: str, body: str) -> Path:
    path.write_text(
        f"{{\n\tadmin {admin}\n\tgrace_period {GRACE}s\n\tmetrics\n}}\n"
        f":{port} {{\n\tbind 127.0.0.1\n{body}}}\n"
    )
    return path


def streams_and(text: str) -> str:
    """A site whose durable_streams store keeps the same settings across reloads."""
    return f"\troute /v1/stream/* {{\n\t\tdurable_streams {{\n\t\t\tlong_poll_timeout 10m\n\t\t}}\n\t}}\n\trespond {text}\n"


def reload(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), "reload", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def live_long_polls(admin_port: int) -> int:
    metrics = request(admin_port, "GET", "/metrics")[2].decode()
    match = re.search(r'^durable_streams_live_readers\{kind="long-poll"\} (\S+)$', metrics, re.M)
    return int(float(match.group(1))) if match else 0


def test_reload_changes_routing_without_dropping_a_long_poll(tmp_path: Path) -> None:
    pytest.importorskip("durable_streams.server.protocol.handler")
    port, admin = free_port(), free_port()
    first = write_config(tmp_path / "Caddyfile", port, f"127.0.0.1:{admin}", streams_and("one"))
    (tmp_path / "next").mkdir()
    second = write_config(tmp_path / "next" / "Caddyfile", port, f"127.0.0.1:{admin}", streams_and("two"))
    with running_server(first, port) as proc:
        assert request(port, "GET", "/")[2] == b"one"
        assert request(port, "PUT", "/v1/stream/s", headers={"Content-Type": "text/plain"})[0] == 201
        tail = request(port, "GET", "/v1/stream/s?offset=-1")[1]["Stream-Next-Offset"]
        outcome: dict = {}

        def long_poll() -> None:
            try:
                outcome["response"] = request(port, "GET", f"/v1/stream/s?offset={tail}&live=long-poll", timeout=60)
            except OSError as exc:
                outcome["error"] = exc

        reader = threading.Thread(target=long_poll)
        reader.start()
        try:
            assert wait_for(lambda: live_long_polls(admin) == 1)
            # relative --config from another directory: the daemon gets the absolute path
            result = reload("--config", "next/Caddyfile", cwd=tmp_path)
            assert (result.returncode, result.stderr) == (0, "")
            assert result.stdout == f"Reloaded the running server from {second}\n"
            assert request(port, "GET", "/")[2] == b"two"
            assert live_long_polls(admin) == 1  # still parked, on the same store
            request(port, "POST", "/v1/stream/s", b"after reload", {"Content-Type": "text/plain"})
        finally:
            reader.join(timeout=30)
        status, _, payload = outcome["response"]
        assert (status, payload) == (200, b"after reload")
        # the reloaded file is now the one SIGHUP reads again
        write_config(second, port, f"127.0.0.1:{admin}", streams_and("three"))
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: request(port, "GET", "/")[2] == b"three")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GRACE + 20) == 0


def test_reload_to_an_invalid_config_exits_1_and_the_daemon_keeps_serving(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    config = write_config(tmp_path / "Caddyfile", port, f"127.0.0.1:{admin}", "\trespond one\n")
    bad = write_config(tmp_path / "bad.caddy", port, f"127.0.0.1:{admin}", "\tfrobnicate\n")
    with running_server(config, port) as proc:
        result = reload("--config", "bad.caddy", cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr == "Error: adapting config using caddyfile: bad.caddy:8: unrecognized directive: frobnicate\n"
        assert request(port, "GET", "/")[2] == b"one"
        assert request(admin, "GET", "/readyz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GRACE + 20) == 0
    assert bad.exists()


def test_reload_the_daemon_refuses_exits_1_with_its_message(tmp_path: Path) -> None:
    # valid here, but the daemon cannot bind the new port: it says why and keeps running
    port, admin, taken = free_port(), free_port(), free_port()
    config = write_config(tmp_path / "Caddyfile", port, f"127.0.0.1:{admin}", "\trespond one\n")
    moved = write_config(tmp_path / "moved.caddy", taken, f"127.0.0.1:{admin}", "\trespond two\n")
    with running_server(config, port) as proc, socket.socket() as blocker:
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        result = reload("-c", str(moved), cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr == (
            "Error: reloading the running server: reload failed; keeping what is running: "
            f"listening on 127.0.0.1:{taken}: bind: address already in use\n"
        )
        assert request(port, "GET", "/")[2] == b"one"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GRACE + 20) == 0


@pytest.mark.parametrize("admin, why", [("off", "has `admin off`"), (None, "has no `admin <addr>` global option")])
def test_reload_without_admin_endpoint_points_to_sighup(tmp_path: Path, admin: str | None, why: str) -> None:
    config = tmp_path / "Caddyfile"
    config.write_text((f"{{\n\tadmin {admin}\n}}\n" if admin else "") + ":4437 {\n\trespond hi\n}\n")
    result = reload(cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: Caddyfile {why}, so the running server has no admin endpoint")
    assert "kill -HUP <pid>" in result.stderr and "systemctl reload durable-streams-server" in result.stderr


def test_reload_with_nothing_listening_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path / "Caddyfile", free_port(), "127.0.0.1:2019", "\trespond hi\n")
    address = f"127.0.0.1:{free_port()}"
    result = reload("--config", str(config), "--address", address, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: sending configuration to instance at {address}: connection refused")


def test_reload_rejects_a_bad_address(tmp_path: Path) -> None:
    write_config(tmp_path / "Caddyfile", free_port(), "off", "\trespond hi\n")
    result = reload("--address", "localhost", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (1, "Error: invalid --address localhost: missing port in address\n")


def test_reload_through_a_unix_socket_admin_address(tmp_path: Path) -> None:
    port, admin = free_port(), f"unix/{tmp_path}/admin.sock"
    config = write_config(tmp_path / "Caddyfile", port, admin, "\trespond one\n")
    with running_server(config, port) as proc:
        write_config(config, port, admin, "\trespond two\n")
        result = reload(cwd=tmp_path)  # ./Caddyfile by default
        assert (result.returncode, result.stdout) == (0, f"Reloaded the running server from {config}\n")
        assert request(port, "GET", "/")[2] == b"two"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GRACE + 20) == 0
