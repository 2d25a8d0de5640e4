"""Many concurrent writers on one stream: every append lands once, each gets its own
offset, and no append is torn or interleaved with another."""

from __future__ import annotations

import asyncio
import json

WRITERS = 40


async def test_concurrent_binary_appends_land_whole(server, http):
    url = server.url(server.new_path("many"))
    async with http.put(url, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201
    payloads = [f"<{i}:{'#' * (50 + i * 13)}:{i}>" for i in range(WRITERS)]

    async def write(payload: str) -> str:
        async with http.post(url, data=payload, headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 204
            return r.headers["Stream-Next-Offset"]

    offsets = await asyncio.gather(*(write(p) for p in payloads))
    assert len(set(offsets)) == WRITERS
    async with http.get(url) as r:
        body = await r.text()
        final = r.headers["Stream-Next-Offset"]
    assert max(offsets) == final
    assert sorted(body.split(">")[:-1]) == sorted(p[:-1] for p in payloads)  # each exactly once, whole
    # Each writer's returned offset is where its own payload ends in the stream.
    for payload, offset in zip(payloads, offsets):
        end = int(offset.split("_")[1])
        assert body.encode()[end - len(payload) : end] == payload.encode()


async def test_concurrent_producers_and_stream_seq(server, http):
    url = server.url(server.new_path("producers"))
    async with http.put(url, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 201

    async def producer(name: str) -> None:
        for seq in range(5):
            headers = {"Content-Type": "application/json", "Producer-Id": name,
                       "Producer-Epoch": "0", "Producer-Seq": str(seq)}
            async with http.post(url, data=json.dumps([{"p": name, "seq": seq}]), headers=headers) as r:
                assert r.status == 200

    await asyncio.gather(*(producer(f"p{i}") for i in range(8)))
    async with http.get(url) as r:
        messages = await r.json()
    assert len(messages) == 40
    for i in range(8):  # each producer's messages are in its own order
        assert [m["seq"] for m in messages if m["p"] == f"p{i}"] == list(range(5))


async def test_concurrent_same_stream_seq_one_wins(server, http):
    url = server.url(server.new_path("seq"))
    async with http.put(url, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201

    async def write(i: int) -> int:
        async with http.post(url, data=f"w{i}", headers={"Content-Type": "text/plain", "Stream-Seq": "0001"}) as r:
            return r.status

    statuses = await asyncio.gather(*(write(i) for i in range(10)))
    assert sorted(statuses) == [204] + [409] * 9
