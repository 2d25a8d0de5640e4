"""`max_live_readers`: beyond the cap a new long-poll or SSE request is refused with 503
and Retry-After; plain reads and writes are unaffected, and freed slots are reusable."""

from __future__ import annotations

import asyncio

import pytest
from subdirectives import caddyfile_with, durable_streams_handler

GUARD = 10.0  # against a hang, not a performance expectation
TEXT = {"Content-Type": "text/plain"}


async def wait_for_live(server, count: int) -> None:
    async def reached() -> None:
        while server.handler.live_readers != count:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(reached(), GUARD)


async def assert_refused(http, url: str, live: str) -> None:
    async with http.get(url, params={"offset": "-1", "live": live}) as r:
        assert r.status == 503
        assert r.headers["Retry-After"].isdigit() and int(r.headers["Retry-After"]) > 0
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["Content-Type"] == "text/plain"
        assert "live readers" in await r.text()


async def test_live_readers_over_the_cap_are_refused(start_server, http):
    async with start_server(max_live_readers=3, long_poll_timeout=60) as server:
        url = server.url(server.new_path("cap"))
        async with http.put(url, data="a", headers=TEXT) as r:
            assert r.status == 201
        polls = [
            asyncio.ensure_future(http.get(url, params={"offset": "now", "live": "long-poll"}))
            for _ in range(2)
        ]
        sse = await http.get(url, params={"offset": "now", "live": "sse"})
        try:
            await wait_for_live(server, 3)
            await assert_refused(http, url, "long-poll")
            await assert_refused(http, url, "sse")
            async with http.get(url, params={"offset": "-1"}) as r:  # catch-up reads still work
                assert r.status == 200 and await r.text() == "a"
            async with http.post(url, data="b", headers=TEXT) as r:  # releases the long-polls
                assert r.status == 204
            for response in await asyncio.wait_for(asyncio.gather(*polls), GUARD):
                assert response.status == 200 and await response.text() == "b"
                response.release()
            await wait_for_live(server, 1)
            async with http.get(url, params={"offset": "-1", "live": "long-poll"}) as r:
                assert r.status == 200 and await r.text() == "ab"  # a freed slot is usable
        finally:
            sse.close()
            for poll in polls:
                poll.cancel()


async def test_default_cap_admits_many_readers(start_server, http):
    async with start_server(long_poll_timeout=60) as server:
        assert server.handler.settings.max_live_readers == 10000
        url = server.url(server.new_path("cap"))
        async with http.put(url, headers=TEXT) as r:
            assert r.status == 201
        polls = [
            asyncio.ensure_future(http.get(url, params={"offset": "now", "live": "long-poll"}))
            for _ in range(50)
        ]
        await wait_for_live(server, 50)
        async with http.post(url, data="x", headers=TEXT) as r:
            assert r.status == 204
        for response in await asyncio.wait_for(asyncio.gather(*polls), GUARD):
            assert response.status == 200
            response.release()


# ---------------------------------------------------------------- the Caddyfile extension

def test_max_live_readers_subdirective():
    from durable_streams.server.config import load_config

    handler = durable_streams_handler(load_config(caddyfile_with("max_live_readers 25")))
    assert handler.max_live_readers == 25
    assert handler.config()["max_live_readers"] == 25
    default = durable_streams_handler(load_config(caddyfile_with("data_dir /tmp/x")))
    assert default.max_live_readers == 10000
    assert "max_live_readers" not in default.config()  # adapts like the plugin when unused


@pytest.mark.parametrize(("value", "reason"), [
    ("abc", "invalid max_live_readers: expected integer"),
    ("10k", "invalid max_live_readers: expected integer"),
    ("0", "invalid max_live_readers: must be at least 1"),
    ("", "wrong argument count or unexpected line ending after 'max_live_readers'"),
    ("1 2", "unknown subdirective: 2"),
])
def test_max_live_readers_errors(value, reason):
    from durable_streams.server.config import CaddyfileError, load_config

    with pytest.raises(CaddyfileError) as error:
        load_config(caddyfile_with(f"max_live_readers {value}".strip()))
    assert reason in str(error.value) and "Caddyfile:4" in str(error.value)


async def test_caddyfile_value_reaches_the_protocol_handler():
    from durable_streams.server.config import load_config
    from durable_streams.server.runtime.handlers import DurableStreamsRuntime

    runtime = DurableStreamsRuntime(durable_streams_handler(load_config(caddyfile_with("max_live_readers 7"))))
    await runtime.start()
    try:
        assert runtime.impl.settings.max_live_readers == 7
    finally:
        await runtime.stop()
