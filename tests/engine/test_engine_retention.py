"""Retention on every store: the floor moves in whole appends, reads below it are gone,
offset -1 reads from it, forks and reads in progress pin it, and it survives a reopen."""

from __future__ import annotations

import pytest

from durable_streams.server.engine.errors import BelowFloor
from durable_streams.server.engine.retention import RetentionRule
from durable_streams.server.engine.streams import StreamEngine

from engine_support import fork, post, put


async def _engine(make_store, clock, *rules: RetentionRule) -> StreamEngine:
    engine = StreamEngine(make_store(), clock=clock, retention=rules)
    await engine.open()
    return engine


async def _fill(engine: StreamEngine, path: str, count: int, size: int = 100) -> bytes:
    data = b""
    for i in range(count):
        piece = (b"%04d:" % i).ljust(size, b".")
        await engine.append(path, post(piece))
        data += piece
    return data


async def test_max_size_keeps_whole_appends_and_the_newest(make_store, clock):
    engine = await _engine(make_store, clock, RetentionRule(max_size=1000))
    try:
        await engine.create("/s", put())
        data = await _fill(engine, "/s", 30)
        stream = await engine.require("/s")
        await engine.retain(stream)
        floor = stream.state.floor
        # whole appends, at most max_size kept, and down to 7/8 of it (less one append) so
        # that a stream at its bound is not compacted on every append
        assert floor % 100 == 0 and 875 - 100 <= stream.state.tail - floor <= 1000
        chunk = await engine.read(stream, engine.read_start(stream, None), 10_000)
        assert chunk.start == floor and chunk.data == data[floor:]
        with pytest.raises(BelowFloor) as gone:
            engine.read_start(stream, floor - 1)
        assert gone.value.floor == floor
        with pytest.raises(BelowFloor):
            await engine.read(stream, 0, 100)
    finally:
        await engine.close()


async def test_a_single_append_larger_than_the_bound_is_kept(make_store, clock):
    engine = await _engine(make_store, clock, RetentionRule(max_size=50))
    try:
        await engine.create("/s", put())
        await _fill(engine, "/s", 3)
        stream = await engine.require("/s")
        await engine.retain(stream)
        assert stream.state.floor == 200  # the last append (100 bytes > 50) stays whole
    finally:
        await engine.close()


async def test_max_age_drops_only_appends_older_than_it(make_store, clock):
    engine = await _engine(make_store, clock, RetentionRule(max_age=120.0))  # a mark every 10 s
    try:
        await engine.create("/s", put())
        stream = await engine.require("/s")
        for _ in range(30):  # 300 s, 10 appends per 10 s
            await _fill(engine, "/s", 10)
            await engine.retain(stream)
            clock.advance(10)
        floor, tail = stream.state.floor, stream.state.tail
        # Everything older than 120 s is gone, up to one mark interval late; nothing newer.
        assert tail - 13 * 1000 <= floor <= tail - 12 * 1000
    finally:
        await engine.close()


async def test_forks_and_reads_in_progress_pin_the_floor(make_store, clock):
    engine = await _engine(make_store, clock, RetentionRule(pattern="/src", max_size=500))
    try:
        await engine.create("/src", put())
        await _fill(engine, "/src", 10)
        await engine.create("/f", fork("/src", offset=300))
        await _fill(engine, "/src", 10)
        src = await engine.require("/src")
        await engine.retain(src)
        assert src.state.floor <= 300  # the fork still reads [0, 300) through its source
        fork_stream = await engine.require("/f")
        assert (await engine.read(fork_stream, 0, 10_000)).data[:300].startswith(b"0000:")
        await engine.delete("/f")
        reading = engine.read_pages(src, 600, 2000, 100)
        await reading.__anext__()  # a catch-up read from 600 is in progress
        await engine.retain(src)
        assert src.state.floor <= 600
        await reading.aclose()
        await engine.retain(src)
        assert src.state.floor == 1600
    finally:
        await engine.close()


async def test_floor_survives_reopen(make_store, clock):
    engine = await _engine(make_store, clock, RetentionRule(max_size=300))
    await engine.create("/s", put())
    data = await _fill(engine, "/s", 10)
    await engine.retain(await engine.require("/s"))
    await engine.close()

    engine = await _engine(make_store, clock)  # no rule now: the floor stays, nothing more goes
    try:
        stream = await engine.require("/s")
        assert stream.state.floor == 800
        assert (await engine.read(stream, engine.read_start(stream, None), 10_000)).data == data[800:]
        with pytest.raises(BelowFloor):
            engine.read_start(stream, 0)
    finally:
        await engine.close()


async def test_json_streams_stay_whole_messages_from_the_floor(make_store, clock):
    engine = await _engine(make_store, clock, RetentionRule(max_size=40))
    try:
        await engine.create("/j", put("application/json"))
        for i in range(20):
            await engine.append("/j", post(b'{"n": %d}' % i, "application/json"))
        stream = await engine.require("/j")
        await engine.retain(stream)
        chunk = await engine.read(stream, engine.read_start(stream, None), 10_000)
        lines = chunk.data.split(b"\n")[:-1]
        assert lines and lines[-1] == b'{"n":19}' and all(line.startswith(b'{"n":') for line in lines)
    finally:
        await engine.close()


async def test_a_fork_below_the_source_floor_is_gone_and_a_fork_above_inherits_it(make_store, clock):
    engine = await _engine(make_store, clock, RetentionRule(pattern="/src", max_size=500))
    try:
        await engine.create("/src", put())
        data = await _fill(engine, "/src", 20)
        src = await engine.require("/src")
        await engine.retain(src)
        floor = src.state.floor
        assert floor > 0
        with pytest.raises(BelowFloor):
            await engine.create("/early", fork("/src", offset=floor - 100))
        await engine.create("/late", fork("/src", offset=floor + 100))
        late = await engine.require("/late")
        assert late.state.floor == floor
        assert (await engine.read(late, engine.read_start(late, None), 10_000)).data == data[floor:floor + 100]
        with pytest.raises(BelowFloor):
            engine.read_start(late, 0)
    finally:
        await engine.close()


async def test_a_fork_keeps_everything_it_inherited(make_store, clock):
    """The source's retention stops at the fork's floor, not at its base: the fork goes on
    reading its whole inherited history through the source."""
    engine = await _engine(make_store, clock, RetentionRule(pattern="/src", max_size=300))
    try:
        await engine.create("/src", put())
        data = await _fill(engine, "/src", 10)
        await engine.create("/f", fork("/src", offset=1000))
        await _fill(engine, "/src", 10)
        src = await engine.require("/src")
        await engine.retain(src)
        assert src.state.floor == 0  # the fork reads [0, 1000) through it
        fork_stream = await engine.require("/f")
        assert (await engine.read(fork_stream, engine.read_start(fork_stream, None), 10_000)).data == data
    finally:
        await engine.close()
