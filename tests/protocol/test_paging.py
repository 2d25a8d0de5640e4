"""With the `catch_up_page_size` extension, catch-up reads are paged: following
Stream-Next-Offset reassembles the exact stream, only the last page says
Stream-Up-To-Date, and pages end on unit boundaries (JSON messages, UTF-8 characters).
Without it (the default), see test_catch_up.py."""

from __future__ import annotations

import json
import random


async def read_all_pages(http, url: str) -> list[tuple[bytes, dict]]:
    pages, offset = [], "-1"
    while True:
        async with http.get(url, params={"offset": offset}) as response:
            assert response.status == 200
            pages.append((await response.read(), dict(response.headers)))
            if response.headers.get("Stream-Up-To-Date") == "true":
                return pages
            assert response.headers["Stream-Next-Offset"] != offset, "a page must make progress"
            offset = response.headers["Stream-Next-Offset"]
        assert len(pages) < 10_000


async def test_binary_pages_reassemble_exactly(start_server, http):
    rng = random.Random(7)
    async with start_server(catch_up_page_size=1000) as server:
        url = server.url(server.new_path("bin"))
        chunks = [rng.randbytes(rng.randint(1, 2500)) for _ in range(20)]
        async with http.put(url, headers={"Content-Type": "application/octet-stream"}) as r:
            assert r.status == 201
        for chunk in chunks:
            async with http.post(url, data=chunk, headers={"Content-Type": "application/octet-stream"}) as r:
                assert r.status == 204
        pages = await read_all_pages(http, url)
        assert b"".join(body for body, _ in pages) == b"".join(chunks)
        assert len(pages) > 1
        assert all(len(body) <= 1000 for body, _ in pages)
        assert all("Stream-Up-To-Date" not in headers for _, headers in pages[:-1])


async def test_json_pages_end_on_message_boundaries(start_server, http):
    async with start_server(catch_up_page_size=100) as server:
        url = server.url(server.new_path("json"))
        messages = [{"n": i, "text": "x" * (i % 37)} for i in range(60)]
        async with http.put(url, data=json.dumps(messages[:10]), headers={"Content-Type": "application/json"}) as r:
            assert r.status == 201
        for start in range(10, 60, 5):
            body = json.dumps(messages[start : start + 5])
            async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                assert r.status == 204
        pages = await read_all_pages(http, url)
        assert len(pages) > 1
        decoded = [json.loads(body) for body, _ in pages]  # every page is a whole JSON array
        assert all(isinstance(page, list) and page for page in decoded)
        assert [m for page in decoded for m in page] == messages


async def test_json_message_larger_than_a_page_is_returned_whole(start_server, http):
    async with start_server(catch_up_page_size=16) as server:
        url = server.url(server.new_path("json-big"))
        messages = ["a" * 100, "b", "c" * 50]
        async with http.put(url, data=json.dumps(messages), headers={"Content-Type": "application/json"}) as r:
            assert r.status == 201
        pages = await read_all_pages(http, url)
        assert [m for body, _ in pages for m in json.loads(body)] == messages


async def test_text_pages_are_valid_utf8(start_server, http):
    async with start_server(catch_up_page_size=7) as server:
        url = server.url(server.new_path("text"))
        text = "héllo wörld — ünïcødé 🎉 " * 5
        async with http.put(url, data=text.encode(), headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 201
        pages = await read_all_pages(http, url)
        assert "".join(body.decode("utf-8") for body, _ in pages) == text


async def test_etag_revalidation(server, http):
    url = server.url(server.new_path("etag"))
    async with http.put(url, data=b"abc", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201
    async with http.get(url) as r:
        etag = r.headers["ETag"]
        assert r.headers["Cache-Control"].startswith("public")
    for header in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        async with http.get(url, headers={"If-None-Match": header}) as r:
            assert r.status == 304 and await r.read() == b"" and r.headers["ETag"] == etag
    async with http.post(url, headers={"Stream-Closed": "true"}) as r:
        assert r.status == 204
    async with http.get(url, headers={"If-None-Match": etag}) as r:
        assert r.status == 200  # closure changes the ETag: the EOF signal is never hidden
        assert r.headers["Stream-Closed"] == "true" and r.headers["ETag"] != etag
    async with http.get(url, params={"offset": "now"}) as r:
        assert "ETag" not in r.headers and r.headers["Cache-Control"] == "no-store"
