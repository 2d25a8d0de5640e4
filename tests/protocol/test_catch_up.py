"""A catch-up read (no `live`) answers everything from the offset to the tail in one
response with Stream-Up-To-Date, as the official clients expect (one GET when not live).
Ranges larger than `max_read_bytes` are streamed from the store piece by piece; these
tests make pieces small so that every store path is crossed many times."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from subdirectives import caddyfile_with, durable_streams_handler

PIECE = 1000  # max_read_bytes: the streamed body is read from the store in pieces this big


@pytest.fixture(params=["memory", "file"])
def settings(request, tmp_path):
    extra = {"data_dir": str(tmp_path / "data")} if request.param == "file" else {}
    return dict(max_read_bytes=PIECE, **extra)


async def create(http, url, content_type, body=b""):
    async with http.put(url, data=body, headers={"Content-Type": content_type}) as r:
        assert r.status == 201


async def append(http, url, content_type, body):
    async with http.post(url, data=body, headers={"Content-Type": content_type}) as r:
        assert r.status == 204, await r.text()
        return r.headers["Stream-Next-Offset"]


async def test_binary_stream_is_read_whole_in_one_response(start_server, http, settings):
    rng = random.Random(11)
    async with start_server(**settings) as server:
        url = server.url(server.new_path("bin"))
        await create(http, url, "application/octet-stream")
        chunks = [rng.randbytes(rng.randint(1, 3000)) for _ in range(40)]
        offsets = [await append(http, url, "application/octet-stream", c) for c in chunks]
        async with http.get(url, params={"offset": "-1"}) as r:
            body = await r.read()
            assert r.status == 200
            assert r.headers["Stream-Up-To-Date"] == "true"
            assert r.headers["Stream-Next-Offset"] == offsets[-1]
            assert int(r.headers["Content-Length"]) == len(body)
            assert r.headers["Cache-Control"].startswith("public")
            etag = r.headers["ETag"]
        assert body == b"".join(chunks)
        # From a middle offset: the rest, whole.
        async with http.get(url, params={"offset": offsets[4]}) as r:
            assert await r.read() == b"".join(chunks[5:])
            assert r.headers["Stream-Up-To-Date"] == "true"
        async with http.get(url, params={"offset": "-1"}, headers={"If-None-Match": etag}) as r:
            assert r.status == 304 and await r.read() == b""


async def test_json_stream_is_one_valid_array(start_server, http, settings):
    async with start_server(**settings) as server:
        url = server.url(server.new_path("json"))
        messages = [{"n": i, "text": "é" * (i % 53), "nested": [i, {"k": "\n"}]} for i in range(400)]
        await create(http, url, "application/json", json.dumps(messages[:100]))
        for start in range(100, 400, 50):
            await append(http, url, "application/json", json.dumps(messages[start:start + 50]))
        async with http.get(url, params={"offset": "-1"}) as r:
            body = await r.read()
            assert r.headers["Stream-Up-To-Date"] == "true"
            assert int(r.headers["Content-Length"]) == len(body) > PIECE
        assert json.loads(body) == messages


async def test_text_stream_decodes_whole(start_server, http, settings):
    async with start_server(**settings) as server:
        url = server.url(server.new_path("text"))
        text = "héllo wörld — ünïcødé 🎉 " * 200
        await create(http, url, "text/plain; charset=utf-8", text.encode())
        async with http.get(url, params={"offset": "-1"}) as r:
            assert (await r.read()).decode("utf-8") == text
            assert r.headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_closed_stream_says_closed_and_keeps_the_connection(start_server, http, settings):
    async with start_server(**settings) as server:
        url = server.url(server.new_path("closed"))
        data = bytes(range(256)) * 40
        await create(http, url, "application/octet-stream", data)
        async with http.post(url, headers={"Stream-Closed": "true"}) as r:
            assert r.status == 204
        for _ in range(3):  # keep-alive: the sized body leaves the connection usable
            async with http.get(url, params={"offset": "-1"}) as r:
                assert await r.read() == data
                assert r.headers["Stream-Closed"] == "true" and r.headers["Stream-Up-To-Date"] == "true"
                assert r.headers["ETag"].endswith(':c"')


async def test_fork_is_stitched_across_its_source(start_server, http, settings):
    async with start_server(**settings) as server:
        source, fork = server.url(server.new_path("src")), server.url(server.new_path("fork"))
        inherited = b"s" * 2500
        await create(http, source, "application/octet-stream", inherited)
        async with http.put(fork, headers={"Stream-Forked-From": source.removeprefix(server.base_url)}) as r:
            assert r.status == 201
        await append(http, source, "application/octet-stream", b"not in the fork")
        own = b"f" * 2500
        await append(http, fork, "application/octet-stream", own)
        async with http.get(fork, params={"offset": "-1"}) as r:
            assert await r.read() == inherited + own
            assert r.headers["Stream-Up-To-Date"] == "true"


async def test_the_response_is_one_snapshot(start_server, http, settings):
    """Appends that land while a large body is being sent are not part of it."""
    async with start_server(**settings) as server:
        url = server.url(server.new_path("snap"))
        data = b"x" * (200 * PIECE)
        await create(http, url, "application/octet-stream", data)
        async with http.get(url, params={"offset": "-1"}) as r:
            first = await r.content.readexactly(PIECE)
            next_offset = await append(http, url, "application/octet-stream", b"later")
            rest = await r.read()
            assert r.headers["Stream-Next-Offset"] != next_offset
        assert first + rest == data


async def test_delete_mid_body_cuts_the_connection(start_server, http):
    """A body the server cannot finish must never look complete to the client."""
    async with start_server(max_read_bytes=PIECE) as server:
        path = server.new_path("cut")
        size = 32 << 20  # far more than the socket buffers hold: the server must wait on us
        await create(http, server.url(path), "application/octet-stream", b"y" * size)
        host, port = server.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET {path}?offset=-1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 200 " in head and b"Content-Length: %d" % size in head
        async with http.delete(server.url(path)) as r:
            assert r.status == 204
        received = len(await asyncio.wait_for(reader.read(), 30))  # until the server closes
        writer.close()
        assert received < size


async def test_page_size_extension_keeps_pages(start_server, http):
    async with start_server(max_read_bytes=PIECE, catch_up_page_size=500) as server:
        url = server.url(server.new_path("paged"))
        await create(http, url, "application/octet-stream", b"z" * 1200)
        async with http.get(url, params={"offset": "-1"}) as r:
            assert len(await r.read()) == 500 and "Stream-Up-To-Date" not in r.headers


# ---------------------------------------------------------------- the Caddyfile extension

def _handler(caddyfile: str):
    from durable_streams.server.config import load_config

    return durable_streams_handler(load_config(caddyfile))


def test_catch_up_page_size_subdirective():
    handler = _handler(caddyfile_with("catch_up_page_size 1MiB"))
    assert handler.catch_up_page_size == 1 << 20
    assert handler.config()["catch_up_page_size"] == 1 << 20
    default = _handler(caddyfile_with("data_dir /tmp/x"))
    assert default.catch_up_page_size is None
    assert "catch_up_page_size" not in default.config()  # adapts like the plugin when unused


@pytest.mark.parametrize(("value", "reason"), [
    ("lots", "invalid catch_up_page_size: strconv.ParseFloat"),
    ("10 parsecs", "unknown subdirective: parsecs"),
    ("0", "invalid catch_up_page_size: must be at least 1 byte"),
    ("", "wrong argument count or unexpected line ending after 'catch_up_page_size'"),
])
def test_catch_up_page_size_errors(value, reason):
    from durable_streams.server.config import CaddyfileError, load_config

    with pytest.raises(CaddyfileError) as error:
        load_config(caddyfile_with(f"catch_up_page_size {value}".strip()))
    assert reason in str(error.value) and "Caddyfile:4" in str(error.value)


async def test_caddyfile_page_size_reaches_the_protocol_handler():
    from durable_streams.server.runtime.handlers import DurableStreamsRuntime

    runtime = DurableStreamsRuntime(_handler(caddyfile_with("catch_up_page_size 64KiB")))
    await runtime.start()
    try:
        assert runtime.impl.settings.catch_up_page_size == 64 << 10
    finally:
        await runtime.stop()
