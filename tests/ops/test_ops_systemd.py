"""sd_notify: datagrams arrive on a real AF_UNIX socket the test binds."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import time
import uuid

import pytest

from durable_streams.server.ops.systemd import SystemdNotifier


@pytest.fixture
def notify_socket():
    """A bound datagram socket in a short /tmp path (sun_path is ~108 bytes)."""
    directory = tempfile.mkdtemp(prefix="ds-notify-", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(directory)


@pytest.fixture
def abstract_socket():
    name = f"ds-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


def receive(sock: socket.socket) -> dict[str, str]:
    message = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in message.split("\n"))


def test_state_messages_reach_the_socket_from_the_environment(notify_socket, monkeypatch):
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = SystemdNotifier()
    assert notifier.enabled

    assert notifier.ready(status="serving 2 listeners")
    assert receive(sock) == {"READY": "1", "STATUS": "serving 2 listeners"}

    before = time_usec()
    assert notifier.reloading()
    reloading = receive(sock)
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= time_usec()

    assert notifier.status("recovering: 10/20 streams\nsecond line")
    assert receive(sock) == {"STATUS": "recovering: 10/20 streams second line"}

    assert notifier.extend_timeout(30)
    assert receive(sock) == {"EXTEND_TIMEOUT_USEC": "30000000"}

    assert notifier.stopping()
    assert receive(sock) == {"STOPPING": "1"}


def time_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_abstract_namespace_socket(abstract_socket):
    sock, address = abstract_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert notifier.ready()
    assert receive(sock) == {"READY": "1"}


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}])
def test_not_under_systemd_everything_is_a_no_op(env):
    notifier = SystemdNotifier(env)
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval is None


def test_a_vanished_socket_is_reported_not_raised(caplog):
    notifier = SystemdNotifier({"NOTIFY_SOCKET": "/tmp/ds-no-such-dir/notify"})
    assert notifier.enabled
    assert notifier.ready() is False
    assert "sd_notify" in caplog.text


async def test_watchdog_pings_arrive_until_stopped(notify_socket):
    sock, path = notify_socket
    notifier = SystemdNotifier(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert notifier.watchdog_interval == pytest.approx(0.02)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    task = notifier.start_watchdog()
    assert task is not None
    try:
        for _ in range(3):
            message = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
            assert message == b"WATCHDOG=1"
    finally:
        await SystemdNotifier.stop_watchdog(task)
    assert task.done()


@pytest.mark.parametrize(
    "extra",
    [{"WATCHDOG_PID": "1"}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "soon"}, {"WATCHDOG_USEC": ""}],
)
async def test_watchdog_stays_off_when_not_meant_for_us(notify_socket, extra):
    _, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000", **extra}
    notifier = SystemdNotifier(env)
    assert notifier.watchdog_interval is None
    assert notifier.start_watchdog() is None
