"""PostgreSQL's CPU per flush and per append, at the store level (no HTTP).

Drives the PostgreSQL store's Flusher directly: each flush carries exactly B streams
with one append each (B appends queued, then awaited), for B in --batches. A
throwaway cluster (fsync=on, synchronous_commit=on, pg_stat_statements loaded) runs
the flushes; CPU is read from /proc (per-thread schedstat) for the flusher's backend,
the listener backends, the WAL writer and the rest of the postmaster's tree.

Variants (--variants) are compared in the same run, the order alternating by round:
`work` is the flusher in this tree, `git:REV` the one of a revision; `+generic` or
`+custom` sets plan_cache_mode on the pool's connections (see load_flusher).

    .venv/bin/python bench/pg_flush_bench.py --batches 1,16,64,256 --flushes 200
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "postgres"))
sys.path.insert(0, str(ROOT / "bench"))

from pg_cluster import PgCluster  # noqa: E402

from durable_streams.server.store.base import Commit, ProducerState  # noqa: E402
from durable_streams.server.store.postgres import flusher as flusher_mod  # noqa: E402
from durable_streams.server.store.postgres.flusher import CHANNEL  # noqa: E402
from durable_streams.server.store.postgres.schema import migrate  # noqa: E402



def thread_cpu(pid: int) -> float:
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError):
        pass
    return total / 1e9


def tree_pids(root: int) -> dict[int, str]:
    """pid -> command line of the postmaster and its children."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            ppid = int(stat[stat.rfind(")") + 2:].split()[1])
            if int(entry) == root or ppid == root:
                out[int(entry)] = open(f"/proc/{entry}/cmdline").read().replace("\0", " ").strip()
        except (OSError, ValueError):
            continue
    return out


class CpuMeter:
    def __init__(self, postmaster: int, roles: dict[int, str]):
        self.postmaster = postmaster
        self.roles = roles  # pid -> role name; the rest is "other"

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, cmd in tree_pids(self.postmaster).items():
            role = self.roles.get(pid)
            if role is None:
                role = "walwriter" if "walwriter" in cmd else "other"
            out[role] = out.get(role, 0.0) + thread_cpu(pid)
        out["total"] = sum(out.values())
        return out


# ------------------------------------------------------------------ variants
# A variant is SOURCE[+OPTION...]: SOURCE is `work` (the flusher in this tree) or
# `git:REV` (flusher.py as of that revision, e.g. git:HEAD); OPTION is `generic` or
# `custom` (plan_cache_mode of the pool's connections).

FLUSHER_PATH = "durable_streams/server/store/postgres/flusher.py"


def load_flusher(source: str):
    if source == "work":
        return flusher_mod
    rev = source.removeprefix("git:")
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{FLUSHER_PATH}"], check=True,
                          capture_output=True, text=True).stdout
    name = "durable_streams.server.store.postgres._flusher_" + re.sub(r"\W", "_", rev)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def pool_options(options: list[str]) -> dict:
    settings = [f"SET plan_cache_mode = force_{o}_plan" for o in options if o in ("generic", "custom")]
    if not settings:
        return {}

    async def init(conn):
        for sql in settings:
            await conn.execute(sql)
    return {"init": init}


# ------------------------------------------------------------------ the run


async def setup_streams(pool, count: int, prefix: str) -> list[int]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "INSERT INTO streams (path, content_type, created_at, base_offset, settings, tail, last_access) "
            "SELECT $1 || g, 'application/octet-stream', 0, 0, '{}'::jsonb, 0, 0 FROM generate_series(1, $2) g "
            "RETURNING id", prefix, count)
    return sorted(r["id"] for r in rows)


class Target:
    def __init__(self, name, dsn, streams, producers, listeners):
        self.name = name
        self.dsn = dsn
        self.nstreams = streams
        self.producers = producers
        self.nlisteners = listeners
        self.tails: dict[int, int] = {}
        self.listen_conns = []
        self.heard = 0

    async def open(self, prefix):
        source, *options = self.name.split("+")
        module = load_flusher(source)
        self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2, **pool_options(options))
        self.flusher = module.Flusher(lambda: self.pool, lambda exc: exc)
        self.flusher.start()
        self.ids = await setup_streams(self.pool, self.nstreams, prefix)
        self.tails = {i: 0 for i in self.ids}
        for _ in range(self.nlisteners):
            conn = await asyncpg.connect(self.dsn)
            await conn.add_listener(CHANNEL, self._notified)
            self.listen_conns.append(conn)
        await self.flush_batch(1)  # opens the flusher's connection
        self.backend = self.flusher._conn.get_server_pid()

    def _notified(self, *_):
        self.heard += 1

    async def flush_batch(self, size: int, payload: bytes = b"x" * 22):
        futures = []
        now = time.time()
        for stream_id in self.ids[:size]:
            tail = self.tails[stream_id] + len(payload)
            self.tails[stream_id] = tail
            producer = None
            if self.producers:
                producer = ("p", ProducerState(0, tail, now))
            futures.append(self.flusher.append(stream_id, payload, Commit(tail=tail, producer=producer)))
        await asyncio.gather(*futures)

    async def close(self):
        await self.flusher.stop()
        for conn in self.listen_conns:
            await conn.close()
        await self.pool.close()


async def run(args):
    cluster = PgCluster(root=str(Path(args.work) / "pg"), fsync=True, max_connections=100)
    cluster.init()
    with open(cluster.data / "postgresql.conf", "a") as conf:
        conf.write("shared_preload_libraries = 'pg_stat_statements'\n"
                   "pg_stat_statements.track = all\n")
        for extra in args.pg_set:
            conf.write(extra + "\n")
    cluster.start()
    try:
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        cluster.psql("CREATE EXTENSION pg_stat_statements")
        dsn = cluster.dsn
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        settings = await conn.fetch("SELECT name, setting FROM pg_settings WHERE name IN "
                                    "('server_version','fsync','synchronous_commit','wal_sync_method',"
                                    "'plan_cache_mode','full_page_writes')")
        print(" ".join(f"{r['name']}={r['setting']}" for r in settings), flush=True)
        targets = []
        for i, name in enumerate(args.variants):
            t = Target(name, dsn, max(args.batches), args.producers, args.listeners)
            await t.open(f"/v{i}/s")
            targets.append(t)
        roles = {}
        for t in targets:
            roles[t.backend] = "backend"
            for c in t.listen_conns:
                roles[c.get_server_pid()] = "listener"
        meter = CpuMeter(postmaster, roles)
        # warm-up: plans cached, pages in
        for t in targets:
            for b in args.batches:
                for _ in range(10):
                    await t.flush_batch(b)
        results: dict[tuple[str, int], list[dict]] = {}
        for rnd in range(args.rounds):
            order = targets if rnd % 2 == 0 else targets[::-1]
            for b in args.batches:
                for t in order:
                    flushes = max(5, args.appends // b) if args.appends else args.flushes
                    await conn.execute("CHECKPOINT")  # full-page images: every variant starts alike
                    before = meter.snapshot()
                    started = time.perf_counter()
                    for _ in range(flushes):
                        await t.flush_batch(b)
                    wall = time.perf_counter() - started
                    await asyncio.sleep(0.05)  # the WAL writer and listeners catch up
                    after = meter.snapshot()
                    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                    d["wall"] = wall
                    d["flushes"] = flushes
                    results.setdefault((t.name, b), []).append(d)
        print(f"\nPostgreSQL CPU, us (median of {args.rounds} rounds); producers={args.producers} "
              f"listeners={args.listeners}")
        print(f"{'variant':>16} {'batch':>5} {'per_app':>8} {'per_flush':>9} {'backend/fl':>10} "
              f"{'wal/fl':>7} {'listen/fl':>9} {'other/fl':>8} {'wall/fl':>8}")
        for b in args.batches:
            for t in targets:
                rs = results[(t.name, b)]

                def med(key, per):
                    return statistics.median(r.get(key, 0.0) / r["flushes"] for r in rs) * 1e6 / per
                print(f"{t.name:>16} {b:>5} {med('total', b):8.1f} {med('total', 1):9.0f} "
                      f"{med('backend', 1):10.0f} {med('walwriter', 1):7.0f} {med('listener', 1):9.0f} "
                      f"{med('other', 1):8.0f} {med('wall', 1):8.0f}")
        if args.statements:
            rows = await conn.fetch(
                "SELECT calls, total_exec_time, total_plan_time, plans, rows, shared_blks_hit, "
                "shared_blks_dirtied, wal_records, wal_fpi, wal_bytes, left(regexp_replace(query, '\\s+', ' ', 'g'), 70) AS q "
                "FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 8")
            print("\npg_stat_statements (all rounds):")
            for r in rows:
                calls = r["calls"] or 1
                print(f"  calls={r['calls']} exec/call={r['total_exec_time'] / calls * 1000:.0f}us "
                      f"plans={r['plans']} plan/call={r['total_plan_time'] / calls * 1000:.0f}us "
                      f"hit/call={r['shared_blks_hit'] / calls:.1f} dirtied/call={r['shared_blks_dirtied'] / calls:.2f} "
                      f"wal_rec/call={r['wal_records'] / calls:.1f} fpi/call={r['wal_fpi'] / calls:.2f} "
                      f"walB/call={int(r['wal_bytes']) / calls:.0f} | {r['q']}")
        print("\nplans on the flusher's connection (generic/custom):")
        for t in targets:
            rows = await t.flusher._conn.fetch(
                "SELECT generic_plans, custom_plans, left(regexp_replace(statement, '\\s+', ' ', 'g'), 60) AS q "
                "FROM pg_prepared_statements WHERE statement ~ 'unnest'")
            print(f"  {t.name}: " + "; ".join(f"{r['generic_plans']}/{r['custom_plans']}" for r in rows))
        rows = await conn.fetch("SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                                "WHERE relname IN ('streams', 'chunks', 'producers') ORDER BY relname")
        print("  " + "; ".join(f"{r['relname']}: ins={r['n_tup_ins']} upd={r['n_tup_upd']} hot={r['n_tup_hot_upd']}"
                               for r in rows))
        for t in targets:
            await t.close()
        await conn.close()
    finally:
        cluster.stop()
        if not args.keep:
            cluster.remove()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,16,64,256")
    p.add_argument("--flushes", type=int, default=200, help="flushes per sample (unless --appends)")
    p.add_argument("--appends", type=int, default=0, help="appends per sample (flushes = appends / batch)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default="git:HEAD,work")
    p.add_argument("--producers", action="store_true", help="every append carries producer state")
    p.add_argument("--listeners", type=int, default=1)
    p.add_argument("--statements", action="store_true", help="print pg_stat_statements")
    p.add_argument("--pg-set", action="append", default=[], help="extra postgresql.conf line")
    p.add_argument("--work", default="/tmp/wt-pgcpu-tmp/flushbench")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    args.batches = [int(x) for x in args.batches.split(",")]
    args.variants = args.variants.split(",")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
