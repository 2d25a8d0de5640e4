"""Appends: validation (content type, empty bodies, JSON), closure and its idempotent
retries, and Stream-Seq ordering. A refused append writes nothing."""

from __future__ import annotations

import pytest

from engine_support import claim, close_only, post, put, read_all

from durable_streams.server.engine.errors import (
    Conflict, InvalidRequest, StreamClosed, StreamNotFound,
)
from durable_streams.server.engine.producers import ProducerVerdict
from durable_streams.server.engine.streams import AppendResult


async def tail_of(engine, path: str) -> int:
    return (await engine.require(path)).state.tail


# ---------------------------------------------------------------- validation

async def test_append_returns_new_tail(engine):
    await engine.create("/s", put(body=b"ab"))
    assert await engine.append("/s", post(b"cde")) == AppendResult(tail=5, closed=False, producer=None, wrote=True)
    assert await engine.append("/s", post(b"f")) == AppendResult(6, False, None, True)
    assert await read_all(engine, "/s") == b"abcdef"


async def test_append_to_missing_stream(engine):
    with pytest.raises(StreamNotFound):
        await engine.append("/nope", post(b"x"))


async def test_content_type_mismatch_conflicts(engine):
    await engine.create("/s", put("text/plain", body=b"a"))
    with pytest.raises(Conflict) as caught:
        await engine.append("/s", post(b"b", "application/json"))
    assert type(caught.value) is Conflict
    assert await tail_of(engine, "/s") == 1
    # Parameters and case are not part of the type.
    assert (await engine.append("/s", post(b"b", "TEXT/plain; charset=utf-8"))).tail == 2


async def test_body_without_content_type_is_invalid(engine):
    await engine.create("/s", put())
    with pytest.raises(InvalidRequest):
        await engine.append("/s", post(b"x", None))
    assert await tail_of(engine, "/s") == 0


async def test_empty_body_without_close_is_invalid(engine):
    await engine.create("/s", put(body=b"a"))
    with pytest.raises(InvalidRequest):
        await engine.append("/s", post(b""))
    stream = await engine.require("/s")
    assert (stream.state.tail, stream.state.closed) == (1, False)


async def test_invalid_json_append_is_invalid(engine):
    await engine.create("/j", put("application/json", body=b"1"))
    for body in (b'{"a":', b"NaN", b"Infinity", b"\xc3(", b"[1] [2]", b"'x'"):
        with pytest.raises(InvalidRequest):
            await engine.append("/j", post(body, "application/json"))
    assert await read_all(engine, "/j") == b"1\n"


async def test_empty_json_array_append_is_invalid(engine):
    await engine.create("/j", put("application/json"))
    with pytest.raises(InvalidRequest):
        await engine.append("/j", post(b"[]", "application/json"))
    with pytest.raises(InvalidRequest):  # also from a producer, whose state stays new
        await engine.append("/j", post(b" [ ] ", "application/json", producer=claim("p", 0, 0)))
    assert await tail_of(engine, "/j") == 0
    accepted = await engine.append("/j", post(b"[7]", "application/json", producer=claim("p", 0, 0)))
    assert accepted == AppendResult(2, False, ProducerVerdict(False, 0, 0), True)


async def test_json_append_flattens_one_level(engine):
    await engine.create("/j", put("application/json"))
    result = await engine.append("/j", post(b'[1, [2, {"b": null}], "\xc3\xa9"]', "application/json"))
    records = '1\n[2,{"b":null}]\n"é"\n'.encode()
    assert result.tail == len(records)
    assert await read_all(engine, "/j") == records


# ---------------------------------------------------------------- closure

def close_with_type(content_type: str):
    return post(b"", content_type, close=True)


async def test_append_after_close_carries_the_tail(engine):
    await engine.create("/s", put(body=b"abc"))
    closed = await engine.append("/s", post(b"de", close=True))
    assert closed == AppendResult(5, True, None, True)
    for request in (post(b"x"), post(b"x", close=True), post(b"x", producer=claim("p", 0, 0))):
        with pytest.raises(StreamClosed) as caught:
            await engine.append("/s", request)
        assert caught.value.tail == 5
        assert isinstance(caught.value, Conflict)
    stream = await engine.require("/s")
    assert (stream.state.tail, stream.state.closed) == (5, True)
    assert await read_all(engine, "/s") == b"abcde"


async def test_close_only_is_idempotent(engine):
    await engine.create("/s", put(body=b"abc"))
    assert await engine.append("/s", close_only()) == AppendResult(3, True, None, wrote=True)
    assert await engine.append("/s", close_only()) == AppendResult(3, True, None, wrote=False)
    # A close-only carries no content, so its Content-Type is not compared.
    again = await engine.append("/s", close_with_type("application/json"))
    assert again == AppendResult(3, True, None, wrote=False)


async def test_close_only_on_open_stream_ignores_content_type(engine):
    await engine.create("/s", put("text/plain", body=b"a"))
    assert await engine.append("/s", close_with_type("image/png")) == AppendResult(1, True, None, True)


async def test_closed_at_create_refuses_appends(engine):
    await engine.create("/s", put(closed=True))
    with pytest.raises(StreamClosed) as caught:
        await engine.append("/s", post(b"x"))
    assert caught.value.tail == 0
    assert await engine.append("/s", close_only()) == AppendResult(0, True, None, wrote=False)


async def test_producer_close_retry_is_a_duplicate(engine):
    await engine.create("/s", put())
    first = await engine.append("/s", post(b"ab", producer=claim("p", 0, 0)))
    assert first == AppendResult(2, False, ProducerVerdict(False, 0, 0), True)
    closing = await engine.append("/s", post(b"cd", close=True, producer=claim("p", 0, 1)))
    assert closing == AppendResult(4, True, ProducerVerdict(False, 0, 1), True)
    retry = await engine.append("/s", post(b"cd", close=True, producer=claim("p", 0, 1)))
    assert retry == AppendResult(4, True, ProducerVerdict(True, 0, 1), wrote=False)
    # Another tuple, even the next seq of the same producer, meets a closed stream.
    for other in (claim("p", 0, 2), claim("q", 0, 0), claim("p", 1, 0)):
        with pytest.raises(StreamClosed) as caught:
            await engine.append("/s", post(b"cd", close=True, producer=other))
        assert caught.value.tail == 4
    assert await read_all(engine, "/s") == b"abcd"


async def test_producer_close_only_retry_is_a_duplicate(engine):
    await engine.create("/s", put(body=b"x"))
    assert await engine.append("/s", close_only(producer=claim("p", 3, 0))) == \
        AppendResult(1, True, ProducerVerdict(False, 3, 0), True)
    assert await engine.append("/s", close_only(producer=claim("p", 3, 0))) == \
        AppendResult(1, True, ProducerVerdict(True, 3, 0), wrote=False)


# ---------------------------------------------------------------- Stream-Seq

async def test_stream_seq_must_strictly_increase(engine):
    await engine.create("/s", put())
    assert (await engine.append("/s", post(b"a", stream_seq="b"))).tail == 1
    for stale in ("b", "a", "B", ""):
        with pytest.raises(Conflict) as caught:
            await engine.append("/s", post(b"x", stream_seq=stale))
        assert type(caught.value) is Conflict
    assert (await engine.append("/s", post(b"c", stream_seq="b0"))).tail == 2
    assert (await engine.append("/s", post(b"d", stream_seq="c"))).tail == 3
    assert await read_all(engine, "/s") == b"acd"


async def test_stream_seq_is_lexicographic_not_numeric(engine):
    await engine.create("/s", put())
    await engine.append("/s", post(b"a", stream_seq="9"))
    with pytest.raises(Conflict):
        await engine.append("/s", post(b"b", stream_seq="10"))
    await engine.append("/s", post(b"b", stream_seq="90"))
    assert await read_all(engine, "/s") == b"ab"


async def test_appends_without_stream_seq_keep_the_last_one(engine):
    await engine.create("/s", put())
    await engine.append("/s", post(b"a", stream_seq="5"))
    await engine.append("/s", post(b"b"))
    with pytest.raises(Conflict):
        await engine.append("/s", post(b"c", stream_seq="5"))
    await engine.append("/s", post(b"c", stream_seq="6"))
    assert await read_all(engine, "/s") == b"abc"


async def test_refused_append_does_not_store_its_stream_seq(engine):
    await engine.create("/s", put())
    with pytest.raises(Conflict):  # content type, checked before Stream-Seq
        await engine.append("/s", post(b"a", "application/json", stream_seq="5"))
    assert (await engine.append("/s", post(b"a", stream_seq="5"))).tail == 1


async def test_closed_is_reported_before_stream_seq(engine):
    await engine.create("/s", put())
    await engine.append("/s", post(b"a", stream_seq="5", close=True))
    with pytest.raises(StreamClosed) as caught:
        await engine.append("/s", post(b"b", stream_seq="1"))
    assert caught.value.tail == 1


async def test_producer_duplicate_with_same_stream_seq_is_a_duplicate(engine):
    await engine.create("/s", put())
    await engine.append("/s", post(b"a", stream_seq="0001", producer=claim("p", 0, 0)))
    retry = await engine.append("/s", post(b"a", stream_seq="0001", producer=claim("p", 0, 0)))
    assert retry == AppendResult(1, False, ProducerVerdict(True, 0, 0), wrote=False)
