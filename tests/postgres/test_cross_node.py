"""Two server nodes over one PostgreSQL database, over real sockets: what one node
writes, the other serves (live readers included), an idempotent producer may hop
between nodes request by request, concurrent writers through both nodes all land, a
path deleted and re-created elsewhere never shows its old data, and an expiry asked of
both nodes at once ends the same way on both."""

from __future__ import annotations

import asyncio
import itertools
import os
from array import array
from collections.abc import Iterator

import asyncpg
import pytest

from durable_streams.server.engine.offsets import format_offset
from nodes import Node
from stream_client import JSON, Reader, append, create, producer_headers, read_all, session

_paths = itertools.count(1)


def new_path(label: str) -> str:
    return f"/v1/stream/{label}-{os.getpid()}-{next(_paths)}"


@pytest.fixture(scope="module")
def nodes(pg_cluster, tmp_path_factory) -> Iterator[tuple[Node, Node]]:
    """Two nodes on one database for the whole module (each test uses its own paths)."""
    name = f"cross{os.getpid()}"
    pg_cluster.psql(f"CREATE DATABASE {name}")
    dsn = pg_cluster.dsn.replace("/postgres?", f"/{name}?")
    workdir = tmp_path_factory.mktemp("cross-node")
    a = Node(dsn, workdir, "a").start()
    b = Node(dsn, workdir, "b").start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
    for node in (a, b):
        assert not node.errors(), node.errors()


@pytest.mark.parametrize("mode", ["long-poll", "sse"])
async def test_written_on_one_node_read_live_on_the_other(nodes, mode):
    a, b = nodes
    path = new_path(f"live-{mode}")
    async with session() as http:
        assert await create(http, a.url, path) == 201
        for i in range(3):  # before the reader comes
            assert await append(http, a.url, path, {"i": i}) == 204
        reader = Reader(http, b.url, path, mode).start()
        try:
            assert await reader.until(3) == [{"i": i} for i in range(3)]
            expected = 3
            for burst in (1, 4, 1, 3):  # the reader waits between bursts
                await asyncio.sleep(0.3)
                for _ in range(burst):
                    assert await append(http, a.url, path, {"i": expected}) == 204
                    expected += 1
                await reader.until(expected, timeout=5)
            await asyncio.sleep(0.5)  # nothing more may come: no duplicate delivery
            assert reader.messages == [{"i": i} for i in range(expected)]
            if mode == "long-poll":
                # a message arrives within a long-poll, not at its 1 s timeout re-check
                assert reader.requests > 5
        finally:
            await reader.stop()


@pytest.mark.parametrize("background", [False, True], ids=["alone", "under-load"])
async def test_producer_alternating_nodes_with_retries_on_the_other(nodes, background):
    """Under load, each node also has its own appends in flight when the producer's
    request comes: its cache lags the other node's producer state the most."""
    a, b = nodes
    path = new_path("producer")
    count, retried = 30, {4, 5, 11, 17, 18, 29}
    other_seq = itertools.count()
    done = asyncio.Event()
    async with session() as http:
        assert await create(http, a.url, path) == 201

        async def load(node: Node) -> int:
            sent = 0
            while not done.is_set():
                assert await append(http, node.url, path, {"load": node.name}) == 204
                sent += 1
            return sent

        loaders = [asyncio.create_task(load(node)) for node in (a, b)] if background else []
        try:
            for seq in range(count):
                here, other = (a, b) if seq % 2 == 0 else (b, a)
                status = await append(http, here.url, path, {"seq": seq}, producer_headers("p1", seq))
                assert status == 200, f"seq {seq} on {here.name}: {status}"
                if seq in retried:  # the response was "lost": the client retries on the other node
                    for _ in range(2):
                        status = await append(http, other.url, path, {"seq": seq}, producer_headers("p1", seq))
                        assert status == 204, f"retry of seq {seq} on {other.name}: {status}"
                if seq % 7 == 3:  # another producer moves the stream under both caches
                    assert await append(http, other.url, path, {"other": seq},
                                        producer_headers("p2", next(other_seq))) == 200
            # an old seq is a duplicate on both nodes; a gap is refused on both
            for node in (a, b):
                assert await append(http, node.url, path, {"seq": 3}, producer_headers("p1", 3)) == 204
                assert await append(http, node.url, path, {"seq": 99}, producer_headers("p1", count + 1)) == 409
        finally:
            done.set()
            loaded = await asyncio.gather(*loaders)
        assert all(n > 5 for n in loaded), loaded
        expected = []
        for seq in range(count):
            expected.append({"seq": seq})
            if seq % 7 == 3:
                expected.append({"other": seq})
        for node in (a, b):
            messages = await read_all(http, node.url, path)
            assert [m for m in messages if "load" not in m] == expected
            assert len(messages) == len(expected) + sum(loaded)


async def test_concurrent_writers_through_both_nodes(nodes):
    a, b = nodes
    path = new_path("concurrent")
    writers, per_writer = 4, 50
    async with session() as http:
        assert await create(http, a.url, path) == 201

        async def writer(w: int) -> None:
            node = a if w % 2 == 0 else b
            use_producer = w >= 2
            for i in range(per_writer):
                headers = producer_headers(f"w{w}", i) if use_producer else None
                status = await append(http, node.url, path, {"w": w, "i": i}, headers)
                assert status == (200 if use_producer else 204), (w, i, status)

        await asyncio.gather(*(writer(w) for w in range(writers)))
        for node in (a, b):
            messages = await read_all(http, node.url, path)
            assert len(messages) == writers * per_writer
            for w in range(writers):
                assert [m["i"] for m in messages if m["w"] == w] == list(range(per_writer)), w


@pytest.mark.parametrize("deleter", ["a", "b"])
async def test_delete_and_recreate_across_nodes_never_resurrects(nodes, deleter):
    """Re-created on B after a delete on A (A dropped its cache) or on B (A's cache still
    holds the old incarnation and never heard of the delete): A serves the new one only."""
    a, b = nodes
    d = a if deleter == "a" else b
    path = new_path(f"recreate-{deleter}")
    async with session() as http:
        assert await create(http, a.url, path) == 201
        for i in range(3):
            assert await append(http, a.url, path, {"old": i}, producer_headers("p", i)) == 200
        assert await read_all(http, a.url, path) == [{"old": i} for i in range(3)]  # A has it cached
        assert len(await read_all(http, b.url, path)) == 3

        async with http.delete(d.url + path) as r:
            assert r.status == 204
        # whatever A's cache holds, its answers are the database's
        assert await append(http, a.url, path, {"old": 3}) == 404
        assert await append(http, b.url, path, {"old": 3}) == 404
        async with http.get(a.url + path, params={"offset": "-1"}) as r:
            assert r.status == 404
        async with http.head(a.url + path) as r:
            assert r.status == 404

        assert await create(http, b.url, path) == 201
        # the first request on A after the re-create is an append (the cached-path case)
        assert await append(http, a.url, path, {"new": 0}) == 204
        # the producer's state went with the old incarnation: seq 0 is new again
        assert await append(http, a.url, path, {"new": 1}, producer_headers("p", 0)) == 200
        assert await append(http, b.url, path, {"new": 2}) == 204
        expected = [{"new": i} for i in range(3)]
        assert await read_all(http, a.url, path) == expected
        assert await read_all(http, b.url, path) == expected

        # deleted and re-created again, now with a different content type, while A reads
        reader = Reader(http, a.url, path, "long-poll").start()
        await reader.until(3)
        async with http.delete(d.url + path) as r:
            assert r.status == 204
        async with http.put(b.url + path, headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 201
        async with http.post(a.url + path, data=b"hello", headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 204
        async with http.post(a.url + path, data=b'{"new": 9}', headers={"Content-Type": JSON}) as r:
            assert r.status == 409  # the new incarnation's content type rules, on A too
        for node in (a, b):
            async with http.get(node.url + path, params={"offset": "-1"}) as r:
                assert (r.status, await r.read()) == (200, b"hello")
        await asyncio.sleep(0.3)
        await reader.stop()
        assert reader.messages == expected  # never a message of the next incarnation


async def test_expiry_raced_by_both_nodes(nodes):
    a, b = nodes
    path = new_path("ttl")
    async with session() as http:
        assert await create(http, a.url, path, **{"Stream-TTL": "1"}) == 201
        assert await append(http, b.url, path, {"i": 0}) == 204
        assert await read_all(http, a.url, path) == [{"i": 0}]  # both nodes have it cached
        async with http.head(b.url + path) as r:
            assert r.status == 200
        await asyncio.sleep(1.6)

        async def ask(node: Node, method: str) -> int:
            async with http.request(method, node.url + path, params={"offset": "-1"}) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(ask(node, method) for _ in range(3)
                                          for node in (a, b) for method in ("HEAD", "GET")))
        assert set(statuses) == {404}, statuses
        # a new incarnation, created on one node, appended on the other
        assert await create(http, b.url, path) == 201
        assert await append(http, a.url, path, {"i": "new"}) == 204
        for node in (a, b):
            assert await read_all(http, node.url, path) == [{"i": "new"}]


async def test_expired_stream_recreated_concurrently_on_both_nodes(nodes):
    """After the expiry, PUT on both nodes at once: one 201, the other an identical-create 200."""
    a, b = nodes
    path = new_path("ttl-race")
    async with session() as http:
        assert await create(http, a.url, path, **{"Stream-TTL": "1"}) == 201
        assert await append(http, a.url, path, {"old": 0}) == 204
        assert len(await read_all(http, b.url, path)) == 1
        await asyncio.sleep(1.6)
        statuses = sorted(await asyncio.gather(create(http, a.url, path), create(http, b.url, path)))
        assert statuses == [200, 201], statuses
        for node in (a, b):
            assert await read_all(http, node.url, path) == []


async def test_a_live_read_from_an_offset_its_node_has_not_heard_of_looks_the_stream_up(nodes):
    """A live read starts from the node's cached stream while every change to it is being
    notified (no lookup per long-poll). An offset past the cached tail comes from a change
    the node has not heard of yet (here one written behind the nodes' backs, so never
    notified): the node looks the stream up instead of refusing the offset."""
    a, b = nodes
    path = new_path("unheard")
    binary = {"Content-Type": "application/octet-stream"}
    async with session() as http:
        async with http.put(a.url + path, headers=binary) as r:
            assert r.status == 201
        async with http.post(a.url + path, data=b"abc", headers=binary) as r:
            assert r.status == 204
        async with http.get(b.url + path, params={"offset": "-1"}) as r:  # b caches it
            assert await r.read() == b"abc"
        async with http.get(b.url + path, params={"offset": format_offset(3), "live": "long-poll"}) as r:
            assert r.status == 204  # b's cache holds the tail: it waited out its timeout
        conn = await asyncpg.connect(a.dsn)
        try:
            async with conn.transaction():
                stream_id = await conn.fetchval("SELECT id FROM streams WHERE path = $1", path)
                await conn.execute("INSERT INTO chunks (stream_id, start_offset, end_offset, data, ends) "
                                   "VALUES ($1, 3, 5, 'de', $2)", stream_id, array("q", [5]).tobytes())
                await conn.execute("UPDATE streams SET tail = 5 WHERE id = $1", stream_id)
        finally:
            await conn.close()
        async with http.get(b.url + path, params={"offset": format_offset(5), "live": "long-poll"}) as r:
            await r.read()
            assert r.status == 204 and r.headers["Stream-Next-Offset"] == format_offset(5)
        async with http.get(b.url + path, params={"offset": format_offset(3)}) as r:
            assert await r.read() == b"de"
        async with http.post(a.url + path, data=b"f", headers=binary) as r:
            assert r.status == 204
        async with http.get(b.url + path, params={"offset": format_offset(5), "live": "long-poll"}) as r:
            assert r.status == 200 and await r.read() == b"f"  # now heard of, or waited for
