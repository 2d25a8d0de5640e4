"""The PostgreSQL store's own mechanisms, on a real database: group commit (many
streams in one statement), the guard against stale tails, the compaction of small rows
(same bytes, same boundaries, fewer rows), and the schema version check."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from durable_streams.server.store.base import Commit, StaleStream, StreamConfig, StreamState
from durable_streams.server.store.postgres import PostgresStore
from durable_streams.server.store.postgres.compactor import TARGET_ROW
from durable_streams.server.store.postgres.schema import SCHEMA_VERSION, SchemaError, migrate


async def _store(dsn: str) -> PostgresStore:
    store = PostgresStore(dsn)
    await store.open()
    return store


async def _create(store: PostgresStore, path: str) -> None:
    await store.create(StreamConfig(path, "application/octet-stream", store.now(), 0, {"incarnation": path}),
                       StreamState(tail=0, last_access=store.now()))


async def test_many_streams_share_one_flush(pg_dsn):
    store = await _store(pg_dsn)
    try:
        for i in range(50):
            await _create(store, f"/s{i}")
        flushes_before = store.flush_count
        await asyncio.gather(*[store.append(f"/s{i}", b"x" * (i + 1), Commit(tail=i + 1)) for i in range(50)])
        assert store.flush_count - flushes_before <= 2  # queued together: one statement (or two)
        for i in range(50):
            assert await store.read(f"/s{i}", 0, i + 1) == b"x" * (i + 1)
    finally:
        await store.close()


async def test_stale_tail_is_refused_and_nothing_lands(pg_dsn):
    a, b = await _store(pg_dsn), await _store(pg_dsn)
    try:
        await _create(a, "/s")
        assert await b.lookup("/s") is not None
        await a.append("/s", b"abc", Commit(tail=3))
        with pytest.raises(StaleStream):  # b still believes the tail is 0
            await b.append("/s", b"zz", Commit(tail=2))
        assert b.conflicts == 1
        fresh = await b.lookup("/s")
        assert fresh.state.tail == 3
        await b.append("/s", b"de", Commit(tail=5))
        assert await a.read("/s", 0, 5) == b"abcde"
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("plain", [True, False], ids=["append-statement", "flush-statement"])
async def test_a_batch_lands_what_holds_and_refuses_stale_and_closed_streams(pg_dsn, plain):
    """One flush, both statements (plain appends; one carrying producer state): a fresh
    stream lands, a stale one and a closed one are refused, nothing of theirs is written."""
    from durable_streams.server.store.base import ProducerState

    a, b = await _store(pg_dsn), await _store(pg_dsn)
    tag = "p" if plain else "f"
    try:
        for name in ("ok", "stale", "closed"):
            await _create(a, f"/{tag}-{name}")
            assert await b.lookup(f"/{tag}-{name}") is not None
        await a.append(f"/{tag}-stale", b"abc", Commit(tail=3))
        await a.append(f"/{tag}-closed", b"", Commit(tail=0, close=True))
        producer = None if plain else ("w1", ProducerState(0, 0, b.now()))
        results = await asyncio.gather(
            b.append(f"/{tag}-ok", b"hello", Commit(tail=5, producer=producer)),
            b.append(f"/{tag}-stale", b"zz", Commit(tail=2)),
            b.append(f"/{tag}-closed", b"yy", Commit(tail=2)),
            return_exceptions=True)
        assert results[0] is None
        assert isinstance(results[1], StaleStream) and isinstance(results[2], StaleStream)
        assert await a.read(f"/{tag}-stale", 0, 3) == b"abc"
        fresh = await a.lookup(f"/{tag}-ok")
        assert fresh.state.tail == 5 and (plain or fresh.state.producers["w1"].epoch == 0)
        assert (await a.lookup(f"/{tag}-closed")).state.tail == 0
        async with a._pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM chunks c JOIN streams s ON s.id = c.stream_id "
                                       "WHERE s.path = ANY($1)", [f"/{tag}-closed", f"/{tag}-stale"]) == 1
    finally:
        await a.close()
        await b.close()


async def test_compaction_merges_small_rows_and_keeps_bytes_and_boundaries(pg_dsn):
    store = await _store(pg_dsn)
    try:
        await _create(store, "/s")
        await store._compactor.stop()  # merged by hand below, not in the background
        tail, expected = 0, bytearray()
        for i in range(1500):  # one append per flush: one small row each
            piece = b"%05d;" % i + b"." * 94
            tail += len(piece)
            expected += piece
            await store.append("/s", piece, Commit(tail=tail))
        assert tail > 2 * TARGET_ROW
        stream_id = store._ids["/s"]
        conn = await asyncpg.connect(pg_dsn)
        try:
            rows_before = await conn.fetchval("SELECT count(*) FROM chunks WHERE stream_id = $1", stream_id)
            await store._compactor.compact(stream_id)
            rows_after = await conn.fetchval("SELECT count(*) FROM chunks WHERE stream_id = $1", stream_id)
        finally:
            await conn.close()
        assert rows_before >= 1400 and rows_after <= rows_before // 100
        assert await store.read("/s", 0, tail) == bytes(expected)
        assert await store.read("/s", 12345, 23456) == bytes(expected[12345:23456])
        assert await store.next_boundary("/s", 150) == 200  # append ends survive the merge
        assert await store.next_boundary("/s", 199) == 200
        assert await store.next_boundary("/s", 200) == 300
    finally:
        await store.close()


async def test_a_newer_schema_is_refused(pg_dsn):
    store = await _store(pg_dsn)
    await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT version FROM ds_schema") == SCHEMA_VERSION
        assert await migrate(conn) == (SCHEMA_VERSION, SCHEMA_VERSION)  # idempotent
        await conn.execute("UPDATE ds_schema SET version = $1", SCHEMA_VERSION + 1)
        with pytest.raises(SchemaError, match="newer than this server"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_other_nodes_serve_small_appends_from_the_notification(pg_dsn):
    """A flush's notification carries the bytes of small appends: the other node serves
    its readers from memory, and reads what memory does not hold (an older range, a large
    append) from the database, with the same bytes."""
    a, b = await _store(pg_dsn), await _store(pg_dsn)
    heard: asyncio.Queue = asyncio.Queue()
    b.watch(lambda path, tail, closed: heard.put_nowait((path, tail)), lambda: None)
    try:
        await _create(a, "/s")
        assert await b.lookup("/s") is not None

        async def append(data: bytes, tail: int) -> None:
            await a.append("/s", data, Commit(tail=tail))
            while (await asyncio.wait_for(heard.get(), 5)) != ("/s", tail):
                pass

        await append(b"hello", 5)
        await append(b" world", 11)
        from_memory = b.reads_from_memory
        assert await b.read("/s", 5, 11) == b" world"
        assert await b.read("/s", 0, 11) == b"hello world"
        assert await b.read("/s", 3, 8) == b"lo wo"
        assert b.reads_from_memory == from_memory + 3
        large = bytes(range(256)) * 8  # over what a notification carries: read from the database
        await append(large, 11 + len(large))
        assert await b.read("/s", 11, 11 + len(large)) == large
        assert await b.read("/s", 0, 11) == b"hello world"
        assert b.reads_from_memory == from_memory + 3
        await append(b"!", 12 + len(large))  # after the gap, memory starts again here
        assert await b.read("/s", 11 + len(large), 12 + len(large)) == b"!"
        assert b.reads_from_memory == from_memory + 4
        assert await a.read("/s", 0, 12 + len(large)) == b"hello world" + large + b"!"
    finally:
        await a.close()
        await b.close()


async def test_a_deleted_stream_is_not_served_from_memory(pg_dsn):
    a, b = await _store(pg_dsn), await _store(pg_dsn)
    heard: asyncio.Queue = asyncio.Queue()
    b.watch(lambda path, tail, closed: heard.put_nowait(tail), lambda: None)
    try:
        await _create(a, "/s")
        assert await b.lookup("/s") is not None
        await a.append("/s", b"abc", Commit(tail=3))
        assert await asyncio.wait_for(heard.get(), 5) == 3
        await a.delete("/s")
        assert await asyncio.wait_for(heard.get(), 5) == -1  # the delete, notified
        with pytest.raises(StaleStream):
            await b.read("/s", 0, 3)
    finally:
        await a.close()
        await b.close()
