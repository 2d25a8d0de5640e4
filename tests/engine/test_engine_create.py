"""Create: a new stream, the idempotent re-create of an identical one, and a Conflict
when the configuration (content type, TTL / Expires-At, closure) differs."""

from __future__ import annotations

import pytest

from engine_support import T0, claim, post, put, read_all

from durable_streams.server.engine.errors import Conflict, InvalidRequest, StreamNotFound
from durable_streams.server.engine.expiry import Lifetime
from durable_streams.server.engine.streams import DEFAULT_CONTENT_TYPE, CreateResult, StreamEngine


async def test_create_then_identical_recreate(engine):
    first = await engine.create("/s", put("text/plain", body=b"hello"))
    assert first == CreateResult(created=True, content_type="text/plain", tail=5, closed=False)
    await engine.append("/s", post(b"!"))
    # An identical re-create confirms the stream as it is now; its body is ignored.
    again = await engine.create("/s", put("text/plain", body=b"ignored"))
    assert again == CreateResult(created=False, content_type="text/plain", tail=6, closed=False)
    assert await read_all(engine, "/s") == b"hello!"
    assert engine.stream_count == 1


async def test_recreate_compares_media_type_only(engine):
    await engine.create("/s", put("text/plain; charset=utf-8"))
    again = await engine.create("/s", put("Text/Plain"))
    assert again == CreateResult(False, "text/plain; charset=utf-8", 0, False)


async def test_default_content_type(engine):
    result = await engine.create("/s", put(None))
    assert result.content_type == DEFAULT_CONTENT_TYPE == "application/octet-stream"
    stream = await engine.require("/s")
    assert stream.config.content_type == "application/octet-stream"
    # A missing Content-Type on re-create means the default too.
    assert (await engine.create("/s", put(None))).created is False
    assert (await engine.create("/s", put("application/octet-stream"))).created is False
    with pytest.raises(Conflict):
        await engine.create("/s", put("text/plain"))


async def test_recreate_with_other_content_type_conflicts(engine):
    await engine.create("/s", put("text/plain"))
    with pytest.raises(Conflict) as caught:
        await engine.create("/s", put("application/json"))
    assert type(caught.value) is Conflict


LIFETIME_PAIRS = [
    (Lifetime(ttl=60), Lifetime(ttl=61)),
    (Lifetime(ttl=60), Lifetime()),
    (Lifetime(), Lifetime(ttl=60)),
    (Lifetime(expires_at=T0 + 100), Lifetime(expires_at=T0 + 101)),
    (Lifetime(expires_at=T0 + 100), Lifetime(ttl=100)),
]


async def test_recreate_with_other_lifetime_conflicts(engine):
    for index, (first, second) in enumerate(LIFETIME_PAIRS):
        path = f"/s{index}"
        await engine.create(path, put(lifetime=first))
        with pytest.raises(Conflict):
            await engine.create(path, put(lifetime=second))
        assert (await engine.create(path, put(lifetime=first))).created is False, (first, second)


async def test_recreate_with_other_closed_status_conflicts(engine):
    await engine.create("/open", put())
    await engine.create("/closed", put(closed=True, body=b"all"))
    with pytest.raises(Conflict):
        await engine.create("/open", put(closed=True))
    with pytest.raises(Conflict):
        await engine.create("/closed", put(closed=False))
    assert await engine.create("/closed", put(closed=True)) == CreateResult(False, "text/plain", 3, True)
    # Closing the open one later makes a closed re-create the matching one.
    await engine.append("/open", post(b"", close=True))
    assert await engine.create("/open", put(closed=True)) == CreateResult(False, "text/plain", 0, True)
    with pytest.raises(Conflict):
        await engine.create("/open", put())


async def test_create_closed_with_body(engine):
    result = await engine.create("/s", put(closed=True, body=b"final"))
    assert result == CreateResult(True, "text/plain", 5, True)
    stream = await engine.require("/s")
    chunk = await engine.read(stream, 0, 100)
    assert (chunk.data, chunk.next, chunk.up_to_date, chunk.closed) == (b"final", 5, True, True)


async def test_json_initial_body_is_flattened_one_level(engine):
    result = await engine.create("/j", put("application/json", body=b'[{"a": 1}, [2, 3], "x"]'))
    records = b'{"a":1}\n[2,3]\n"x"\n'
    assert result == CreateResult(True, "application/json", len(records), False)
    assert await read_all(engine, "/j") == records


async def test_json_initial_single_value(engine):
    await engine.create("/j", put("application/json", body=b' {"k" : "v"} '))
    assert await read_all(engine, "/j") == b'{"k":"v"}\n'


async def test_json_empty_array_allowed_on_create(engine):
    result = await engine.create("/j", put("application/json", body=b"[]"))
    assert result == CreateResult(True, "application/json", 0, False)
    assert await read_all(engine, "/j") == b""


async def test_invalid_json_initial_body_creates_nothing(engine):
    for body in (b'{"a":', b"NaN", b"\xff", b"[1,]"):
        with pytest.raises(InvalidRequest):
            await engine.create("/j", put("application/json", body=body))
        with pytest.raises(StreamNotFound):
            await engine.require("/j")
    assert engine.stream_count == 0


async def test_state_survives_reopen(make_store, clock):
    """What the engine decided is what a new engine over the same store sees."""
    engine = StreamEngine(make_store(), clock=clock)
    await engine.open()
    await engine.create("/s", put(lifetime=Lifetime(ttl=3600)))
    await engine.append("/s", post(b"ab", stream_seq="1", producer=claim("p", 2, 0)))
    await engine.append("/s", post(b"c", close=True, producer=claim("p", 2, 1)))
    await engine.close()

    engine = StreamEngine(make_store(), clock=clock)
    await engine.open()
    try:
        stream = await engine.require("/s")
        assert (stream.state.tail, stream.state.closed) == (3, True)
        assert stream.config.content_type == "text/plain"
        assert await read_all(engine, "/s") == b"abc"
        retry = await engine.append("/s", post(b"c", close=True, producer=claim("p", 2, 1)))
        assert (retry.tail, retry.closed, retry.wrote, retry.producer.duplicate) == (3, True, False, True)
        assert (await engine.create("/s", put(lifetime=Lifetime(ttl=3600), closed=True))).created is False
    finally:
        await engine.close()
