"""Framing vectors over real sockets: each malformed or ambiguous request is refused with
its status, the connection then closes, and nothing after it reaches the handler (no
request is smuggled). Includes every finding of the framing audit (issue 12)."""

from __future__ import annotations

import pytest

from durable_streams.server.http import Response
from rawhttp import get

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n"
TE = b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: "
CHUNKED = b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"


REFUSED = [
    # the audit's findings
    ("te-nbsp", TE + b"chunked\xc2\xa0\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("te-ideographic-space", TE + b"\xe3\x80\x80chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("te-kelvin-sign", TE + b"chun\xe2\x84\xaaed\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("trailer-not-a-field", CHUNKED + b"0\r\nnot a header\r\n\r\n" + SMUGGLED, 400),
    ("trailer-nul", CHUNKED + b"0\r\nX: a\x00b\r\n\r\n" + SMUGGLED, 400),
    ("trailer-bare-cr", CHUNKED + b"0\r\nX: a\rb\r\n\r\n" + SMUGGLED, 400),
    ("trailer-obs-fold", CHUNKED + b"0\r\nX: a\r\n b\r\n\r\n" + SMUGGLED, 400),
    ("trailer-swallows-request", CHUNKED + b"0\r\n\rGET /x HTTP/1.1\r\n\r\n" + SMUGGLED, 400),
    ("chunk-ext-bare-cr", CHUNKED + b"5;a\rb\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("chunk-size-leading-space", CHUNKED + b" 5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("connect", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n" + SMUGGLED, 405),
    # found by the framing fuzz: llhttp skips an upgrade request's body (it read as empty)
    ("upgrade-with-body", b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nConnection: Upgrade\r\n"
                          b"Upgrade: websocket\r\n\r\nhello" + SMUGGLED, 400),
    ("upgrade-with-chunked-body", CHUNKED[:-2] + b"Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                                  + SMUGGLED, 400),
    # the core defences
    ("cl-and-te", b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"0\r\n\r\n" + SMUGGLED, 400),
    ("two-content-lengths", b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
                            b"hello!" + SMUGGLED, 400),
    ("content-length-plus", b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: +5\r\n\r\nhello" + SMUGGLED, 400),
    ("te-gzip-chunked", TE + b"gzip, chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 501),
    ("te-identity", TE + b"identity\r\n\r\n" + SMUGGLED, 501),
    ("te-in-http-1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("bare-lf", b"GET / HTTP/1.1\nHost: test\n\n" + SMUGGLED, 400),
    ("nul-in-field", b"GET / HTTP/1.1\r\nHost: test\r\nX: a\x00b\r\n\r\n" + SMUGGLED, 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: test\r\nX: a\r\n b\r\n\r\n" + SMUGGLED, 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : test\r\n\r\n" + SMUGGLED, 400),
    ("no-host", b"GET / HTTP/1.1\r\n\r\n" + SMUGGLED, 400),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + SMUGGLED, 400),
    # found by the framing fuzz (RFC 9112 §3.2 applies to every form and version)
    ("two-hosts-http-1.0", b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\nConnection: keep-alive\r\n\r\n" + SMUGGLED, 400),
    ("two-hosts-absolute-form", b"GET http://c/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + SMUGGLED, 400),
    ("no-host-absolute-form", b"GET http://c/ HTTP/1.1\r\n\r\n" + SMUGGLED, 400),
    ("connection-not-ascii", b"GET / HTTP/1.1\r\nHost: test\r\nConnection: clos\xc3\xa9\r\n\r\n" + SMUGGLED, 400),
    ("http-2.0", b"GET / HTTP/2.0\r\nHost: test\r\n\r\n" + SMUGGLED, 505),
    ("request-line-too-long", get("/" + "a" * (70 << 10)) + SMUGGLED, 414),
    ("header-line-too-long", get(headers="X: " + "a" * (70 << 10) + "\r\n") + SMUGGLED, 431),
    ("101-header-fields", get(headers="".join(f"X-{i}: v\r\n" for i in range(100))) + SMUGGLED, 431),
]


async def recorder(seen: list):
    async def handler(request):
        seen.append(request.path)
        await request.read()
        return Response(status=200, body=b"ok")
    return handler


@pytest.mark.parametrize(("name", "data", "status"), REFUSED, ids=[row[0] for row in REFUSED])
async def test_refused_and_nothing_smuggled(serve, name, data, status):
    seen: list[str] = []
    served = await serve(await recorder(seen))
    client = await served.connect()
    await client.send(data)
    resp = await client.response()
    if resp.status == 200:  # a body that was read before its framing failed is never answered 2xx
        raise AssertionError(f"{name}: accepted")
    assert resp.status == status, (name, resp.status, resp.body)
    assert resp.headers.get("Connection") == "close"
    await client.assert_closed()
    assert "/smuggled" not in seen


async def test_100_header_fields_are_accepted(serve):
    seen: list[str] = []
    served = await serve(await recorder(seen))
    client = await served.connect()
    await client.send(get(headers="".join(f"X-{i}: v\r\n" for i in range(99))))  # + Host = 100
    assert (await client.response()).status == 200


async def test_every_connection_line_counts(serve):
    seen: list[str] = []
    served = await serve(await recorder(seen))
    client = await served.connect()
    await client.send(get(headers="Connection: keep-alive\r\nConnection: close\r\n") + SMUGGLED)
    resp = await client.response()
    assert resp.status == 200 and resp.headers["Connection"] == "close"
    await client.assert_closed()
    assert seen == ["/"]


async def test_absolute_form_routes_on_its_authority(serve):
    hosts = []

    async def handler(request):
        hosts.append(request.host)
        return Response(status=204)

    served = await serve(handler)
    client = await served.connect()
    await client.send(b"GET http://b.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert (await client.response()).status == 204
    assert hosts == ["b.example"]


async def test_upgrade_is_answered_as_plain_http_then_closed(serve):
    seen: list[str] = []
    served = await serve(await recorder(seen))
    client = await served.connect()
    await client.send(get(headers="Connection: Upgrade\r\nUpgrade: websocket\r\n") + SMUGGLED)
    resp = await client.response()
    assert resp.status == 200 and resp.headers["Connection"] == "close"
    await client.assert_closed()
    assert seen == ["/"]


async def test_chunked_with_extensions_and_trailers_is_accepted(serve):
    bodies = []

    async def handler(request):
        bodies.append(await request.read())
        return Response(status=204)

    served = await serve(handler)
    client = await served.connect()
    await client.send(CHUNKED + b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n" + get("/next"))
    assert (await client.response()).status == 204
    assert (await client.response()).status == 204
    assert bodies == [b"hello world", b""]
