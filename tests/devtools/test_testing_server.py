"""DurableStreamTestServer (async) and BlockingDurableStreamTestServer (thread)."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request

import aiohttp
import pytest

from durable_streams.server.testing import BlockingDurableStreamTestServer, DurableStreamTestServer

GUARD = aiohttp.ClientTimeout(total=20)  # against a hang, not a performance expectation


async def http(method: str, url: str, **kwargs) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession(timeout=GUARD) as session:
        async with session.request(method, url, **kwargs) as resp:
            return resp.status, dict(resp.headers), await resp.read()


async def test_async_server_serves_streams_under_its_url():
    async with DurableStreamTestServer() as server:
        assert server.port != 0
        assert server.url == f"http://127.0.0.1:{server.port}/v1/stream"
        status, headers, _ = await http("PUT", f"{server.url}/a/b", headers={"Content-Type": "text/plain"})
        assert status == 201
        assert headers["Location"] == f"{server.url}/a/b"
        await http("POST", f"{server.url}/a/b", headers={"Content-Type": "text/plain"}, data=b"hi")
        assert (await http("GET", f"{server.url}/a/b"))[2] == b"hi"
    with pytest.raises(aiohttp.ClientConnectionError):
        await http("GET", f"{server.url}/a/b")


async def test_every_path_is_a_stream_and_the_url_prefix_is_part_of_its_path():
    async with DurableStreamTestServer(path_prefix="/streams") as server:
        assert (await http("PUT", f"{server.origin}/my-stream"))[0] == 201
        assert (await http("PUT", f"{server.origin}/v1/stream/x"))[0] == 201
        assert (await http("PUT", f"{server.url}/x"))[0] == 201
        await http("POST", f"{server.origin}/v1/stream/x", headers={"Content-Type": "application/octet-stream"},
                   data=b"at /v1/stream/x")
        assert (await http("GET", f"{server.origin}/v1/stream/x"))[2] == b"at /v1/stream/x"
        assert (await http("GET", f"{server.url}/x"))[2] == b""
        assert (await http("HEAD", f"{server.origin}/x"))[0] == 404


async def test_restart_reuses_the_port_and_memory_streams_start_empty():
    server = await DurableStreamTestServer().start()
    try:
        url = f"{server.url}/s"
        await http("PUT", url)
        await server.stop()
        await server.start()
        assert server.url + "/s" == url
        assert (await http("HEAD", url))[0] == 404
    finally:
        await server.stop()
        await server.stop()  # idempotent


async def test_file_backed_server_keeps_streams_across_restarts(tmp_path):
    server = DurableStreamTestServer(data_dir=str(tmp_path))
    async with server:
        await http("PUT", f"{server.url}/kept", headers={"Content-Type": "text/plain"}, data=b"durable")
    async with server:
        status, _, body = await http("GET", f"{server.url}/kept")
    assert (status, body) == (200, b"durable")


async def test_settings_reach_the_protocol_handler():
    async with DurableStreamTestServer(long_poll_timeout=0.2, path_prefix="/streams") as server:
        assert server.url.endswith("/streams")
        _, created, _ = await http("PUT", f"{server.url}/idle")
        tail = created["Stream-Next-Offset"]
        # With the default 30 s this would outlast GUARD; 0.2 s answers "no new data" (204).
        status, _, _ = await http("GET", f"{server.url}/idle", params={"offset": tail, "live": "long-poll"})
        assert status == 204


async def test_stop_ends_live_readers_instead_of_waiting_for_them():
    server = await DurableStreamTestServer(long_poll_timeout=600).start()
    await http("PUT", f"{server.url}/w")
    _, head, _ = await http("HEAD", f"{server.url}/w")
    waiting = asyncio.create_task(
        http("GET", f"{server.url}/w", params={"offset": head["Stream-Next-Offset"], "live": "long-poll"}))
    await asyncio.sleep(0.1)  # let the long-poll reach the server (the test holds either way)
    await asyncio.wait_for(server.stop(), 15)
    try:
        status, _, _ = await waiting
        assert status in (204, 503)
    except aiohttp.ClientConnectionError:
        pass  # also acceptable: the connection ended with the server


async def test_misuse_is_reported():
    server = DurableStreamTestServer()
    with pytest.raises(RuntimeError):
        server.url
    async with server:
        with pytest.raises(RuntimeError):
            await server.start()


def _request(method: str, url: str, data: bytes | None = None, content_type: str | None = None):
    request = urllib.request.Request(url, data=data, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=20) as resp:
        return resp.status, resp.read()


def test_blocking_server_for_synchronous_code():
    with BlockingDurableStreamTestServer() as server:
        assert server.running and server.url == f"http://127.0.0.1:{server.port}/v1/stream"
        assert _request("PUT", f"{server.url}/sync", b"", "text/plain")[0] == 201
        _request("POST", f"{server.url}/sync", b"from a thread", "text/plain")
        assert _request("GET", f"{server.url}/sync") == (200, b"from a thread")
        url = f"{server.url}/sync"
    assert not server.running
    assert not [t for t in threading.enumerate() if t.name == "durable-streams-test-server"]
    with pytest.raises(urllib.error.URLError):
        _request("GET", url)


def test_blocking_server_restarts_on_the_same_port(tmp_path):
    server = BlockingDurableStreamTestServer(data_dir=str(tmp_path)).start()
    try:
        _request("PUT", f"{server.url}/s", b"one", "text/plain")
        port = server.port
        server.stop()
        server.start()
        assert server.port == port
        assert _request("GET", f"{server.url}/s") == (200, b"one")
    finally:
        server.stop()
