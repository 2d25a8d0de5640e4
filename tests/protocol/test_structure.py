"""Structural changes racing each other: creates, deletes and forks on the same paths
stay consistent (one creator wins, a source deleted while being forked is kept for the
fork), and paged reads stitch across fork boundaries."""

from __future__ import annotations

import asyncio
import random

TEXT = {"Content-Type": "text/plain"}


async def test_concurrent_creates_one_wins(server, http):
    url = server.url(server.new_path("race"))

    async def create():
        async with http.put(url, data=b"x", headers=TEXT) as r:
            return r.status

    statuses = await asyncio.gather(*(create() for _ in range(20)))
    assert sorted(statuses) == [200] * 19 + [201]
    async with http.get(url) as r:
        assert await r.read() == b"x"  # re-PUT bodies are ignored


async def test_concurrent_deletes_one_wins(server, http):
    url = server.url(server.new_path("del"))
    async with http.put(url, headers=TEXT) as r:
        assert r.status == 201

    async def delete():
        async with http.delete(url) as r:
            return r.status

    statuses = await asyncio.gather(*(delete() for _ in range(10)))
    assert sorted(statuses) == [204] + [404] * 9


async def test_source_deleted_while_forks_are_created(server, http):
    source_path = server.new_path("src")
    async with http.put(server.url(source_path), data=b"shared", headers=TEXT) as r:
        assert r.status == 201
    fork_paths = [server.new_path("fork") for _ in range(10)]

    async def fork(path):
        async with http.put(server.url(path), headers={"Stream-Forked-From": source_path, **TEXT}) as r:
            return r.status

    async def delete():
        async with http.delete(server.url(source_path)) as r:
            return r.status

    *fork_statuses, delete_status = await asyncio.gather(*(fork(p) for p in fork_paths), delete())
    assert delete_status == 204
    created = [p for p, status in zip(fork_paths, fork_statuses) if status == 201]
    assert all(status in (201, 409) for status in fork_statuses)  # 409: source already deleted
    assert created
    for path in created:  # every fork that was created reads the source's bytes
        async with http.get(server.url(path)) as r:
            assert await r.read() == b"shared"
    async with http.head(server.url(source_path)) as r:
        assert r.status == (410 if created else 404)
    for path in created:
        async with http.delete(server.url(path)) as r:
            assert r.status == 204
    async with http.head(server.url(source_path)) as r:
        assert r.status == 404  # the last fork released it


async def test_paged_reads_stitch_across_a_fork_chain(start_server, http):
    rng = random.Random(3)
    async with start_server(max_read_bytes=64) as server:
        level0, level1, level2 = (server.new_path(f"l{i}") for i in range(3))
        expected = b""
        octets = {"Content-Type": "application/octet-stream"}
        async with http.put(server.url(level0), headers=octets) as r:
            assert r.status == 201
        for _ in range(5):
            chunk = rng.randbytes(50)
            expected += chunk
            async with http.post(server.url(level0), data=chunk, headers=octets) as r:
                offset = r.headers["Stream-Next-Offset"]
        async with http.put(server.url(level1), headers={"Stream-Forked-From": level0}) as r:
            assert r.status == 201
        async with http.post(server.url(level0), data=b"not inherited", headers=octets) as r:
            assert r.status == 204
        tail1 = rng.randbytes(90)
        async with http.post(server.url(level1), data=tail1, headers=octets) as r:
            assert r.status == 204
        async with http.put(server.url(level2), headers={"Stream-Forked-From": level1,
                                                         "Stream-Fork-Offset": offset,
                                                         "Stream-Fork-Sub-Offset": "7"}) as r:
            assert r.status == 201
        async with http.delete(server.url(level1)) as r:  # the middle goes; level2 still reads it
            assert r.status == 204
        body, at = b"", "-1"
        while True:
            async with http.get(server.url(level2), params={"offset": at}) as r:
                body += await r.read()
                at = r.headers["Stream-Next-Offset"]
                if r.headers.get("Stream-Up-To-Date"):
                    break
        assert body == expected + tail1[:7]


async def test_json_fork_offset_must_be_between_messages(server, http):
    source = server.new_path("json-src")
    async with http.put(server.url(source), data=b'[{"a":1},{"b":2}]',
                        headers={"Content-Type": "application/json"}) as r:
        assert r.status == 201
        tail = r.headers["Stream-Next-Offset"]
    inside = "0000000000000000_0000000000000003"  # within the first message
    json_type = {"Content-Type": "application/json"}
    async with http.put(server.url(server.new_path("bad")), headers={
            "Stream-Forked-From": source, "Stream-Fork-Offset": inside, **json_type}) as r:
        assert r.status == 400
    fork = server.new_path("good")
    async with http.put(server.url(fork), headers={"Stream-Forked-From": source, "Stream-Fork-Offset": tail},
                        skip_auto_headers=["Content-Type"]) as r:  # inherits the source's type
        assert r.status == 201
    async with http.post(server.url(fork), data=b'{"c":3}', headers={"Content-Type": "application/json"}) as r:
        assert r.status == 204
    async with http.get(server.url(fork)) as r:
        assert await r.json() == [{"a": 1}, {"b": 2}, {"c": 3}]
