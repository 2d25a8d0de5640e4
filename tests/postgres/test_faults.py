"""Faults on a two-node deployment over real sockets: a node SIGKILLed under load (the
other keeps serving, nothing acknowledged is lost, producers retry on the survivor
without a false 409), PostgreSQL stopped and started again under load (503 with
Retry-After and an unready /readyz meanwhile, then service again by itself), and a
node's LISTEN connection dropped while its live readers wait."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from nodes import Node, wait_ready
from pg_cluster import PgCluster
from pg_fixtures import running_cluster
from stream_client import Reader, append, create, producer_headers, read_all, session

PATH = "/v1/stream/faults"
RETRYABLE = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


class Writer:
    """An idempotent producer that sends its appends one at a time, preferring one node:
    a request without a complete answer (node killed, 503) is retried with the same
    (epoch, seq), on the other node when its node is down. `acked` holds the seqs that
    got 200 (new) or 204 (duplicate of an earlier attempt); anything else is a failure."""

    def __init__(self, http: aiohttp.ClientSession, nodes: list[Node], name: str, prefer: int) -> None:
        self.http, self.nodes, self.name, self.prefer = http, nodes, name, prefer
        self.acked: list[int] = []
        self.acked_at: list[float] = []
        self.retries = 0
        self.unavailable: list[dict] = []  # 503 answers (their headers)
        self.failures: list[str] = []
        self.stop = asyncio.Event()

    def message(self, seq: int) -> dict:
        return {"p": self.name, "seq": seq}

    async def run(self) -> None:
        seq, turn = 0, self.prefer
        while not self.stop.is_set():
            node = self.nodes[turn % len(self.nodes)]
            try:
                async with self.http.post(node.url + PATH, data=json.dumps(self.message(seq)).encode(),
                                          headers={"Content-Type": "application/json",
                                                   **producer_headers(self.name, seq)}) as r:
                    body = await r.read()
                    status = r.status
            except RETRYABLE:
                self.retries += 1
                turn += 1  # that node is gone: the same request on the other one
                await asyncio.sleep(0.01)
                continue
            if status == 503:
                self.retries += 1
                self.unavailable.append({"node": node.name, "seq": seq})
                turn += 1
                await asyncio.sleep(0.05)
                continue
            if status not in (200, 204):
                self.failures.append(f"{self.name} seq {seq} on {node.name}: {status} {body[:200]!r} "
                                     f"(after {self.retries} retries)")
                return
            self.acked.append(seq)
            self.acked_at.append(time.monotonic())
            seq += 1
            turn = self.prefer


@contextlib.asynccontextmanager
async def running(writers: list[Writer]) -> AsyncIterator[list[asyncio.Task]]:
    """The writers' tasks; on the way out (a failed assertion too) none is left running."""
    tasks = [asyncio.create_task(w.run()) for w in writers]
    try:
        yield tasks
    finally:
        for w in writers:
            w.stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def check_content(messages: list, writers: list[Writer]) -> None:
    """Every acknowledged append exactly once, each producer's in its order; nothing
    that no writer sent."""
    for w in writers:
        assert not w.failures, w.failures
        got = [m["seq"] for m in messages if m["p"] == w.name]
        # the last one may have landed without its answer (writer stopped mid-retry)
        assert got[: len(w.acked)] == w.acked, (w.name, got[:20], w.acked[:20])
        assert len(got) <= len(w.acked) + 1, (w.name, len(got), len(w.acked))
        assert got == list(range(len(got))), w.name


async def test_sigkill_one_of_two_nodes_under_load(pg_dsn, tmp_path):
    nodes = [Node(pg_dsn, tmp_path, name).start() for name in ("a", "b")]
    try:
        async with session(timeout=10) as http:
            assert await create(http, nodes[0].url, PATH) == 201
            writers = [Writer(http, nodes, f"w{i}", prefer=i % 2) for i in range(4)]
            async with running(writers) as tasks:
                readers = [Reader(http, nodes[0].url, PATH, "long-poll").start()]
                for rnd in range(3):
                    victim, survivor = nodes[rnd % 2], nodes[(rnd + 1) % 2]
                    await asyncio.sleep(0.5)
                    victim.kill()
                    killed_at = time.monotonic()
                    await asyncio.sleep(0.7)
                    served = sum(1 for w in writers for t in w.acked_at if t > killed_at)
                    assert served > 10, f"round {rnd}: {survivor.name} served {served} appends alone"
                    assert all(not t.done() for t in tasks), [w.failures for w in writers]
                    await asyncio.to_thread(victim.start)
                    if rnd == 0:  # a live reader on the restarted node too
                        readers.append(Reader(http, victim.url, PATH, "sse").start())
                await asyncio.sleep(0.5)
                for w in writers:
                    w.stop.set()
                await asyncio.gather(*tasks)
                assert sum(w.retries for w in writers) > 0  # the kills did hit requests
                final = await read_all(http, nodes[1].url, PATH)
                check_content(final, writers)
                assert await read_all(http, nodes[0].url, PATH) == final
                assert readers[0].broken > 0  # the long-poll reader's node was killed under it
                for reader in readers:
                    await reader.until(len(final), timeout=10)
                    await reader.stop()
                    # a reader cut by a kill goes on from its last offset: nothing twice, nothing lost
                    assert reader.messages == final, reader.base
        # the nodes never logged an error (a 503 "kept changing" under contention is a
        # retry-later answer the writers handle, not a fault)
        for node in nodes:
            errors = [line for line in node.errors().splitlines() if "kept changing" not in line]
            assert not errors, errors
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def durable_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL server of its own that a test may stop (fsync on: a stop with
    `-m immediate` is a crash, and acknowledged writes must survive it)."""
    yield from running_cluster(fsync=True, max_connections=60)


async def readiness(http: aiohttp.ClientSession, node: Node) -> int:
    async with http.get(node.admin_url + "/readyz") as r:
        await r.read()
        return r.status


async def test_postgres_stopped_and_started_under_load(durable_cluster, tmp_path):
    nodes = [Node(durable_cluster.dsn, tmp_path, name, admin=True).start() for name in ("a", "b")]
    try:
        async with session(timeout=10) as http:
            for node in nodes:
                await wait_ready(node.admin_url)
            assert await create(http, nodes[0].url, PATH) == 201
            writers = [Writer(http, nodes, f"w{i}", prefer=i % 2) for i in range(4)]
            async with running(writers) as tasks:
                await asyncio.sleep(0.5)
                before = sum(len(w.acked) for w in writers)
                assert before > 10

                await asyncio.to_thread(durable_cluster.stop, "immediate")
                # during the outage: appends are 503 with Retry-After, readiness is 503
                for node in nodes:
                    async with http.post(node.url + PATH, data=b'{"p": "probe", "seq": 0}', headers={
                            "Content-Type": "application/json", **producer_headers(f"probe-{node.name}", 0)}) as r:
                        await r.read()
                        assert r.status == 503, (node.name, r.status)
                        assert r.headers.get("Retry-After", "").isdigit(), dict(r.headers)
                    deadline = time.monotonic() + 5
                    while await readiness(http, node) != 503:
                        assert time.monotonic() < deadline, f"{node.name} still ready without its database"
                        await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)
                assert all(not t.done() for t in tasks), [w.failures for w in writers]
                stalled = sum(len(w.acked) for w in writers)
                assert all(w.unavailable for w in writers)

                await asyncio.to_thread(durable_cluster.start)
                restarted = time.monotonic()
                # the nodes serve again by themselves
                for node in nodes:
                    while await readiness(http, node) != 200:
                        assert time.monotonic() - restarted < 10, f"{node.name} not ready again"
                        await asyncio.sleep(0.05)
                while sum(len(w.acked) for w in writers) < stalled + 40:
                    assert time.monotonic() - restarted < 10, [len(w.acked) for w in writers]
                    await asyncio.sleep(0.05)
                for node in nodes:  # and each node writes itself, not only through the other
                    # While both nodes' writers race on this one stream, an append may lose
                    # the race 16 times and be answered 503 (Retry-After): a producer retries.
                    for _ in range(10):
                        status = await append(http, node.url, PATH, {"p": "probe", "seq": 0},
                                              producer_headers(f"probe-{node.name}", 0))
                        if status != 503:
                            break
                        await asyncio.sleep(0.2)
                    assert status in (200, 204), status
                for w in writers:
                    w.stop.set()
                await asyncio.gather(*tasks)
                final = await read_all(http, nodes[0].url, PATH)
                check_content(final, writers)
                assert await read_all(http, nodes[1].url, PATH) == final
    finally:
        for node in nodes:
            node.stop()


def listeners(cluster: PgCluster, db: str) -> list[int]:
    """The backends of the nodes' LISTEN connections (listener.py: the one connection
    that LISTENs, and then only runs its keepalive `SELECT 1`)."""
    out = cluster.psql(f"SELECT pid FROM pg_stat_activity WHERE datname = '{db}' "
                       "AND (query LIKE 'LISTEN%' OR query = 'SELECT 1')")
    return [int(pid) for pid in out.split()]


def wait_listeners(cluster: PgCluster, db: str, count: int, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(pids := listeners(cluster, db)) != count:
        assert time.monotonic() < deadline, f"{len(pids)} LISTEN connections, not {count}"
        time.sleep(0.05)
    return pids


@pytest.mark.parametrize("mode", ["long-poll", "sse"])
async def test_listen_connection_dropped_while_a_reader_waits(pg_cluster, pg_dsn, tmp_path, mode):
    db = pg_dsn.split("?")[0].rsplit("/", 1)[1]
    writer = Node(pg_dsn, tmp_path, "a").start()
    # a long-poll timeout far beyond the test: the reader can only learn through LISTEN
    # (or the resync after a reconnect), never through its timeout's re-check
    reader_node = Node(pg_dsn, tmp_path, "b", long_poll="60s").start()
    try:
        async with session() as http:
            assert await create(http, writer.url, PATH) == 201
            reader = Reader(http, reader_node.url, PATH, mode).start()
            assert await append(http, writer.url, PATH, {"i": 0}) == 204
            await reader.until(1, timeout=5)
            count = 1
            for rnd in range(4):
                pids = await asyncio.to_thread(wait_listeners, pg_cluster, db, 2)
                blocked = rnd % 2 == 1
                if blocked:  # the listeners cannot come back until the writes are done
                    pg_cluster.psql(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
                pg_cluster.psql(f"SELECT pg_terminate_backend(pid) FROM unnest(ARRAY{pids}) pid")
                if blocked:
                    await asyncio.to_thread(wait_listeners, pg_cluster, db, 0)
                for _ in range(2):
                    assert await append(http, writer.url, PATH, {"i": count}) == 204
                    count += 1
                if blocked:
                    await asyncio.sleep(0.3)
                    # nobody could notify the reader's node: the resync after its reconnect must
                    assert len(reader.messages) == count - 2
                    pg_cluster.psql(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
                await reader.until(count, timeout=5)
            await asyncio.sleep(0.3)
            await reader.stop()
            assert reader.messages == [{"i": i} for i in range(count)]
            if mode == "long-poll":
                assert reader.requests <= count + 1  # answered by wake-ups, not timeouts
    finally:
        writer.stop()
        reader_node.stop()
    for node in (writer, reader_node):  # the listeners' reconnect warnings aside
        errors = [line for line in node.errors().splitlines() if "cannot connect" not in line]
        assert not errors, errors
