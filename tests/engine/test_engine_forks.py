"""Forks: a fork shares its source's offset space, reads stitch source + fork, and a
deleted source with live forks is soft-deleted until its last fork goes."""

from __future__ import annotations

import pytest

from engine_support import fork, post, put, read_all

from durable_streams.server.engine.errors import (
    Conflict, InvalidRequest, StreamGone, StreamNotFound,
)
from durable_streams.server.engine.forks import ForkRequest
from durable_streams.server.engine.streams import Chunk, CreateRequest, CreateResult, StreamEngine


async def test_fork_at_tail_inherits_content_type_and_stitches_reads(engine):
    await engine.create("/src", put("text/plain", body=b"abc"))
    created = await engine.create("/f", fork("/src"))
    assert created == CreateResult(True, "text/plain", 3, False)
    assert (await engine.append("/f", post(b"def"))).tail == 6
    assert await read_all(engine, "/f") == b"abcdef"
    forked = await engine.require("/f")
    assert await engine.read(forked, 2, 2) == Chunk(b"cd", 2, 4, False, False)


async def test_source_appends_after_the_fork_are_invisible(engine):
    await engine.create("/src", put(body=b"abc"))
    await engine.create("/f", fork("/src"))
    await engine.append("/src", post(b"XYZ"))
    await engine.append("/f", post(b"def"))
    assert await read_all(engine, "/src") == b"abcXYZ"
    assert await read_all(engine, "/f") == b"abcdef"


async def test_fork_at_an_offset(engine):
    await engine.create("/src", put(body=b"abcdef"))
    assert (await engine.create("/f", fork("/src", offset=2))).tail == 2
    assert await read_all(engine, "/f") == b"ab"
    await engine.append("/f", post(b"Z"))
    assert await read_all(engine, "/f") == b"abZ"
    assert (await engine.create("/zero", fork("/src", offset=0))).tail == 0
    assert await read_all(engine, "/zero") == b""


async def test_fork_of_a_fork_reads_the_whole_chain(engine):
    await engine.create("/a", put(body=b"ab"))
    await engine.create("/b", fork("/a"))
    await engine.append("/b", post(b"cd"))
    await engine.create("/c", fork("/b", offset=3))
    await engine.append("/c", post(b"EF"))
    assert await read_all(engine, "/c") == b"abcEF"


async def test_fork_of_a_closed_source_is_open(engine):
    await engine.create("/src", put(body=b"ab", closed=True))
    assert await engine.create("/f", fork("/src")) == CreateResult(True, "text/plain", 2, False)
    assert (await engine.append("/f", post(b"c"))).tail == 3


async def test_fork_offset_beyond_tail_is_invalid(engine):
    await engine.create("/src", put(body=b"abc"))
    with pytest.raises(InvalidRequest):
        await engine.create("/f", fork("/src", offset=4))
    with pytest.raises(InvalidRequest):
        await engine.create("/f", CreateRequest(None, fork=ForkRequest("/src", "garbage", 0)))
    with pytest.raises(StreamNotFound):
        await engine.require("/f")


async def test_fork_of_a_missing_source(engine):
    with pytest.raises(StreamNotFound):
        await engine.create("/f", fork("/nope"))
    assert engine.stream_count == 0


async def test_fork_with_another_content_type_conflicts(engine):
    await engine.create("/src", put("text/plain"))
    with pytest.raises(Conflict):
        await engine.create("/f", fork("/src", content_type="application/json"))
    assert (await engine.create("/f", fork("/src", content_type="text/plain; charset=utf-8"))).created


async def test_identical_fork_recreate(engine):
    await engine.create("/src", put(body=b"abcd"))
    await engine.create("/f", fork("/src", offset=2))
    assert await engine.create("/f", fork("/src", offset=2)) == CreateResult(False, "text/plain", 2, False)
    assert (await engine.create("/f", fork("/src"))).created is False  # offset not given: not compared
    for other in (fork("/src", offset=3), fork("/src", offset=2, sub_offset=1), put("text/plain")):
        with pytest.raises(Conflict):
            await engine.create("/f", other)


async def test_bytes_sub_offset_counts_bytes(engine):
    await engine.create("/src", put(body=b"abcdef"))
    assert (await engine.create("/f", fork("/src", offset=1, sub_offset=2))).tail == 3
    assert await read_all(engine, "/f") == b"abc"
    with pytest.raises(InvalidRequest):  # past the tail
        await engine.create("/g", fork("/src", offset=5, sub_offset=2))
    with pytest.raises(InvalidRequest):  # at the tail
        await engine.create("/g", fork("/src", sub_offset=1))


async def test_json_sub_offset_counts_messages(engine):
    await engine.create("/src", put("application/json", body=b'[1, "two", {"t": 3}, 4]'))
    # Records: 1\n (2) "two"\n (6) {"t":3}\n (8) 4\n (2)
    created = await engine.create("/f", fork("/src", offset=2, sub_offset=2))
    assert created == CreateResult(True, "application/json", 16, False)
    assert await read_all(engine, "/f") == b'1\n"two"\n{"t":3}\n'
    await engine.append("/f", post(b"[5]", "application/json"))
    assert await read_all(engine, "/f") == b'1\n"two"\n{"t":3}\n5\n'
    with pytest.raises(InvalidRequest):  # three messages past offset 8 do not exist
        await engine.create("/g", fork("/src", offset=8, sub_offset=3))
    with pytest.raises(InvalidRequest):  # not between messages
        await engine.create("/g", fork("/src", offset=3))


async def test_deleting_a_source_with_a_fork_soft_deletes_it(engine):
    await engine.create("/src", put(body=b"abc"))
    await engine.create("/f", fork("/src"))
    await engine.delete("/src")
    with pytest.raises(StreamGone):
        await engine.require("/src")
    with pytest.raises(StreamGone):
        await engine.append("/src", post(b"x"))
    with pytest.raises(StreamGone):
        await engine.delete("/src")
    with pytest.raises(Conflict):
        await engine.create("/src", put(body=b"new"))
    with pytest.raises(Conflict):  # a soft-deleted stream cannot be forked either
        await engine.create("/g", fork("/src"))
    assert engine.stream_count == 2
    await engine.append("/f", post(b"d"))
    assert await read_all(engine, "/f") == b"abcd"


async def test_deleting_the_last_fork_collects_the_source(engine):
    await engine.create("/src", put(body=b"abc"))
    await engine.create("/f1", fork("/src"))
    await engine.create("/f2", fork("/src", offset=1))
    await engine.delete("/src")
    await engine.delete("/f1")
    with pytest.raises(StreamGone):  # /f2 still reads it
        await engine.require("/src")
    assert await read_all(engine, "/f2") == b"a"
    await engine.delete("/f2")
    with pytest.raises(StreamNotFound):
        await engine.require("/src")
    assert engine.stream_count == 0
    assert await engine.create("/src", put()) == CreateResult(True, "text/plain", 0, False)
    assert await read_all(engine, "/src") == b""


async def test_collection_cascades_up_a_chain(engine):
    await engine.create("/a", put(body=b"a"))
    await engine.create("/b", fork("/a"))
    await engine.append("/b", post(b"b"))
    await engine.create("/c", fork("/b"))
    await engine.delete("/a")
    await engine.delete("/b")
    assert await read_all(engine, "/c") == b"ab"
    assert engine.stream_count == 3
    await engine.delete("/c")
    assert engine.stream_count == 0
    for path in ("/a", "/b", "/c"):
        with pytest.raises(StreamNotFound):
            await engine.require(path)


async def test_deleting_a_fork_leaves_a_live_source(engine):
    await engine.create("/src", put(body=b"abc"))
    await engine.create("/f", fork("/src"))
    await engine.delete("/f")
    assert await read_all(engine, "/src") == b"abc"
    with pytest.raises(StreamNotFound):
        await engine.delete("/f")
    await engine.delete("/src")
    assert engine.stream_count == 0


async def test_soft_deleted_source_survives_reopen(make_store, clock):
    engine = StreamEngine(make_store(), clock=clock)
    await engine.open()
    await engine.create("/src", put(body=b"abc"))
    await engine.create("/f", fork("/src", offset=2))
    await engine.delete("/src")
    await engine.close()

    engine = StreamEngine(make_store(), clock=clock)
    await engine.open()
    try:
        with pytest.raises(StreamGone):
            await engine.require("/src")
        assert await read_all(engine, "/f") == b"ab"
        await engine.delete("/f")
        assert engine.stream_count == 0
    finally:
        await engine.close()
