"""Framing, keep-alive, pipelining and error answers of the HTTP/1.1 server, over real sockets."""

from __future__ import annotations

import asyncio

import pytest

from durable_streams.server.http import Response, ServerSettings, StreamResponse, json_response
from rawhttp import TIMEOUT, chunked, get, post, sleeping_handler, wait_until


async def echo(request):
    """Answers `METHOD path body-bytes`."""
    body = await request.read()
    return Response(body=f"{request.method} {request.path} ".encode() + body,
                    headers={"X-Version": "%d.%d" % request.version})


# ---------------------------------------------------------------- keep-alive and pipelining

async def test_keep_alive_serves_several_requests_on_one_connection(serve):
    seen = []

    async def handler(request):
        seen.append(request._conn.transport)
        return await echo(request)

    served = await serve(handler)
    client = await served.connect()
    for i in range(3):
        await client.send(get(f"/r{i}"))
        resp = await client.response()
        assert resp.status == 200
        assert resp.body == f"GET /r{i} ".encode()
        assert resp.headers["Content-Length"] == str(len(resp.body))
        assert "Connection" not in resp.headers
        assert "Date" in resp.headers
    assert len(seen) == 3 and seen[0] is seen[1] is seen[2]
    assert len(served.server.connections) == 1


async def test_pipelined_requests_are_answered_in_order(serve):
    async def handler(request):
        if request.path == "/slow":
            await asyncio.sleep(0.05)
        return await echo(request)

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/slow") + post("/p", b"payload") + get("/c") + b"\r\n" + get("/d"))
    bodies = [(await client.response()).body for _ in range(4)]
    assert bodies == [b"GET /slow ", b"POST /p payload", b"GET /c ", b"GET /d "]


async def test_many_pipelined_requests_beyond_the_read_ahead_limit(serve):
    served = await serve(echo)
    client = await served.connect()
    # the first batch overflows the read-ahead limit, so reading pauses: the second batch
    # is only read once answering has caught up
    await client.send(b"".join(get(f"/{i}") for i in range(30)))
    assert (await client.response()).body == b"GET /0 "
    await client.send(b"".join(get(f"/{i}") for i in range(30, 60)))
    for i in range(1, 60):
        assert (await client.response()).body == f"GET /{i} ".encode()


async def test_pipelined_body_after_the_read_ahead_limit(serve):
    served = await serve(echo)
    client = await served.connect()
    # 20 GETs and a POST head in one send: the POST body is sent afterwards
    await client.send(b"".join(get(f"/{i}") for i in range(20))
                      + b"POST /late HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n")
    await asyncio.sleep(0.05)
    await client.send(b"body")
    for i in range(20):
        assert (await client.response()).body == f"GET /{i} ".encode()
    assert (await client.response(timeout=0.5)).body == b"POST /late body"


# ---------------------------------------------------------------- request bodies

async def test_content_length_body_split_across_many_writes(serve):
    served = await serve(echo)
    client = await served.connect(nodelay=True)
    body = bytes(range(256)) * 2
    wire = post("/split", body) + get("/after")
    for i in range(0, len(wire), 7):
        await client.send(wire[i:i + 7])
        await asyncio.sleep(0.001)
    assert (await client.response()).body == b"POST /split " + body
    assert (await client.response()).body == b"GET /after "


async def test_chunked_request_body(serve):
    served = await serve(echo)
    client = await served.connect(nodelay=True)
    wire = (b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n")
    for i in range(0, len(wire), 5):
        await client.send(wire[i:i + 5])
        await asyncio.sleep(0.001)
    await client.send(get("/next"))
    resp = await client.response()
    assert resp.status == 200
    assert resp.body == b"POST /c Wikipedia in\r\n\r\nchunks."
    assert (await client.response()).body == b"GET /next "


async def test_chunked_body_and_next_request_in_one_send(serve):
    served = await serve(echo)
    client = await served.connect()
    await client.send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                      + chunked(b"abc", b"def") + get("/next"))
    assert (await client.response()).body == b"POST /c abcdef"
    assert (await client.response()).body == b"GET /next "


async def test_body_exists_and_content_length(serve):
    seen = {}

    async def handler(request):
        seen[request.path] = (request.body_exists, request.content_length)
        await request.read()
        return Response()

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/none") + post("/five", b"12345")
                      + b"POST /ch HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"x"))
    for _ in range(3):
        assert (await client.response()).status == 200
    assert seen == {"/none": (False, None), "/five": (True, 5), "/ch": (True, None)}


# ---------------------------------------------------------------- Expect: 100-continue

async def test_expect_continue_when_the_handler_reads_the_body(serve):
    served = await serve(echo)
    client = await served.connect()
    await client.send(b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = await client.response()
    assert interim.status == 100
    assert interim.head == b"HTTP/1.1 100 Continue\r\n\r\n"
    await client.send(b"hello")
    final = await client.response()
    assert final.status == 200
    assert final.body == b"PUT /e hello"
    # a later request on the connection has no interim response
    await client.send(get("/x"))
    assert (await client.response()).status == 200


async def test_no_continue_when_the_handler_does_not_read_the_body(serve):
    async def handler(request):
        return Response(status=413, text="too big")

    served = await serve(handler)
    client = await served.connect()
    await client.send(b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
    final = await client.response()
    assert final.status == 413
    assert final.body == b"too big"
    # the unread body is still to come on the wire: the server says it closes, and does
    assert final.headers.get("Connection") == "close"
    await client.assert_closed()


async def test_no_continue_when_the_body_is_already_there(serve):
    served = await serve(echo)
    client = await served.connect()
    await client.send(b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi")
    resp = await client.response()
    assert resp.status == 200 and resp.body == b"PUT /e hi"


# ---------------------------------------------------------------- bodiless responses

async def test_head_has_content_length_but_no_body(serve):
    async def handler(request):
        return Response(body=b"0123456789")

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/h", method="HEAD") + get("/g"))
    head = await client.response(method="HEAD")
    assert head.status == 200
    assert head.headers["Content-Length"] == "10"
    # the next bytes on the wire are the second response's head, not a body
    second = await client.response()
    assert second.body == b"0123456789"


async def test_head_answered_by_a_stream_response_has_no_body(serve):
    async def handler(request):
        return StreamResponse(headers={"Content-Type": "text/event-stream"})

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/h", method="HEAD") + get("/g"))
    head = await client.response(method="HEAD")
    assert head.status == 200
    second = await client.response()
    assert second.status == 200


@pytest.mark.parametrize("status", [204, 304])
async def test_204_and_304_carry_no_length_and_no_body(serve, status):
    async def handler(request):
        return Response(status=status, body=b"must not be sent", headers={"Content-Length": "16", "ETag": '"x"'})

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/a") + get("/b"))
    first = await client.response()
    assert first.status == status
    assert "Content-Length" not in first.headers
    assert "Transfer-Encoding" not in first.headers
    assert first.headers["ETag"] == '"x"'
    second = await client.response()  # would fail to parse if a body had been sent
    assert second.status == status


# ---------------------------------------------------------------- connection management

async def test_http10_closes_after_the_response(serve):
    served = await serve(echo)
    client = await served.connect()
    await client.send(get("/old", version="1.0", host=""))
    resp = await client.response()
    assert resp.status == 200
    assert resp.body == b"GET /old "
    assert resp.headers["X-Version"] == "1.0"
    assert resp.headers["Connection"] == "close"
    await client.assert_closed()


async def test_http10_keep_alive(serve):
    served = await serve(echo)
    client = await served.connect()
    for i in range(2):
        await client.send(get(f"/{i}", version="1.0", host="", headers="Connection: keep-alive\r\n"))
        resp = await client.response()
        assert resp.body == f"GET /{i} ".encode()
        assert resp.headers["Connection"] == "keep-alive"
    await client.send(get("/last", version="1.0", host=""))
    assert (await client.response()).headers["Connection"] == "close"
    await client.assert_closed()


async def test_client_connection_close(serve):
    served = await serve(echo)
    client = await served.connect()
    await client.send(get("/bye", headers="Connection: close\r\n") + get("/never"))
    resp = await client.response()
    assert resp.body == b"GET /bye "
    assert resp.headers["Connection"] == "close"
    await client.assert_closed()


async def test_handler_connection_close_header(serve):
    async def handler(request):
        return Response(text="bye", headers={"Connection": "close"})

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/"))
    resp = await client.response()
    assert resp.headers.getall("Connection") == ["close"]
    await client.assert_closed()


async def test_force_close(serve):
    async def handler(request):
        resp = Response(text="bye")
        resp.force_close()
        return resp

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/") + get("/again"))
    assert (await client.response()).headers["Connection"] == "close"
    await client.assert_closed()


# ---------------------------------------------------------------- malformed requests

@pytest.mark.parametrize("wire, status", [
    (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: t\r\n\r\n", 400),
])
async def test_malformed_request_is_refused_and_closed(serve, wire, status):
    calls = []

    async def handler(request):
        calls.append(request)
        return Response()

    served = await serve(handler)
    client = await served.connect()
    await client.send(wire)
    resp = await client.response()
    assert resp.status == status
    assert resp.headers["Connection"] == "close"
    assert resp.body.startswith(str(status).encode())
    await client.assert_closed()
    assert calls == []


async def test_valid_request_pipelined_before_a_malformed_one_is_answered_first(serve):
    served = await serve(echo)
    client = await served.connect()
    await client.send(get("/ok") + post("/ok2", b"xy") + b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + get("/never"))
    first = await client.response()
    assert (first.status, first.body) == (200, b"GET /ok ")
    assert "Connection" not in first.headers
    assert (await client.response()).body == b"POST /ok2 xy"
    refused = await client.response()
    assert refused.status == 400
    assert refused.headers["Connection"] == "close"
    await client.assert_closed()


async def test_request_line_too_long(serve):
    served = await serve(echo, ServerSettings(max_line_size=100))
    client = await served.connect()
    await client.send(get("/" + "a" * 200))
    resp = await client.response()
    assert resp.status == 414
    await client.assert_closed()


async def test_unterminated_request_line_beyond_the_head_limit(serve):
    served = await serve(echo, ServerSettings(max_line_size=100, max_head_size=1000))
    client = await served.connect()
    await client.send(b"GET /" + b"a" * 2000)
    resp = await client.response()
    assert resp.status == 414
    await client.assert_closed()


async def test_header_line_too_long(serve):
    served = await serve(echo, ServerSettings(max_field_size=100))
    client = await served.connect()
    await client.send(get("/", headers="X-Big: " + "b" * 200 + "\r\n"))
    resp = await client.response()
    assert resp.status == 431
    await client.assert_closed()


@pytest.mark.parametrize("complete", [True, False])
async def test_head_too_large(serve, complete):
    served = await serve(echo, ServerSettings(max_head_size=1000))
    client = await served.connect()
    fields = "".join(f"X-{i}: {'v' * 40}\r\n" for i in range(40))
    wire = get("/", headers=fields)
    await client.send(wire if complete else wire[:-2])
    resp = await client.response()
    assert resp.status == 431
    await client.assert_closed()


async def test_head_within_the_limits_is_served(serve):
    served = await serve(echo, ServerSettings(max_line_size=100, max_field_size=100, max_head_size=1000))
    client = await served.connect()
    await client.send(get("/" + "a" * 80, headers="X-Big: " + "b" * 80 + "\r\n"))
    assert (await client.response()).status == 200


async def test_malformed_chunked_body_gets_400(serve):
    served = await serve(echo)
    client = await served.connect()
    await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
    resp = await client.response()
    assert resp.status == 400


async def test_malformed_chunked_body_closes_the_connection(serve):
    served = await serve(echo)
    client = await served.connect()
    await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
    rest = await client.read_to_eof()
    assert b" 200 " not in rest.split(b"\r\n", 1)[0]


# ---------------------------------------------------------------- handler errors

async def test_handler_exception_is_a_500_and_others_are_still_served(serve):
    async def handler(request):
        if request.path == "/boom":
            raise RuntimeError("boom")
        return Response(text="fine")

    served = await serve(handler)
    bystander = await served.connect()
    await bystander.send(get("/"))
    assert (await bystander.response()).status == 200

    client = await served.connect()
    await client.send(get("/boom") + get("/never"))
    resp = await client.response()
    assert resp.status == 500
    assert resp.headers["Connection"] == "close"
    assert b"boom" not in resp.body
    await client.assert_closed()

    await bystander.send(get("/"))
    assert (await bystander.response()).body == b"fine"
    fresh = await served.connect()
    await fresh.send(get("/"))
    assert (await fresh.response()).body == b"fine"


async def test_handler_error_after_stream_prepare_does_not_write_a_second_head(serve):
    async def handler(request):
        resp = StreamResponse()
        await resp.prepare(request)
        await resp.write(b"hello")
        raise RuntimeError("mid-stream")

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/"))
    status, _, headers, _ = await client.head()
    assert status == 200 and headers["Transfer-Encoding"] == "chunked"
    rest = await client.read_to_eof()
    assert rest.startswith(b"5\r\nhello\r\n")
    assert b"HTTP/1.1" not in rest


async def test_client_disconnect_cancels_the_handler(serve):
    handler, started, cancelled = sleeping_handler()
    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/wait"))
    await asyncio.wait_for(started.wait(), TIMEOUT)
    client.close()
    await asyncio.wait_for(cancelled.wait(), TIMEOUT)
    await wait_until(lambda: not served.server.connections)

    started.clear()
    other = await served.connect()
    await other.send(get("/wait", headers="Connection: close\r\n"))
    await asyncio.wait_for(started.wait(), TIMEOUT)


async def test_client_disconnect_while_the_handler_waits_for_the_body(serve):
    started, failed = asyncio.Event(), asyncio.Event()

    async def handler(request):
        started.set()
        try:
            await request.read()
        except (asyncio.CancelledError, ConnectionError):
            failed.set()
            raise
        return Response()

    served = await serve(handler)
    client = await served.connect()
    await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\npartial")
    await asyncio.wait_for(started.wait(), TIMEOUT)
    client.close()
    await asyncio.wait_for(failed.wait(), TIMEOUT)


# ---------------------------------------------------------------- streamed responses

async def stream_handler(request):
    resp = StreamResponse(headers={"Content-Type": "text/plain"})
    await resp.prepare(request)
    await resp.write(b"hello")
    await resp.write(b"")  # nothing: no empty chunk (which would end the body)
    await resp.write(b" streamed world")
    await resp.write_eof()
    return resp


async def test_stream_response_is_chunked_on_http11(serve):
    served = await serve(stream_handler)
    client = await served.connect()
    await client.send(get("/s"))
    status, _, headers, _ = await client.head()
    assert status == 200
    assert headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in headers
    assert headers["Content-Type"] == "text/plain"
    expected = b"5\r\nhello\r\nf\r\n streamed world\r\n0\r\n\r\n"
    assert await asyncio.wait_for(client.reader.readexactly(len(expected)), TIMEOUT) == expected
    # and the connection is still usable
    await client.send(get("/again"))
    resp = await client.response()
    assert resp.framing == "chunked"
    assert resp.chunks == [b"hello", b" streamed world"]


async def test_stream_response_is_close_delimited_on_http10(serve):
    served = await serve(stream_handler)
    client = await served.connect()
    await client.send(get("/s", version="1.0", host="", headers="Connection: keep-alive\r\n"))
    resp = await client.response()
    assert resp.status == 200
    assert "Transfer-Encoding" not in resp.headers
    assert "Content-Length" not in resp.headers
    assert resp.headers["Connection"] == "close"
    assert resp.framing == "close"
    assert resp.body == b"hello streamed world"


async def test_stream_response_with_content_length_is_not_chunked(serve):
    async def handler(request):
        resp = StreamResponse(headers={"Content-Length": "6"})
        await resp.prepare(request)
        await resp.write(b"abc")
        await resp.write(b"def")
        return resp

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/") + get("/"))
    for _ in range(2):
        resp = await client.response()
        assert resp.framing == "length" and resp.body == b"abcdef"


async def test_unprepared_stream_response_is_sent_empty(serve):
    async def handler(request):
        return StreamResponse(status=202)

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/") + get("/"))
    for _ in range(2):
        resp = await client.response()
        assert resp.status == 202 and resp.framing == "chunked" and resp.body == b""


# ---------------------------------------------------------------- header injection

async def test_line_break_in_a_response_header_value_is_not_injected(serve):
    async def handler(request):
        return Response(text="secret", headers={"X-Evil": "a\r\nSet-Cookie: pwned=1"})

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/"))
    resp = await client.response()
    assert resp.status == 500
    assert "Set-Cookie" not in resp.headers
    assert b"pwned" not in resp.head
    assert resp.body == b""
    assert resp.headers["Connection"] == "close"
    await client.assert_closed()


@pytest.mark.parametrize("headers", [{"X-Evil": "a\nInjected: 1"}, {"X-Evil": "a\rInjected: 1"},
                                     {"X-Evil\r\nInjected": "1"}])
async def test_line_break_variants_are_refused(serve, headers):
    async def handler(request):
        return Response(headers=headers)

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/"))
    resp = await client.response()
    assert resp.status == 500
    assert "Injected" not in resp.headers
    assert b"Injected" not in resp.head


async def test_line_break_in_a_stream_response_header_is_not_injected(serve):
    async def handler(request):
        resp = StreamResponse(headers={"X-Evil": "a\r\nSet-Cookie: pwned=1"})
        await resp.prepare(request)
        await resp.write(b"data")
        return resp

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/"))
    resp = await client.response()
    assert resp.status == 500
    assert b"pwned" not in resp.head
    await client.assert_closed()


# ---------------------------------------------------------------- hooks

async def test_prepare_hook_can_add_a_header(serve):
    calls = []

    def hook(request, response):
        calls.append((request.path, response.status))
        response.headers["X-Hooked"] = request.path

    async def handler(request):
        if request.path == "/stream":
            return await stream_handler(request)
        return json_response({"ok": True}, status=201)

    served = await serve(handler, prepare_hook=hook)
    client = await served.connect()
    await client.send(get("/plain") + get("/stream"))
    plain = await client.response()
    assert plain.status == 201
    assert plain.headers["X-Hooked"] == "/plain"
    assert plain.headers["Content-Type"] == "application/json"
    assert plain.body == b'{"ok": true}'
    streamed = await client.response()
    assert streamed.headers["X-Hooked"] == "/stream"
    assert streamed.body == b"hello streamed world"
    assert calls == [("/plain", 201), ("/stream", 200)]


async def test_access_log_gets_request_response_and_duration(serve):
    entries = []

    def access_log(request, response, seconds):
        entries.append((request.method, request.path, response.status, response.body_length, seconds))

    async def handler(request):
        if request.path == "/boom":
            raise ValueError("x")
        if request.path == "/stream":
            return await stream_handler(request)
        return Response(status=404, text="nope")

    served = await serve(handler, access_log=access_log)
    client = await served.connect()
    await client.send(get("/missing") + get("/stream") + get("/boom"))
    assert (await client.response()).status == 404
    assert (await client.response()).status == 200
    assert (await client.response()).status == 500
    await wait_until(lambda: len(entries) == 3)
    assert [e[:4] for e in entries] == [("GET", "/missing", 404, 4), ("GET", "/stream", 200, 20),
                                        ("GET", "/boom", 500, len(b"500 Internal Server Error\n"))]
    assert all(isinstance(e[4], float) and e[4] >= 0 for e in entries)


# ---------------------------------------------------------------- answers sent before the handler returns

async def test_answer_sent_early_is_sent_once_and_the_connection_goes_on(serve):
    """Request.answer_now writes the response while the handler still runs (the live
    fan-out answers waiting long-polls this way); returning it then sends nothing more."""
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def handler(request):
        if request.path == "/early":
            response = Response(text="early")
            assert request.answer_now(response)
            assert not request.answer_now(Response(text="again"))  # one answer per request
            arrived.set()
            await release.wait()
            return response
        return Response(text="next")

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/early") + get("/next"))  # pipelined: answered in order
    first = await client.response()
    assert first.status == 200 and first.body == b"early"
    await asyncio.wait_for(arrived.wait(), TIMEOUT)
    release.set()
    second = await client.response()
    assert second.body == b"next"


async def test_handler_returning_another_response_after_an_early_answer_closes_the_connection(serve):
    async def handler(request):
        assert request.answer_now(Response(text="first"))
        return Response(text="second")

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/") + get("/"))
    first = await client.response()
    assert first.body == b"first"
    await client.assert_closed()  # nothing else: the connection's framing would be lost


async def test_answer_now_is_refused_once_a_streamed_response_started(serve):
    refused = []

    async def handler(request):
        response = StreamResponse()
        await response.prepare(request)
        refused.append(request.answer_now(Response(text="late")))
        await response.write(b"streamed")
        return response

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/"))
    resp = await client.response()
    assert resp.body == b"streamed" and refused == [False]
