"""Live reads: SSE connections end after sse_reconnect_interval (for CDN collapsing)
and resume without replay; deleting a stream or stopping the server releases
long-polls and SSE readers instead of leaving them to their timeout."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

# Guards against a hang, far below the configured live timeouts (60 s): a reader that
# was not released would trip them. Not performance expectations.
RELEASE_GUARD = 10.0
TEXT = {"Content-Type": "text/plain"}


def controls(sse_text: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(r"event: control\ndata:(\{[^\n]*\})\n\n", sse_text)]


async def test_sse_connection_closes_after_reconnect_interval(start_server, http):
    async with start_server(sse_reconnect_interval=0.3, long_poll_timeout=60) as server:
        url = server.url(server.new_path("sse"))
        async with http.put(url, data="hello", headers=TEXT) as r:
            assert r.status == 201
        async with http.get(url, params={"offset": "-1", "live": "sse"}) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            text = await asyncio.wait_for(r.text(), RELEASE_GUARD)  # ends: the server closed it
        assert "event: data\ndata:hello\n\n" in text
        last = controls(text)[-1]
        assert last["upToDate"] is True and "streamClosed" not in last

        # Resuming from the last streamNextOffset replays nothing and sees new data.
        async with http.post(url, data="again", headers=TEXT) as r:
            assert r.status == 204
        params = {"offset": last["streamNextOffset"], "live": "sse", "cursor": last["streamCursor"]}
        async with http.get(url, params=params) as r:
            text = await asyncio.wait_for(r.text(), RELEASE_GUARD)
        assert "data:again" in text and "hello" not in text
        assert int(controls(text)[0]["streamCursor"]) > int(last["streamCursor"])


async def test_sse_splits_payload_lines_and_base64_for_binary(server, http):
    text_url = server.url(server.new_path("lines"))
    async with http.put(text_url, data="a\r\nevent: x\rb\nc", headers=TEXT) as r:
        assert r.status == 201
    async with http.post(text_url, headers={"Stream-Closed": "true"}) as r:
        assert r.status == 204
    async with http.get(text_url, params={"offset": "-1", "live": "sse"}) as r:
        body = await asyncio.wait_for(r.text(), RELEASE_GUARD)
    assert "event: data\ndata:a\ndata:event: x\ndata:b\ndata:c\n\n" in body
    assert controls(body)[-1]["streamClosed"] is True

    bin_url = server.url(server.new_path("bin"))
    async with http.put(bin_url, data=bytes(range(256)), headers={"Content-Type": "application/octet-stream",
                                                                   "Stream-Closed": "true"}) as r:
        assert r.status == 201
    async with http.get(bin_url, params={"offset": "-1", "live": "sse"}) as r:
        assert r.headers["Stream-SSE-Data-Encoding"] == "base64"
        body = await asyncio.wait_for(r.text(), RELEASE_GUARD)
    import base64
    data_lines = re.search(r"event: data\n((?:data:[^\n]*\n)+)\n", body).group(1)
    payload = "".join(line[len("data:"):] for line in data_lines.splitlines())
    assert base64.b64decode(payload) == bytes(range(256))


@pytest.mark.parametrize("mode", ["long-poll", "sse"])
async def test_delete_releases_waiting_readers(start_server, http, mode):
    async with start_server(long_poll_timeout=60, sse_reconnect_interval=60) as server:
        url = server.url(server.new_path("del"))
        async with http.put(url, headers=TEXT) as r:
            assert r.status == 201
            tail = r.headers["Stream-Next-Offset"]

        async def reader():
            async with http.get(url, params={"offset": tail, "live": mode}) as r:
                return r.status, await r.text()

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.2)  # let the reader start waiting
        async with http.delete(url) as r:
            assert r.status == 204
        status, text = await asyncio.wait_for(task, RELEASE_GUARD)
        if mode == "long-poll":
            assert status == 404
        else:
            assert status == 200 and "streamClosed" not in text  # the event stream just ends


async def test_stop_releases_live_readers(start_server, http):
    async with start_server(long_poll_timeout=60, sse_reconnect_interval=60) as server:
        url = server.url(server.new_path("stop"))
        async with http.put(url, headers=TEXT) as r:
            tail = r.headers["Stream-Next-Offset"]

        async def reader(mode):
            async with http.get(url, params={"offset": tail, "live": mode}) as r:
                return r.status

        tasks = [asyncio.create_task(reader(m)) for m in ("long-poll", "sse")]
        await asyncio.sleep(0.2)
        await asyncio.wait_for(server.handler.stop(), RELEASE_GUARD)
        assert sorted(await asyncio.wait_for(asyncio.gather(*tasks), RELEASE_GUARD)) == [200, 204]


async def test_long_poll_wakes_on_append_with_only_new_data(start_server, http):
    async with start_server(long_poll_timeout=60) as server:
        url = server.url(server.new_path("lp"))
        async with http.put(url, data="old", headers=TEXT) as r:
            tail = r.headers["Stream-Next-Offset"]

        async def reader():
            async with http.get(url, params={"offset": tail, "live": "long-poll"}) as r:
                return r.status, await r.text(), r.headers

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.2)
        async with http.post(url, data="new", headers=TEXT) as r:
            assert r.status == 204
        status, body, headers = await asyncio.wait_for(task, RELEASE_GUARD)
        assert (status, body) == (200, "new")
        assert re.fullmatch(r"[0-9]+", headers["Stream-Cursor"])


async def test_many_sse_subscribers_get_every_event_then_eof(server, http):
    url = server.url(server.new_path("fan"))
    async with http.put(url, headers={"Content-Type": "application/json"}) as r:
        tail = r.headers["Stream-Next-Offset"]
    ready = asyncio.Event()
    waiting = 0

    async def subscriber():
        nonlocal waiting
        async with http.get(url, params={"offset": tail, "live": "sse"}) as r:
            first = await r.content.readuntil(b"\n\n")  # the initial up-to-date control
            waiting += 1
            if waiting == 20:
                ready.set()
            return first + await r.content.read()

    tasks = [asyncio.create_task(subscriber()) for _ in range(20)]
    await asyncio.wait_for(ready.wait(), RELEASE_GUARD)
    for batch in ([1, 2], [3]):
        async with http.post(url, data=json.dumps(batch), headers={"Content-Type": "application/json"}) as r:
            assert r.status == 204
    async with http.post(url, headers={"Stream-Closed": "true"}) as r:
        assert r.status == 204
    for text in await asyncio.wait_for(asyncio.gather(*tasks), RELEASE_GUARD):
        text = text.decode()
        events = re.findall(r"event: data\ndata:([^\n]*)\n\n", text)
        assert [m for e in events for m in json.loads(e)] == [1, 2, 3]
        assert controls(text)[-1]["streamClosed"] is True


async def test_long_polls_woken_together_get_the_answer_each_would_get_alone(server, http):
    """The long-polls waiting at the tail are answered together by the stream's fan-out:
    every one gets the data with the same headers as a poll answered on its own (a
    conditional one is), and its own cursor, larger than the one it echoed."""
    url = server.url(server.new_path("lp-fan"))
    async with http.put(url, data="old", headers=TEXT) as r:
        tail = r.headers["Stream-Next-Offset"]
    async with http.get(url, params={"offset": tail, "live": "long-poll"}) as r:
        assert r.status == 204
        echoed = r.headers["Stream-Cursor"]

    async def poll(headers=None):
        params = {"offset": tail, "live": "long-poll", "cursor": echoed}
        async with http.get(url, params=params, headers=headers) as r:
            return r.status, await r.read(), r.headers

    polls = [asyncio.create_task(poll()) for _ in range(20)]
    alone = asyncio.create_task(poll({"If-None-Match": '"no-such-tag"'}))

    async def all_waiting():
        while server.handler.live_readers < 21:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(all_waiting(), RELEASE_GUARD)
    async with http.post(url, data="new\nline", headers=TEXT) as r:
        assert r.status == 204
    answers = await asyncio.wait_for(asyncio.gather(*polls), RELEASE_GUARD)
    status, body, reference = await asyncio.wait_for(alone, RELEASE_GUARD)
    assert (status, body) == (200, b"new\nline")
    for status, body, headers in answers:
        assert (status, body) == (200, b"new\nline")
        assert int(headers["Stream-Cursor"]) > int(echoed)
        assert {k: v for k, v in headers.items() if k not in ("Stream-Cursor", "Date")} == \
            {k: v for k, v in reference.items() if k not in ("Stream-Cursor", "Date")}


async def test_sse_reader_at_the_tail_sees_what_a_catching_up_reader_sees(start_server, http):
    """A reader waiting at the tail is served by the stream's fan-out, batch by batch;
    one that connects afterwards from the same offset catches up on its own, in one
    batch: both get the same messages, the same closing control, and cursors that never
    go backwards."""
    async with start_server(sse_reconnect_interval=1.0, long_poll_timeout=60) as server:
        url = server.url(server.new_path("sse-same"))
        async with http.put(url, headers={"Content-Type": "application/json"}) as r:
            tail = r.headers["Stream-Next-Offset"]

        async def subscribe(ready: asyncio.Event):
            async with http.get(url, params={"offset": tail, "live": "sse"}) as r:
                first = await r.content.readuntil(b"\n\n")  # the initial up-to-date control
                ready.set()
                return first + await r.content.read()

        parked = asyncio.Event()
        waiting = asyncio.create_task(subscribe(parked))
        await asyncio.wait_for(parked.wait(), RELEASE_GUARD)
        for batch in ([1], [2, 3]):
            async with http.post(url, data=json.dumps(batch), headers={"Content-Type": "application/json"}) as r:
                assert r.status == 204
        async with http.post(url, headers={"Stream-Closed": "true"}) as r:
            assert r.status == 204
        live = (await asyncio.wait_for(waiting, RELEASE_GUARD)).decode()
        late = (await asyncio.wait_for(subscribe(asyncio.Event()), RELEASE_GUARD)).decode()

        def data_and_positions(text: str) -> list:
            events = [json.loads(e) for e in re.findall(r"event: data\ndata:([^\n]*)\n\n", text)]
            return [m for e in events for m in e], [c["streamNextOffset"] for c in controls(text)]

        live_data, live_offsets = data_and_positions(live)
        late_data, late_offsets = data_and_positions(late)
        assert live_data == late_data == [1, 2, 3]
        assert live_offsets[-1] == late_offsets[-1] and controls(live)[-1] == controls(late)[-1]
        cursors = [int(c["streamCursor"]) for c in controls(live) if "streamCursor" in c]
        assert cursors == sorted(cursors)  # never backwards within a connection
