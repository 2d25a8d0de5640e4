"""Request properties as a handler sees them, and the response objects."""

from __future__ import annotations

import pytest

from durable_streams.server.http import Response, json_response
from rawhttp import get


async def capture(serve, wire: bytes, inspect):
    """Serve one request, returning what `inspect(request)` (awaited) gave."""
    seen = []

    async def handler(request):
        seen.append(await inspect(request))
        return Response(text="ok")

    served = await serve(handler)
    client = await served.connect()
    await client.send(wire)
    resp = await client.response()
    assert resp.status == 200, resp.body
    assert len(seen) == 1
    return seen[0], served


async def properties(request):
    return {
        "method": request.method, "target": request.target, "version": tuple(request.version),
        "path": request.path, "raw_path": request.raw_path, "query_string": request.query_string,
        "query": list(request.query.items()), "path_qs": request.path_qs, "url": request.url,
        "host": request.host, "remote": request.remote, "scheme": request.scheme, "secure": request.secure,
        "keep_alive": request.keep_alive,
    }


async def test_origin_form_properties(serve):
    p, _ = await capture(serve, get("/a%20b/c?x=1&x=2&y=&z=%41", host="example.test:8080"), properties)
    assert p["method"] == "GET"
    assert p["target"] == "/a%20b/c?x=1&x=2&y=&z=%41"
    assert p["version"] == (1, 1)
    assert p["path"] == "/a b/c"
    assert p["raw_path"] == "/a%20b/c"
    assert p["query_string"] == "x=1&x=2&y=&z=%41"
    assert p["query"] == [("x", "1"), ("x", "2"), ("y", ""), ("z", "A")]
    assert p["path_qs"] == "/a%20b/c?x=1&x=2&y=&z=%41"
    assert p["url"] == "http://example.test:8080/a%20b/c?x=1&x=2&y=&z=%41"
    assert p["host"] == "example.test:8080"
    assert p["remote"] == "127.0.0.1"
    assert (p["scheme"], p["secure"], p["keep_alive"]) == ("http", False, True)


async def test_query_multi_values(serve):
    async def inspect(request):
        return request.query.getall("tag"), request.query.get("one"), request.query.get("absent")

    (tags, one, absent), _ = await capture(serve, get("/s?tag=a&one=1&tag=b+c&tag=d%26e"), inspect)
    assert tags == ["a", "b c", "d&e"]
    assert (one, absent) == ("1", None)


async def test_utf8_percent_decoding(serve):
    p, _ = await capture(serve, get("/caf%C3%A9/%E2%9C%93"), properties)
    assert p["path"] == "/café/✓"
    assert p["raw_path"] == "/caf%C3%A9/%E2%9C%93"


async def test_path_without_escapes_is_unchanged(serve):
    p, _ = await capture(serve, get("/plain/path?"), properties)
    assert (p["path"], p["raw_path"], p["query_string"], p["path_qs"]) == ("/plain/path", "/plain/path", "", "/plain/path")


@pytest.mark.parametrize("target, host, raw_path, query_string", [
    ("http://proxy.test:81/p/q?z=1", "proxy.test:81", "/p/q", "z=1"),
    ("http://proxy.test?z=1", "proxy.test", "/", "z=1"),
    ("http://proxy.test", "proxy.test", "/", ""),
    ("https://user@proxy.test/a%20b", "proxy.test", "/a%20b", ""),
])
async def test_absolute_form_target(serve, target, host, raw_path, query_string):
    # RFC 9112 3.2.2: the target's authority is the host; the Host field is ignored.
    p, _ = await capture(serve, get(target, host="example.test"), properties)
    assert p["target"] == target
    assert (p["raw_path"], p["query_string"]) == (raw_path, query_string)
    assert p["url"] == f"http://{host}{raw_path}" + (f"?{query_string}" if query_string else "")


async def test_asterisk_form(serve):
    p, _ = await capture(serve, get("*", method="OPTIONS"), properties)
    assert (p["method"], p["raw_path"]) == ("OPTIONS", "*")


async def test_host_falls_back_to_the_local_address(serve):
    p, served = await capture(serve, get("/x?q=1", version="1.0", host=""), properties)
    assert p["version"] == (1, 0)
    assert p["keep_alive"] is False
    assert p["host"] == f"127.0.0.1:{served.port}"
    assert p["url"] == f"http://127.0.0.1:{served.port}/x?q=1"


async def test_clone_shares_state_query_headers_and_body(serve):
    async def inspect(request):
        request["user"] = "alice"
        clone = request.clone(raw_path="/other%20path")
        clone["route"] = "r1"
        body = await clone.read()
        return {
            "clone_path": clone.path, "clone_raw": clone.raw_path, "clone_qs": clone.path_qs,
            "clone_query": list(clone.query.items()), "clone_user": clone["user"], "route": request["route"],
            "missing": request.get("missing", "dflt"), "same_headers": clone.headers is request.headers,
            "same_body": clone.content is request.content, "body": body, "original_at_eof": request.content.at_eof(),
            "original_path": request.path, "clone_method": clone.method, "clone_remote": clone.remote,
        }

    wire = b"PUT /orig?a=1&a=2 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\ndata"
    c, _ = await capture(serve, wire, inspect)
    assert c == {
        "clone_path": "/other path", "clone_raw": "/other%20path", "clone_qs": "/other%20path?a=1&a=2",
        "clone_query": [("a", "1"), ("a", "2")], "clone_user": "alice", "route": "r1", "missing": "dflt",
        "same_headers": True, "same_body": True, "body": b"data", "original_at_eof": True,
        "original_path": "/orig", "clone_method": "PUT", "clone_remote": "127.0.0.1",
    }


async def test_state_missing_key_raises(serve):
    async def inspect(request):
        try:
            request["nope"]
        except KeyError:
            return "KeyError"
        return "no error"

    result, _ = await capture(serve, get("/"), inspect)
    assert result == "KeyError"


async def test_content_type_and_json_body(serve):
    async def inspect(request):
        return request.content_type, await request.json()

    wire = b'POST / HTTP/1.1\r\nHost: t\r\nContent-Type: Application/JSON ; charset=utf-8\r\nContent-Length: 10\r\n\r\n{"a": [1]}'
    (ctype, data), _ = await capture(serve, wire, inspect)
    assert ctype == "application/json"
    assert data == {"a": [1]}


async def test_default_content_type(serve):
    async def inspect(request):
        return request.content_type

    ctype, _ = await capture(serve, get("/"), inspect)
    assert ctype == "application/octet-stream"


async def test_empty_body_reads_as_empty(serve):
    async def inspect(request):
        return await request.read(), request.content.at_eof(), request.body_exists

    result, _ = await capture(serve, get("/"), inspect)
    assert result == (b"", True, False)


def test_response_text_sets_a_utf8_content_type():
    resp = Response(text="héllo")
    assert resp.body == "héllo".encode()
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.status == 200 and resp.keep_alive


def test_response_text_keeps_an_explicit_content_type():
    assert Response(text="x", headers={"content-type": "text/csv"}).headers.getall("Content-Type") == ["text/csv"]
    assert Response(text="x", content_type="text/html").headers["Content-Type"] == "text/html"


def test_json_response():
    resp = json_response({"k": [1, 2]}, status=201, headers={"X-A": "1"})
    assert resp.status == 201
    assert resp.body == b'{"k": [1, 2]}'
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["X-A"] == "1"
