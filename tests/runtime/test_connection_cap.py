"""`servers { max_connections }` (extension) through the daemon: connections beyond the
cap are closed at once, counted, and shown at the admin `/metrics`."""

from __future__ import annotations

import asyncio

import aiohttp

from .helpers import free_port, port_of, serve


async def _metric(admin_port: int, name: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{admin_port}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def test_connections_beyond_the_cap_are_refused_and_counted() -> None:
    admin = free_port()
    text = (f"{{\n\tadmin 127.0.0.1:{admin}\n\tservers {{\n\t\tmax_connections 2\n\t}}\n}}\n"
            ":0 {\n\tbind 127.0.0.1\n\trespond ok\n}\n")
    async with serve(text) as app:
        port = port_of(app)
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.05)  # both accepted
        assert await _metric(admin, "durable_streams_http_connections_open") == 2
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # closed at once, with no answer (a reset may come instead of an orderly close)
        try:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        except ConnectionResetError:
            pass
        writer.close()
        assert await _metric(admin, "durable_streams_http_connections_refused_total") == 1
        # one of the held connections still works; after it closes, a new one is served
        r0, w0 = held[0]
        w0.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(r0.read(), 5)).startswith(b"HTTP/1.1 200 ")
        w0.close()
        await asyncio.sleep(0.05)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(r2.read(), 5)).startswith(b"HTTP/1.1 200 ")
        for _, w in (held[1], (r2, w2)):
            w.close()
