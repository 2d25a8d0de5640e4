"""Reads: `read` pages stop on JSON message and UTF-8 character boundaries and carry
up_to_date / closed from one snapshot; `read_pages` yields exactly [start, end)."""

from __future__ import annotations

import pytest

from engine_support import post, put

from durable_streams.server.engine.errors import InvalidRequest
from durable_streams.server.engine.streams import Chunk

TEXT = "aé€😀".encode()  # 1 + 2 + 3 + 4 bytes


async def test_bytes_pages_are_cut_exactly(engine):
    data = bytes(range(256)) * 2
    await engine.create("/b", put("application/octet-stream", body=data))
    stream = await engine.require("/b")
    assert await engine.read(stream, 0, 100) == Chunk(data[:100], 0, 100, up_to_date=False, closed=False)
    assert await engine.read(stream, 500, 100) == Chunk(data[500:], 500, 512, up_to_date=True, closed=False)
    assert await engine.read(stream, 512, 100) == Chunk(b"", 512, 512, up_to_date=True, closed=False)


async def test_read_beyond_tail_is_invalid(engine):
    await engine.create("/b", put(body=b"abc"))
    stream = await engine.require("/b")
    with pytest.raises(InvalidRequest):
        await engine.read(stream, 4, 10)


TEXT_PAGES = [  # (start, max_bytes) -> the page
    (0, 1, b"a"),
    (0, 2, b"a"),  # not half of the é
    (0, 3, "aé".encode()),
    (0, 5, "aé".encode()),  # not two thirds of the €
    (0, 6, "aé€".encode()),
    (3, 4, "€".encode()),  # not the first byte of the 😀
    (3, 6, "€".encode()),
    (6, 4, "😀".encode()),
]


async def test_text_pages_end_on_character_boundaries(engine):
    await engine.create("/t", put("text/plain; charset=utf-8", body=TEXT))
    stream = await engine.require("/t")
    for start, max_bytes, data in TEXT_PAGES:
        chunk = await engine.read(stream, start, max_bytes)
        end = start + len(data)
        assert chunk == Chunk(data, start, end, end == len(TEXT), False), (start, max_bytes)


async def test_text_page_smaller_than_one_character_is_the_whole_character(engine):
    await engine.create("/t", put("text/plain", body=TEXT))
    stream = await engine.require("/t")
    assert await engine.read(stream, 1, 1) == Chunk("é".encode(), 1, 3, False, False)
    assert await engine.read(stream, 6, 2) == Chunk("😀".encode(), 6, 10, True, False)


async def test_text_pages_walk_the_stream(engine):
    await engine.create("/t", put("text/markdown", body=TEXT * 3))
    stream = await engine.require("/t")
    position, pages = 0, []
    while True:
        chunk = await engine.read(stream, position, 4)
        pages.append(chunk.data.decode("utf-8"))
        position = chunk.next
        if chunk.up_to_date:
            break
    assert "".join(pages) == "aé€😀" * 3
    assert pages[:4] == ["aé", "€", "😀", "aé"]


async def test_json_pages_end_on_message_boundaries(engine):
    await engine.create("/j", put("application/json", body=b'[{"a":1},{"b":22},{"c":333}]'))
    stream = await engine.require("/j")
    # Records: {"a":1}\n (8) {"b":22}\n (9) {"c":333}\n (10)
    assert stream.state.tail == 27
    assert await engine.read(stream, 0, 16) == Chunk(b'{"a":1}\n', 0, 8, False, False)
    assert await engine.read(stream, 0, 17) == Chunk(b'{"a":1}\n{"b":22}\n', 0, 17, False, False)
    assert await engine.read(stream, 8, 18) == Chunk(b'{"b":22}\n', 8, 17, False, False)
    assert await engine.read(stream, 17, 10) == Chunk(b'{"c":333}\n', 17, 27, True, False)


async def test_json_message_larger_than_a_page_is_read_whole(engine):
    await engine.create("/j", put("application/json", body=b'["' + b"x" * 50 + b'", 1]'))
    stream = await engine.require("/j")
    chunk = await engine.read(stream, 0, 10)
    assert chunk == Chunk(b'"' + b"x" * 50 + b'"\n', 0, 53, False, False)
    assert await engine.read(stream, 53, 1) == Chunk(b"1\n", 53, 55, True, False)


async def test_closed_flag_only_at_the_final_offset(engine):
    await engine.create("/s", put(body=b"abcdef"))
    await engine.append("/s", post(b"", close=True))
    stream = await engine.require("/s")
    assert await engine.read(stream, 0, 4) == Chunk(b"abcd", 0, 4, up_to_date=False, closed=False)
    assert await engine.read(stream, 4, 4) == Chunk(b"ef", 4, 6, up_to_date=True, closed=True)
    assert await engine.read(stream, 6, 4) == Chunk(b"", 6, 6, up_to_date=True, closed=True)


async def test_empty_closed_stream(engine):
    await engine.create("/s", put(closed=True))
    stream = await engine.require("/s")
    assert await engine.read(stream, 0, 10) == Chunk(b"", 0, 0, up_to_date=True, closed=True)


async def test_read_from_a_snapshot(engine):
    await engine.create("/s", put(body=b"abc"))
    stream = await engine.require("/s")
    snapshot = (stream.state.tail, stream.state.closed)
    await engine.append("/s", post(b"def", close=True))
    assert await engine.read(stream, 0, 100, snapshot) == Chunk(b"abc", 0, 3, up_to_date=True, closed=False)
    assert await engine.read(stream, 0, 100) == Chunk(b"abcdef", 0, 6, up_to_date=True, closed=True)


async def test_read_pages_yields_exactly_the_range(engine):
    data = bytes(range(100))
    await engine.create("/b", put("application/octet-stream", body=data[:40]))
    await engine.append("/b", post(data[40:], "application/octet-stream"))
    stream = await engine.require("/b")
    pieces = [piece async for piece in engine.read_pages(stream, 10, 55, 16)]
    assert [len(p) for p in pieces] == [16, 16, 13]
    assert b"".join(pieces) == data[10:55]
    assert [p async for p in engine.read_pages(stream, 0, 100, 1000)] == [data]
    assert [p async for p in engine.read_pages(stream, 30, 30, 16)] == []


async def test_read_pages_cut_json_anywhere(engine):
    await engine.create("/j", put("application/json", body=b"[1, 22, 333]"))
    stream = await engine.require("/j")
    pieces = [piece async for piece in engine.read_pages(stream, 2, 9, 3)]
    assert pieces == [b"22\n", b"333", b"\n"]
