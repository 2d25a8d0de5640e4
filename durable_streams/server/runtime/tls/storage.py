"""Certificate storage shared by the local CA (local_ca.py) and the ACME issuer (acme.py),
on disk as Caddy's (certmagic's) FileStorage keeps it, so the two can share a directory:

- `mkdirs`/`write_atomic`: directories 0700, files written atomically (temp file, fsync,
  rename), private keys 0600;
- `StorageLock`: certmagic's FileStorage lock protocol (filestorage.go), so this server and
  Caddy, or two of our processes, never work on the same name at once:
  * the lock is `<storage>/locks/<safe name>.lock`, created with O_CREAT|O_EXCL and holding
    JSON `{"created": <RFC 3339>, "updated": <RFC 3339>}`;
  * the holder rewrites `updated` every 5 s (lockFreshnessInterval);
  * a waiter polls every second (fileLockPollInterval); a lock not updated for twice the
    freshness interval is stale (its holder died) and is removed, then taken;
  * a lock file read empty is retried up to 8 times 250 ms apart (certmagic issue #232:
    it is being rewritten), then treated as stale;
  * release deletes the file.
  certmagic's own lock names: `issue_cert_<name>` around obtaining or renewing a name's
  certificate, `register_acme_account[_<email>]` around registering an account.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import threading
import time

from ...config.certnames import safe_key

LOCK_FRESHNESS_INTERVAL = 5.0  # certmagic lockFreshnessInterval
LOCK_POLL_INTERVAL = 1.0  # certmagic fileLockPollInterval
_EMPTY_LOCK_RETRIES = 8
_EMPTY_LOCK_WAIT = 0.25


def mkdirs(path: str) -> None:
    """Create `path` and every missing parent 0700 (os.makedirs gives parents the umask's mode)."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        os.chmod(directory, 0o700)


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Atomically: a temp file in the same directory (created `mode`), then rename."""
    directory = os.path.dirname(path)
    mkdirs(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# --------------------------------------------------------------------------- the lock

def issue_lock_name(subject: str) -> str:
    """certmagic's lock around obtaining or renewing the certificate of `subject`."""
    return f"issue_cert_{subject}"


def lock_path(storage_root: str, name: str) -> str:
    return os.path.join(storage_root, "locks", safe_key(name) + ".lock")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _format_time(when: dt.datetime) -> str:
    # Go's time.Time JSON form (RFC 3339, fractional seconds, "Z" for UTC)
    return when.astimezone(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return None if when.year <= 1 else when  # Go's zero time: field not set


class StorageLockTimeout(TimeoutError):
    pass


class StorageLock:
    """One named lock in a storage, for worker threads (`with lock:`; waiting blocks);
    while held, a daemon thread keeps the file fresh. Not reentrant."""

    def __init__(self, storage_root: str, name: str, *, poll_interval: float = LOCK_POLL_INTERVAL,
                 freshness_interval: float = LOCK_FRESHNESS_INTERVAL, timeout: float | None = None) -> None:
        self.name = name
        self.path = lock_path(storage_root, name)
        self.poll_interval = poll_interval
        self.freshness_interval = freshness_interval
        self.timeout = timeout
        self._created: str | None = None
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._empty_reads = 0

    @property
    def held(self) -> bool:
        return self._created is not None

    # ------------------------------------------------------------------ acquiring

    def _attempt(self) -> float | None:
        """One step of certmagic's obtainLock: None once the lock is ours, else the seconds
        to wait before the next step (0: at once)."""
        mkdirs(os.path.dirname(self.path))
        now = _format_time(_now())
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"created": now, "updated": now}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self._created = now
            self._empty_reads = 0
            self._start_refresher()
            return None
        try:
            with open(self.path, "rb") as f:
                raw = f.read(2048)
        except FileNotFoundError:
            return 0.0  # just released: try again at once
        try:
            meta = json.loads(raw)
            if not isinstance(meta, dict):
                raise ValueError
        except ValueError:
            # empty or half-written (it is being refreshed), or its writer died mid-write
            self._empty_reads += 1
            if self._empty_reads < _EMPTY_LOCK_RETRIES:
                return _EMPTY_LOCK_WAIT
            meta = {}
        self._empty_reads = 0
        if self._is_stale(meta):
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            return 0.0
        return self.poll_interval

    def _is_stale(self, meta: dict) -> bool:
        ref = _parse_time(meta.get("updated")) or _parse_time(meta.get("created"))
        if ref is None:
            return True
        return (_now() - ref).total_seconds() > 2 * self.freshness_interval

    def try_acquire(self) -> bool:
        """Take the lock if it is free or stale, without waiting for a live holder."""
        while True:
            wait = self._attempt()
            if wait is None:
                return True
            if wait == self.poll_interval:
                return False
            time.sleep(wait)

    def acquire(self, timeout: float | None = None, cancel: threading.Event | None = None) -> None:
        """Wait for the lock (up to `timeout` seconds, default the lock's own; None: forever);
        raises StorageLockTimeout, or InterruptedError once `cancel` is set."""
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self._attempt()
            if wait is None:
                return
            if deadline is not None and time.monotonic() + wait > deadline:
                raise StorageLockTimeout(f"lock {self.name!r} ({self.path}) still held after {timeout:g} s")
            if cancel is not None:
                if cancel.wait(wait):
                    raise InterruptedError(f"waiting for lock {self.name!r} was cancelled")
            elif wait:
                time.sleep(wait)

    # ------------------------------------------------------------------ holding

    def _start_refresher(self) -> None:
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._keep_fresh, args=(self._stop, self._created),
                                           name=f"lock-refresh:{self.name}", daemon=True)
        self._refresher.start()

    def _keep_fresh(self, stop: threading.Event, created: str) -> None:
        """certmagic's keepLockfileFresh: rewrite `updated` until released or the file is gone."""
        while not stop.wait(self.freshness_interval):
            try:
                fd = os.open(self.path, os.O_RDWR)
            except FileNotFoundError:
                return  # released, or taken over as stale by someone who thought we died
            except OSError:
                return
            with os.fdopen(fd, "r+") as f:
                try:
                    meta = json.loads(f.read(2048))
                except ValueError:
                    return
                if not isinstance(meta, dict) or meta.get("created") != created:
                    return  # not our lock any more
                meta["updated"] = _format_time(_now())
                f.seek(0)
                f.truncate()
                f.write(json.dumps(meta) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def release(self) -> None:
        created, self._created = self._created, None
        if created is None:
            return
        self._stop.set()
        if self._refresher is not None and self._refresher is not threading.current_thread():
            self._refresher.join()
        self._refresher = None
        # delete only our own lock: if ours went stale and someone took it over, theirs stays
        try:
            with open(self.path, "rb") as f:
                meta = json.loads(f.read(2048))
        except FileNotFoundError:
            return
        except ValueError:
            meta = {}
        if isinstance(meta, dict) and meta.get("created") not in (created, None):
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> StorageLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

