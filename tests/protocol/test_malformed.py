"""Malformed input gets a clear 4xx with the security headers, never a 500."""

from __future__ import annotations

import asyncio

import pytest

TEXT = {"Content-Type": "text/plain"}
JSON = {"Content-Type": "application/json"}


async def make_stream(server, http, headers=TEXT, body=b"seed") -> str:
    url = server.url(server.new_path("bad"))
    async with http.put(url, data=body, headers=headers) as r:
        assert r.status == 201
    return url


CREATE_CASES = [
    ({"Stream-TTL": "abc"}, 400), ({"Stream-TTL": "-1"}, 400), ({"Stream-TTL": "007"}, 400),
    ({"Stream-TTL": "+5"}, 400), ({"Stream-TTL": "1e3"}, 400), ({"Stream-TTL": "１２"}, 400),
    ({"Stream-TTL": "99999999999999999999999999"}, 201),
    ({"Stream-Expires-At": "tomorrow"}, 400), ({"Stream-Expires-At": "2026-13-45T99:00:00Z"}, 400),
    ({"Stream-Expires-At": "2099-01-01T00:00:00+25:00"}, 400),
    ({"Stream-Expires-At": "2099-01-01T00:00:00.123+00:00"}, 201),
    ({"Stream-TTL": "60", "Stream-Expires-At": "2099-01-01T00:00:00Z"}, 400),
    ({"Stream-Fork-Offset": "0000000000000000_0000000000000000"}, 400),
    ({"Stream-Fork-Sub-Offset": "0"}, 400),
    ({"Stream-Forked-From": "/v1/stream/none", "Stream-Fork-Offset": "zz"}, 400),
    ({"Stream-Forked-From": "/v1/stream/none", "Stream-Fork-Sub-Offset": "-1"}, 400),
    ({"Stream-Forked-From": "/v1/stream/none"}, 404),
    ({"Content-Type": "application/json"}, 400),  # body "{" is not JSON
    ({"Content-Type": "not a media type"}, 201),  # treated as absent -> octet-stream
]


@pytest.mark.parametrize("headers,status", CREATE_CASES)
async def test_bad_create_headers(server, http, headers, status):
    url = server.url(server.new_path("create"))
    async with http.put(url, data=b"{", headers=headers) as r:
        assert r.status == status, await r.text()
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        if status >= 400:
            assert r.headers["Cache-Control"] == "no-store"
            assert r.headers["Content-Type"] == "text/plain"


APPEND_CASES = [
    ({"Producer-Id": "p"}, 400),
    ({"Producer-Id": "", "Producer-Epoch": "0", "Producer-Seq": "0"}, 400),
    ({"Producer-Id": "p", "Producer-Epoch": "1e3", "Producer-Seq": "0"}, 400),
    ({"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "9007199254740992"}, 400),
    ({"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "1_0"}, 400),
    ({"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "3"}, 409),
    ({"Content-Type": "application/json"}, 409),
    ({"Content-Type": None}, 400),
    ({"Stream-Closed": "yes"}, 204),  # not `true`: ignored
    ({"Stream-Seq": "\u00e9\u00e9"}, 204),
]


@pytest.mark.parametrize("headers,status", APPEND_CASES)
async def test_bad_append_headers(server, http, headers, status):
    url = await make_stream(server, http)
    sent = {**TEXT, **headers}
    sent = {k: v for k, v in sent.items() if v is not None}
    async with http.post(url, data=b"more", headers=sent, skip_auto_headers=["Content-Type"]) as r:
        assert r.status == status, await r.text()


@pytest.mark.parametrize("body", [
    b"NaN", b"[1, Infinity]", b"{\"a\": 1", b"\xff\xfe", b"[]", b"[" * 100000 + b"]" * 100000, b"",
])
async def test_bad_json_bodies(server, http, body):
    url = await make_stream(server, http, JSON, b"[]")
    async with http.post(url, data=body, headers=JSON) as r:
        assert r.status == 400, await r.text()
    async with http.get(url) as r:
        assert await r.json() == []  # nothing was appended


async def test_odd_but_valid_json_is_kept(server, http):
    url = await make_stream(server, http, JSON, b"[]")
    body = '[1e400, "\\ud800", "line\\nbreak", {"é": [1, 2]}]'
    async with http.post(url, data=body.encode(), headers=JSON) as r:
        assert r.status in (204, 400), await r.text()  # 1e400 overflows a double: may be refused
    async with http.post(url, data=b'["\\ud800", "x\\u2028y"]', headers=JSON) as r:
        assert r.status == 204
    async with http.get(url) as r:
        assert (await r.json())[-2:] == ["\ud800", "x\u2028y"]


READ_CASES = [
    "offset=", "offset=abc", "offset=-2", "offset=0_0%0A", "offset=%00", "offset=1,2",
    "offset=0000000000000000_0000000000000001&offset=0000000000000000_0000000000000002",
    "offset=%EF%BC%90_%EF%BC%90", "offset=9999999999999999_9999999999999999",
    "live=long-poll", "live=sse", "offset=now&live=bogus", "offset=../x",
]


@pytest.mark.parametrize("query", READ_CASES)
async def test_bad_read_parameters(server, http, query):
    url = await make_stream(server, http)
    async with http.get(f"{url}?{query}") as r:
        assert r.status == 400, await r.text()
        assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_unknown_parameters_are_ignored(server, http):
    url = await make_stream(server, http)
    async with http.get(f"{url}?offset=-1&foo=bar&foo=baz") as r:
        assert r.status == 200 and await r.text() == "seed"


async def raw_request(server, request: bytes) -> bytes:
    port = int(server.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    return data


@pytest.mark.parametrize("target", [
    b"/v1/stream/../secret", b"/v1/stream/%2E%2E/secret", b"/v1/stream/a%00b", b"/v1/./x",
    b"/v1/" + b"a" * 1100,
])
async def test_bad_paths_are_refused(server, target):
    response = await raw_request(server, b"PUT " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400"), response[:200]


async def test_non_ascii_header_bytes_do_not_crash(server, http):
    path = server.new_path("raw").encode()
    response = await raw_request(server, b"PUT " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                 b"Stream-TTL: \xff\xfe\r\nContent-Type: text/\xe9\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400"), response[:200]
    response = await raw_request(server, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                                 b"Producer-Id: \xff\r\nProducer-Epoch: 0\r\nProducer-Seq: 0\r\n\r\nx")
    assert response.split(b" ")[1] in (b"400", b"404"), response[:200]


async def test_other_methods_are_405_and_options_is_preflight(server, http):
    url = await make_stream(server, http)
    async with http.request("PATCH", url) as r:
        assert r.status == 405 and "GET" in r.headers["Allow"]
    async with http.options(url) as r:
        assert r.status == 204
        assert "PUT" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_unusable_host_header_still_creates(server):
    path = server.new_path("host").encode()
    response = await raw_request(server, b"PUT " + path + b" HTTP/1.1\r\nHost: x:99999999\r\nContent-Length: 0\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 201"), response[:200]
    assert b"\r\nLocation: " + path + b"\r\n" in response
