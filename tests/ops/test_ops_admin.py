"""The admin listener (`open_ops_listener`): its endpoint table over real sockets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST

from durable_streams.server.config.addresses import ListenAddress
from durable_streams.server.ops.health import Readiness
from durable_streams.server.ops.metrics import Metrics
from durable_streams.server.runtime.listeners import SERVER_HEADER, OpsListener, open_ops_listener


async def _reload(path: str) -> str | None:
    return None if path == "/good" else f"cannot load {path}"


@contextlib.asynccontextmanager
async def admin(address: ListenAddress, readiness: Readiness, *, reload=_reload) -> AsyncIterator[OpsListener]:
    listener = await open_ops_listener(address, readiness, Metrics(), shutdown_timeout=1.0, reload=reload)
    try:
        yield listener
    finally:
        await listener.close()


async def test_endpoints_statuses_and_headers(http):
    readiness = Readiness()
    async with admin(ListenAddress("tcp", "127.0.0.1", 0), readiness) as listener:
        (address,) = listener.addresses
        base = f"http://127.0.0.1:{address[1]}"
        async with http.get(base + "/healthz") as resp:
            assert resp.status == 200 and await resp.json() == {"status": "alive"}
            assert resp.headers["Server"] == SERVER_HEADER
            assert resp.headers["Cache-Control"] == "no-store"
            assert resp.headers["Content-Type"].startswith("application/json")
        async with http.get(base + "/readyz") as resp:
            assert resp.status == 503 and (await resp.json())["status"] == "starting"
        readiness.mark_ready()
        async with http.get(base + "/readyz") as resp:
            assert resp.status == 200 and (await resp.json())["ready"] is True
        async with http.get(base + "/metrics") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
            assert resp.headers["Cache-Control"] == "no-store"
            assert "durable_streams_build_info" in await resp.text()
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.head(base + path) as resp:
                assert resp.status in (200, 503) and await resp.read() == b"", path
            async with http.post(base + path) as resp:
                assert (resp.status, resp.headers["Allow"]) == (405, "GET,HEAD"), path
        async with http.get(base + "/nowhere") as resp:
            assert resp.status == 404 and resp.headers["Server"] == SERVER_HEADER

        async with http.get(base + "/reload") as resp:
            assert (resp.status, resp.headers["Allow"]) == (405, "POST")
        # a foreign Host is refused before the method is looked at
        async with http.get(base + "/reload", headers={"Host": "evil.example"}) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "host not allowed: evil.example"
        async with http.post(base + "/reload", json={"config": "/good"}) as resp:
            assert (resp.status, await resp.json()) == (200, {"status": "reloaded"})
            assert resp.headers["Cache-Control"] == "no-store"
        async with http.post(base + "/reload", json={"config": "/bad"}) as resp:
            assert (resp.status, await resp.json()) == (400, {"error": "cannot load /bad"})


async def test_without_a_reloader_there_is_no_reload_path(http):
    async with admin(ListenAddress("tcp", "127.0.0.1", 0), Readiness(), reload=None) as listener:
        (address,) = listener.addresses
        async with http.post(f"http://127.0.0.1:{address[1]}/reload", json={"config": "/good"}) as resp:
            assert resp.status == 404


async def test_serves_on_a_unix_socket(tmp_path):
    path = str(tmp_path / "admin.sock")
    async with admin(ListenAddress("unix", path, 0), Readiness()) as listener:
        assert listener.addresses == [path]
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session:
            async with session.get("http://admin/healthz") as resp:
                assert resp.status == 200 and await resp.json() == {"status": "alive"}
            # no Host check on a unix socket, as on Caddy's admin endpoint
            async with session.post("http://admin/reload", json={"config": "/good"}) as resp:
                assert resp.status == 200
