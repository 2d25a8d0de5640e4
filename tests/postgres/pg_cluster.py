"""A throwaway PostgreSQL server for tests and benchmarks: `initdb` into a temp dir,
`pg_ctl start` on a private unix-socket directory (no TCP), stop with `-m immediate`.

`pg_ctl` refuses to run as root, so as root every PostgreSQL binary runs as the
`postgres` user through `runuser`. Debian keeps the binaries in
/usr/lib/postgresql/<version>/bin; `PG_BIN` overrides the search."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or the server would not start."""


def find_bin_dir() -> Path:
    candidates = [os.environ["PG_BIN"]] if os.environ.get("PG_BIN") else []
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                         reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) found; "
                              "install Debian's `postgresql` or set PG_BIN")


class PgCluster:
    def __init__(self, root: str | None = None, *, fsync: bool = False, max_connections: int = 200) -> None:
        self.bin = find_bin_dir()
        self.root = Path(root or tempfile.mkdtemp(prefix="ds-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "server.log"
        self.fsync = fsync
        self.max_connections = max_connections
        self._as_postgres = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise PostgresUnavailable(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
                                      f"{self._log_tail()}")
        return done

    def _log_tail(self) -> str:
        try:
            return "\n" + self.log.read_text()[-2000:]
        except OSError:
            return ""

    def init(self) -> "PgCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        args = ["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]
        if not self.fsync:
            args.append("--no-sync")
        self._run(*args)
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": str(self.max_connections),
            "fsync": "on" if self.fsync else "off",
            "synchronous_commit": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            "shared_buffers": "128MB",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# ds tests\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        return self

    def start(self) -> "PgCluster":
        if self._as_postgres:
            self.log.touch()
            shutil.chown(self.log, "postgres", "postgres")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def psql(self, sql: str) -> str:
        return self._run("psql", "-h", str(self.socket_dir), "-U", "postgres", "-d", "postgres",
                         "-At", "-v", "ON_ERROR_STOP=1", "-c", sql).stdout

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
