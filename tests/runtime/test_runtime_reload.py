"""POST /reload on the admin address (our extension behind `durable-streams-server reload`),
and reloads that fail half-way: the running listeners keep accepting."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from durable_streams.server.config import load_config
from durable_streams.server.config.model import Config
from durable_streams.server.runtime.app import ReloadRequest, ServerApp

from .helpers import free_port, port_of

pytestmark = pytest.mark.asyncio


def load(path: str | None) -> Config:
    assert path is not None
    return load_config(Path(path).read_text(), filename=path)


def write(path: Path, body: str) -> str:
    path.write_text(f"{{\n\tadmin 127.0.0.1:0\n}}\n:0 {{\n\tbind 127.0.0.1\n{body}}}\n")
    return str(path)


@contextlib.asynccontextmanager
async def serving(path: str) -> AsyncIterator[tuple[ServerApp, asyncio.Queue, str]]:
    """The app as `run` drives it: serve() taking reloads; yields (app, reload queue, admin URL)."""
    app = ServerApp(load(path), config_path=path)
    stop, reloads = asyncio.Event(), asyncio.Queue()
    task = asyncio.ensure_future(app.serve(stop, reloads, load))
    while app.readiness.state != "ready":
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    (admin,) = [addr for name, addr in app.bound_addresses if name == "admin"]
    try:
        yield app, reloads, f"http://127.0.0.1:{admin[1]}/reload"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def body_of(session: aiohttp.ClientSession, app: ServerApp) -> str:
    async with session.get(f"http://127.0.0.1:{port_of(app)}/") as r:
        return await r.text()


async def test_post_reload_swaps_config_and_later_sighups_read_that_file(tmp_path: Path) -> None:
    first = write(tmp_path / "first.caddy", "\trespond one\n")
    second = write(tmp_path / "second.caddy", "\trespond two\n")
    async with serving(first) as (app, reloads, url), aiohttp.ClientSession() as session:
        assert await body_of(session, app) == "one"
        async with session.post(url, json={"config": second}) as r:
            assert (r.status, await r.json()) == (200, {"status": "reloaded"})
        assert await body_of(session, app) == "two"
        assert app.config_path == second
        write(tmp_path / "second.caddy", "\trespond three\n")
        done = asyncio.get_running_loop().create_future()
        reloads.put_nowait(ReloadRequest(done=done))  # what SIGHUP sends, plus a reply
        assert await done is None
        assert await body_of(session, app) == "three"


async def test_post_reload_refuses_a_bad_config_and_keeps_serving(tmp_path: Path) -> None:
    first = write(tmp_path / "first.caddy", "\trespond one\n")
    bad = write(tmp_path / "bad.caddy", "\tfrobnicate\n")
    async with serving(first) as (app, _, url), aiohttp.ClientSession() as session:
        async with session.post(url, json={"config": bad}) as r:
            assert r.status == 400
            assert (await r.json())["error"] == f"{bad}:6: unrecognized directive: frobnicate"
        assert await body_of(session, app) == "one"
        assert app.config_path == first


async def test_reload_endpoint_checks_method_host_origin_and_body(tmp_path: Path) -> None:
    first = write(tmp_path / "first.caddy", "\trespond one\n")
    second = write(tmp_path / "second.caddy", "\trespond two\n")
    async with serving(first) as (app, _, url), aiohttp.ClientSession() as session:
        async with session.get(url) as r:
            assert (r.status, r.headers["Allow"]) == (405, "POST")
        admin_host = url.split("/")[2]
        refused = [
            ({"Host": "evil.example"}, 403, "host not allowed: evil.example"),
            ({"Origin": "http://evil.example"}, 403, "client is not allowed to access from origin 'http://evil.example'"),
            ({"Origin": "null"}, 403, "client is not allowed to access from origin 'null'"),
            ({"Sec-Fetch-Mode": "no-cors"}, 403, "client is not allowed to access from origin ''"),
        ]
        for headers, status, message in refused:
            async with session.post(url, json={"config": second}, headers=headers) as r:
                assert (r.status, (await r.json())["error"]) == (status, message), headers
        for payload in (b"not json", b'["/x"]', b'{"config": 7}', b'{"config": "relative/Caddyfile"}'):
            async with session.post(url, data=payload) as r:
                assert r.status == 400 and "config" in (await r.json())["error"], payload
        assert await body_of(session, app) == "one"
        # a browser on the admin address's own origin is allowed; localhost names it too
        localhost_url = url.replace("127.0.0.1", "localhost")
        async with session.post(url, json={"config": second}, headers={"Origin": f"http://{admin_host}",
                                                                        "Host": localhost_url.split("/")[2]}) as r:
            assert r.status == 200
        assert await body_of(session, app) == "two"


async def test_post_reload_without_a_reload_loader_is_refused(tmp_path: Path) -> None:
    # a ServerApp started on its own (not by `run`) has no file to reload from
    app = ServerApp(load(write(tmp_path / "first.caddy", "\trespond one\n")))
    await app.start()
    try:
        (admin,) = [addr for name, addr in app.bound_addresses if name == "admin"]
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{admin[1]}/reload", json={"config": "/x"}) as r:
                assert r.status == 400 and "not available" in (await r.json())["error"]
    finally:
        await app.shutdown()


@pytest.mark.parametrize(
    "new_site, error",
    [
        # an extra site on a taken port: it fails before anything running is touched
        (":{port} {{\n\tbind 127.0.0.1\n\trespond two\n}}\n:{taken} {{\n\tbind 127.0.0.1\n\trespond x\n}}\n",
         "address already in use"),
        # the same port with new socket settings plus an address that cannot be bound: the
        # old listener steps aside first, and is bound again when the new one fails
        ("{{\n\tservers {{\n\t\ttimeouts {{\n\t\t\tidle 1m\n\t\t}}\n\t}}\n}}\n"
         ":{port} {{\n\tbind 127.0.0.1 unix/{missing}/x.sock\n\trespond two\n}}\n",
         "listening on unix/.*/missing/x.sock: bind: no such file or directory"),
    ],
    ids=["new-port-taken", "same-port-rebind"],
)
async def test_reload_that_cannot_bind_keeps_the_running_listener(tmp_path: Path, new_site: str, error: str) -> None:
    port = free_port()
    app = ServerApp(load_config(f":{port} {{\n\tbind 127.0.0.1\n\trespond one\n}}\n"))
    await app.start()
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        new = new_site.format(port=port, taken=blocker.getsockname()[1], missing=tmp_path / "missing")
        with pytest.raises(OSError, match=error):
            await app.reload(load_config(new))
        async with aiohttp.ClientSession() as session:
            assert await body_of(session, app) == "one"
    finally:
        blocker.close()
        await app.shutdown()
    assert app.listeners == []
