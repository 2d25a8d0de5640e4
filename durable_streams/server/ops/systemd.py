"""sd_notify(3) spoken directly over $NOTIFY_SOCKET, with no extra dependency.

systemd hands a Type=notify service the path of an AF_UNIX datagram socket in
$NOTIFY_SOCKET ("@name" means the Linux abstract namespace) and, with
WatchdogSec=, the ping deadline in $WATCHDOG_USEC. Each state change is one
datagram of newline-separated KEY=VALUE lines. Outside systemd (no
$NOTIFY_SOCKET, or not Linux/macOS) every call is a quiet no-op, so the
runtime calls these unconditionally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _monotonic_usec() -> int:
    # systemd compares MONOTONIC_USEC against CLOCK_MONOTONIC.
    clock = getattr(time, "CLOCK_MONOTONIC", None)
    if clock is not None:
        return time.clock_gettime_ns(clock) // 1000
    return time.monotonic_ns() // 1000


def _socket_address(raw: str | None) -> str | bytes | None:
    if not raw or not hasattr(socket, "AF_UNIX"):
        return None
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()  # abstract namespace
    if raw.startswith("/"):
        return raw
    return None  # e.g. vsock:..., which we do not speak


class SystemdNotifier:
    """Sends service state to systemd; does nothing when not run by systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._address = _socket_address(env.get("NOTIFY_SOCKET"))
        self._watchdog_interval = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of $WATCHDOG_USEC), or None."""
        return self._watchdog_interval if self.enabled else None

    def notify(self, *lines: str) -> bool:
        """Send one datagram of KEY=VALUE lines; True if it was sent.

        Failures are logged, never raised: a daemon must not fall over because
        its supervisor's socket went away.
        """
        if self._address is None:
            return False
        message = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)  # never stall the event loop on a full queue
                sock.sendto(message, self._address)
            return True
        except OSError as exc:
            log.warning("sd_notify to %r failed: %s", self._address, exc)
            return False

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) finished; systemd considers the unit active."""
        return self.notify("READY=1", *_status_line(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload began; must be followed by ready() once it is done."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}", *_status_line(status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown began."""
        return self.notify("STOPPING=1", *_status_line(status))

    def status(self, text: str) -> bool:
        """Free-form text shown by `systemctl status`."""
        return self.notify(*_status_line(text))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time for the current start-up/stop step (long recovery)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog(self) -> bool:
        """One keep-alive ping."""
        return self.notify("WATCHDOG=1")

    async def watchdog_keepalive(self) -> None:
        """Ping at half the watchdog deadline until cancelled.

        It runs on the event loop on purpose: if the loop stops turning, the
        pings stop and systemd restarts the service.
        """
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def start_watchdog(self) -> asyncio.Task[None] | None:
        """Start `watchdog_keepalive` as a task when the watchdog is on; else None."""
        if self.watchdog_interval is None:
            return None
        return asyncio.get_running_loop().create_task(
            self.watchdog_keepalive(), name="systemd-watchdog"
        )

    @staticmethod
    async def stop_watchdog(task: asyncio.Task[None] | None) -> None:
        """Cancel a task from `start_watchdog` and wait for it to end."""
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _status_line(status: str | None) -> tuple[str, ...]:
    if status is None:
        return ()
    return ("STATUS=" + status.replace("\n", " "),)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    try:
        deadline = int(usec)
    except ValueError:
        return None
    if deadline <= 0:
        return None
    # WATCHDOG_PID names the process meant to ping; a child that inherited the
    # environment must stay silent.
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    return deadline / 2 / 1_000_000
