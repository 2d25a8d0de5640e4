"""certmagic's FileStorage lock (cert_storage.StorageLock): its file and format, mutual
exclusion between threads and between processes, freshness while held, takeover of a
stale lock (its holder was killed), and waiting from the event loop."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from durable_streams.server.runtime.tls import local_ca as pki
from durable_streams.server.runtime.tls.storage import (
    StorageLock,
    StorageLockTimeout,
    issue_lock_name,
    lock_path,
)

HOLDER = """
import sys, time
from durable_streams.server.runtime.tls.storage import StorageLock
lock = StorageLock(sys.argv[1], sys.argv[2], poll_interval=0.05, freshness_interval=float(sys.argv[3]))
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()  # hold until told (or killed)
lock.release()
print("released", flush=True)
"""


def holder(root: Path, name: str, freshness: float = 5.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(root), name, str(freshness)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def read_line(proc: subprocess.Popen, timeout: float = 20) -> str:
    """The process's next stdout line (waiting on the pipe, not sleeping)."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert result, "no output in time"
    return result[0].strip()


def parse_go_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def test_lock_file_is_certmagics(tmp_path: Path) -> None:
    lock = StorageLock(str(tmp_path), issue_lock_name("streams.example.com"))
    assert lock.path == str(tmp_path / "locks" / "issue_cert_streams.example.com.lock")
    assert lock_path(str(tmp_path), "issue_cert_*.example.com") == str(tmp_path / "locks" / "issue_cert_wildcard_.example.com.lock")
    with lock:
        meta = json.loads(Path(lock.path).read_text())
        assert set(meta) == {"created", "updated"}
        created = parse_go_time(meta["created"])
        assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 5
        assert oct(os.stat(tmp_path / "locks").st_mode & 0o777) == "0o700"
    assert not os.path.exists(lock.path)


def test_threads_take_turns(tmp_path: Path) -> None:
    first = StorageLock(str(tmp_path), "issue_cert_a", poll_interval=0.02)
    second = StorageLock(str(tmp_path), "issue_cert_a", poll_interval=0.02)
    other_name = StorageLock(str(tmp_path), "issue_cert_b")
    first.acquire()
    assert other_name.try_acquire()  # locks are per name
    other_name.release()
    got_it = threading.Event()
    waiter = threading.Thread(target=lambda: (second.acquire(), got_it.set()))
    waiter.start()
    assert not got_it.wait(0.3)  # still held: the waiter keeps polling
    assert not StorageLock(str(tmp_path), "issue_cert_a").try_acquire()
    first.release()
    assert got_it.wait(5)
    waiter.join()
    assert second.held
    second.release()


def test_waiting_times_out_and_can_be_cancelled(tmp_path: Path) -> None:
    held = StorageLock(str(tmp_path), "n")
    held.acquire()
    try:
        started = time.monotonic()
        with pytest.raises(StorageLockTimeout, match="still held"):
            StorageLock(str(tmp_path), "n", poll_interval=0.05).acquire(timeout=0.3)
        assert time.monotonic() - started < 2
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(InterruptedError):
            StorageLock(str(tmp_path), "n").acquire(cancel=cancel)
    finally:
        held.release()


def test_two_processes_exclude_each_other(tmp_path: Path) -> None:
    one = holder(tmp_path, "issue_cert_x")
    two = None
    try:
        assert read_line(one) == "locked"
        two = holder(tmp_path, "issue_cert_x")
        assert not StorageLock(str(tmp_path), "issue_cert_x").try_acquire()
        # `two` polls while `one` holds; once `one` releases, `two` has it
        one.stdin.write("\n")
        one.stdin.flush()
        assert read_line(one) == "released"
        assert read_line(two) == "locked"
        assert not StorageLock(str(tmp_path), "issue_cert_x").try_acquire()
    finally:
        for proc in (one, two):
            if proc is not None:
                proc.kill()
                proc.wait()


def test_holder_keeps_the_lock_fresh(tmp_path: Path) -> None:
    lock = StorageLock(str(tmp_path), "fresh", freshness_interval=0.05)
    with lock:
        first = json.loads(Path(lock.path).read_text())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # polling the file: the refresh has no event to await
            now = json.loads(Path(lock.path).read_text() or "{}")
            if now and now["updated"] != first["updated"]:
                break
            time.sleep(0.02)
        assert now["created"] == first["created"]
        assert parse_go_time(now["updated"]) > parse_go_time(first["updated"])
        # a waiter with the same freshness never sees it stale while it is held
        with pytest.raises(StorageLockTimeout):
            StorageLock(str(tmp_path), "fresh", poll_interval=0.05, freshness_interval=0.05).acquire(timeout=0.5)


def test_lock_of_a_killed_holder_goes_stale_and_is_taken_over(tmp_path: Path) -> None:
    proc = holder(tmp_path, "issue_cert_y", freshness=0.2)
    try:
        assert read_line(proc) == "locked"
        waiter = StorageLock(str(tmp_path), "issue_cert_y", poll_interval=0.05, freshness_interval=0.2)
        assert not waiter.try_acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        started = time.monotonic()
        waiter.acquire(timeout=10)
        # stale after twice the freshness interval without an update
        assert time.monotonic() - started < 3
        waiter.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stale_lock_left_by_certmagic_is_taken_over(tmp_path: Path) -> None:
    path = Path(lock_path(str(tmp_path), "issue_cert_z"))
    path.parent.mkdir(mode=0o700)
    # as Go writes it: RFC 3339 with nanoseconds and a zone offset, 30 s old
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30)).astimezone(dt.timezone(dt.timedelta(hours=2)))
    stamp = old.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123+02:00"
    path.write_text(json.dumps({"created": stamp, "updated": stamp}) + "\n")
    lock = StorageLock(str(tmp_path), "issue_cert_z")
    assert lock.try_acquire()
    assert json.loads(path.read_text())["created"] != stamp
    lock.release()


def test_fresh_lock_left_by_certmagic_is_respected(tmp_path: Path) -> None:
    path = Path(lock_path(str(tmp_path), "issue_cert_w"))
    path.parent.mkdir(mode=0o700)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "789Z"
    # Go's zero time for an unset `updated`: the creation time counts
    path.write_text(json.dumps({"created": stamp, "updated": "0001-01-01T00:00:00Z"}) + "\n")
    assert not StorageLock(str(tmp_path), "issue_cert_w").try_acquire()


def test_empty_lock_file_is_retried_then_treated_as_stale(tmp_path: Path) -> None:
    path = Path(lock_path(str(tmp_path), "issue_cert_e"))
    path.parent.mkdir(mode=0o700)
    path.write_text("")
    lock = StorageLock(str(tmp_path), "issue_cert_e")
    started = time.monotonic()
    lock.acquire(timeout=10)
    assert 1.5 < time.monotonic() - started < 5  # certmagic: 8 reads 250 ms apart
    lock.release()


def test_release_leaves_a_lock_someone_else_took_over(tmp_path: Path) -> None:
    ours = StorageLock(str(tmp_path), "taken", freshness_interval=60)
    ours.acquire()
    # ours went stale (say the machine slept) and another process replaced it
    theirs = {"created": "2030-01-01T00:00:00Z", "updated": "2030-01-01T00:00:00Z"}
    Path(ours.path).write_text(json.dumps(theirs))
    ours.release()
    assert json.loads(Path(ours.path).read_text()) == theirs


def test_local_ca_uses_the_certmagic_lock(tmp_path: Path) -> None:
    lock = pki.storage_lock(str(tmp_path))
    with lock:
        assert os.path.exists(tmp_path / "locks" / "durable_streams_local_ca.lock")
        assert not pki.storage_lock(str(tmp_path)).try_acquire()
    assert not os.path.exists(tmp_path / "locks" / "durable_streams_local_ca.lock")
