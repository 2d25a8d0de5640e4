"""Reload, readiness, the admin (operations) endpoint, metrics and systemd notifications."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from durable_streams.server.config import load_config
from durable_streams.server.config.model import DurableStreams
from durable_streams.server.ops.systemd import SystemdNotifier
from durable_streams.server.runtime.app import ServerApp

from .helpers import EchoHandler, free_port, port_of, serve

pytestmark = pytest.mark.asyncio
ECHO = {DurableStreams: lambda c, _compiler: EchoHandler(c)}


def site(port: int, label: str, extra: str = "") -> str:
    return (
        f"{{\n\tadmin off\n}}\n:{port} {{\n\tbind 127.0.0.1\n{extra}"
        f"\troute /v1/stream/* {{\n\t\tdurable_streams {{\n\t\t\tdata_dir {label}\n\t\t}}\n\t}}\n}}\n"
    )


async def get(session: aiohttp.ClientSession, port: int, path: str = "/v1/stream/x"):
    async with session.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


async def test_reload_swaps_routes_on_open_connections_and_keeps_equal_stores() -> None:
    port = free_port()
    app = ServerApp(load_config(site(port, "a")), handler_factories=ECHO)
    await app.start()
    try:
        (store_a,) = app.compiler.lifecycle
        connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection for every request
        async with aiohttp.ClientSession(connector=connector) as session:
            assert '"label": "a"' in (await get(session, port))[1]
            # same store settings, new routes around it: the store is kept
            await app.reload(load_config(site(port, "a", "\trespond /other other\n")))
            assert app.compiler.lifecycle == [store_a] and not store_a.stopped
            assert (await get(session, port, "/other"))[1] == "other"
            # new store settings: the old store stops, the new one starts
            await app.reload(load_config(site(port, "b")))
            (store_b,) = app.compiler.lifecycle
            assert store_a.stopped and store_b.started and store_b is not store_a
            assert '"label": "b"' in (await get(session, port))[1]
    finally:
        await app.shutdown()
    assert store_b.stopped


async def test_reload_adds_and_removes_listeners() -> None:
    p1, p2 = free_port(), free_port()
    app = ServerApp(load_config(site(p1, "one")), handler_factories=ECHO)
    await app.start()
    try:
        both = site(p1, "one") + site(p2, "two").split("}\n", 1)[1]
        await app.reload(load_config(both))
        async with aiohttp.ClientSession() as session:
            assert '"label": "two"' in (await get(session, p2))[1]
        await app.reload(load_config(site(p2, "two")))
        async with aiohttp.ClientSession() as session:
            assert '"label": "two"' in (await get(session, p2))[1]
            with pytest.raises(aiohttp.ClientConnectionError):
                await get(session, p1)
    finally:
        await app.shutdown()


async def test_admin_endpoint_health_readiness_and_metrics() -> None:
    port = free_port()
    text = (
        "{\n\tadmin 127.0.0.1:0\n\tmetrics\n}\n"
        f":{port} {{\n\tbind 127.0.0.1\n\trespond /v1/stream/* ok\n}}\n"
    )
    async with serve(text) as app:
        (admin,) = [addr for name, addr in app.bound_addresses if name == "admin"]
        base = f"http://127.0.0.1:{admin[1]}"
        async with aiohttp.ClientSession() as session:
            assert (await get(session, port))[1] == "ok"
            async with session.get(base + "/healthz") as r:
                assert r.status == 200 and (await r.json())["status"] == "alive"
            async with session.get(base + "/readyz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ready"
            async with session.get(base + "/metrics") as r:
                body = await r.text()
                assert r.status == 200
                assert 'durable_streams_http_requests_total{method="GET",operation="read",status_class="2xx"} 1.0' in body
        app.readiness.mark_stopping()
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/readyz") as r:
                assert r.status == 503


async def test_site_metrics_directive_serves_exposition() -> None:
    # respond sorts before metrics in Caddy's order, so it must not be a catch-all here
    text = "{\n\tadmin off\n}\n:0 {\n\tbind 127.0.0.1\n\tmetrics /metrics\n\trespond /x hi\n}\n"
    async with serve(text) as app:
        async with aiohttp.ClientSession() as session:
            status, body = await get(session, port_of(app), "/metrics")
            assert status == 200 and "durable_streams_http_requests_total" in body
            assert (await get(session, port_of(app), "/x"))[1] == "hi"


async def test_systemd_notifications(tmp_path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        notifier = SystemdNotifier(env={"NOTIFY_SOCKET": path})
        app = ServerApp(load_config(site(free_port(), "n")), handler_factories=ECHO, notifier=notifier)
        await app.start()
        await app.reload(load_config(site(free_port(), "n")))
        await app.shutdown()
        messages = []
        sock.setblocking(False)
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except BlockingIOError:
                break
    flat = [line.split("=")[0] for m in messages for line in m.split("\n")]
    order = [k for k in flat if k in ("READY", "RELOADING", "STOPPING")]
    assert order == ["READY", "RELOADING", "READY", "STOPPING"]


async def test_reload_serves_renewed_certificate_files(tmp_path) -> None:
    import asyncio
    import ssl

    from .test_runtime_routing import _self_signed

    cert, key = _self_signed(tmp_path, "streams.test")
    port = free_port()
    text = (
        "{\n\tadmin off\n\tauto_https disable_redirects\n}\n"
        f"streams.test:{port} {{\n\tbind 127.0.0.1\n\ttls {cert} {key}\n\trespond hi\n}}\n"
    )

    async def served_certificate() -> bytes:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="streams.test")
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return der

    def on_disk() -> bytes:
        return ssl.PEM_cert_to_DER_cert(open(cert).read())

    app = ServerApp(load_config(text))
    await app.start()
    try:
        first = on_disk()
        assert await served_certificate() == first
        _self_signed(tmp_path, "streams.test")  # "renewal": new files at the same paths
        assert on_disk() != first
        await app.reload(load_config(text))
        assert await served_certificate() == on_disk()
    finally:
        await app.shutdown()


async def test_shutdown_delay_keeps_serving_while_not_ready() -> None:
    import asyncio

    port = free_port()
    text = f"{{\n\tadmin off\n\tshutdown_delay 2s\n}}\n:{port} {{\n\tbind 127.0.0.1\n\trespond ok\n}}\n"
    app = ServerApp(load_config(text))
    stop = asyncio.Event()
    serving = asyncio.ensure_future(app.serve(stop))
    async with aiohttp.ClientSession() as session:
        while app.readiness.state != "ready":
            await asyncio.sleep(0.01)
        stop.set()

        async def not_ready() -> None:
            while app.readiness.state == "ready":
                await asyncio.sleep(0.01)

        await asyncio.wait_for(not_ready(), timeout=30)
        # during the delay: load balancers see "stopping", requests are still answered
        assert app.readiness.state == "stopping" and not serving.done()
        assert (await get(session, port, "/"))[1] == "ok"
    await asyncio.wait_for(serving, timeout=30)
    assert app.listeners == []


async def test_failed_reload_keeps_the_running_configuration(tmp_path) -> None:
    port = free_port()
    app = ServerApp(load_config(site(port, "a")), handler_factories=ECHO)
    await app.start()
    try:
        (store_a,) = app.compiler.lifecycle
        broken = load_config(site(port, "b") + f"x.test:{free_port()} {{\n\ttls {tmp_path}/no.crt {tmp_path}/no.key\n}}\n")
        with pytest.raises(OSError):
            await app.reload(broken)
        assert app.compiler.lifecycle == [store_a] and not store_a.stopped
        async with aiohttp.ClientSession() as session:
            assert '"label": "a"' in (await get(session, port))[1]
    finally:
        await app.shutdown()
