"""Routing over real sockets: matchers, handle/route/handle_path, header, respond,
request_body, hosts and listeners. `durable_streams` is replaced by an echo handler
whose answer names the block that handled the request (its data_dir is the label)."""

from __future__ import annotations

import aiohttp
import pytest

from .helpers import free_port, port_of, serve

pytestmark = pytest.mark.asyncio

BASE = "{\n\tadmin off\n}\n"


async def fetch(port: int, path: str, method: str = "GET", host: str = "127.0.0.1", **kw):
    headers = kw.pop("headers", {})
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"http://127.0.0.1:{port}{path}", headers={"Host": host, **headers}, **kw) as r:
            return r.status, r.headers, await r.read()


def ds(label: str, matcher: str = "") -> str:
    return f"durable_streams {matcher} {{\n\t\t\tdata_dir {label}\n\t\t}}".replace("  ", " ")


async def test_route_handle_and_fallback() -> None:
    text = BASE + (
        ":0 {\n\tbind 127.0.0.1\n"
        f"\troute /v1/stream/* {{\n\t\t{ds('streams')}\n\t}}\n"
        "\trespond \"nothing here\" 404\n}\n"
    )
    async with serve(text) as app:
        port = port_of(app)
        status, headers, body = await fetch(port, "/v1/stream/a/b", "POST")
        assert status == 200 and b'"label": "streams"' in body and b'"path": "/v1/stream/a/b"' in body
        status, headers, body = await fetch(port, "/v1/other")
        assert (status, body) == (404, b"nothing here")
        assert headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_handle_is_first_match_only_and_most_specific_first() -> None:
    text = BASE + (
        ":0 {\n\tbind 127.0.0.1\n"
        "\thandle /a/* {\n\t\trespond a\n\t}\n"
        "\thandle /a/b/* {\n\t\trespond ab\n\t}\n"
        "\thandle {\n\t\trespond other\n\t}\n}\n"
    )
    async with serve(text) as app:
        port = port_of(app)
        assert (await fetch(port, "/a/b/c"))[2] == b"ab"
        assert (await fetch(port, "/a/x"))[2] == b"a"
        assert (await fetch(port, "/zzz"))[2] == b"other"


async def test_handle_path_strips_prefix_for_the_handler() -> None:
    text = BASE + (
        ":0 {\n\tbind 127.0.0.1\n"
        f"\thandle_path /api/* {{\n\t\troute {{\n\t\t\t{ds('api')}\n\t\t}}\n\t}}\n}}\n"
    )
    async with serve(text) as app:
        status, _, body = await fetch(port_of(app), "/api/v1/stream/x?offset=-1")
        assert status == 200 and b'"path": "/v1/stream/x"' in body and b'"label": "api"' in body


async def test_route_keeps_file_order_and_header_reaches_terminal_handler() -> None:
    text = BASE + (
        ":0 {\n\tbind 127.0.0.1\n"
        "\theader X-Site site\n"
        f"\troute {{\n\t\theader X-Route first\n\t\t{ds('r')}\n\t\theader X-Never never\n\t}}\n}}\n"
    )
    async with serve(text) as app:
        status, headers, _ = await fetch(port_of(app), "/x")
        assert status == 200
        assert headers["X-Site"] == "site" and headers["X-Route"] == "first"
        assert "X-Never" not in headers  # after a terminal handler: never reached


async def test_named_matchers_select_handlers() -> None:
    text = BASE + (
        ":0 {\n\tbind 127.0.0.1\n"
        "\t@unauthorized not header Authorization \"Bearer secret\"\n"
        "\t@writes method POST PUT DELETE\n"
        f"\troute /v1/stream/* {{\n\t\trespond @unauthorized 401\n\t\trespond @writes \"read-only\" 405\n\t\t{ds('s')}\n\t}}\n}}\n"
    )
    async with serve(text) as app:
        port = port_of(app)
        assert (await fetch(port, "/v1/stream/a"))[0] == 401
        auth = {"Authorization": "Bearer secret"}
        assert (await fetch(port, "/v1/stream/a", "PUT", headers=auth))[:3:2] == (405, b"read-only")
        status, _, body = await fetch(port, "/v1/stream/a", headers=auth)
        assert status == 200 and b'"label": "s"' in body


async def test_header_operations_on_responses() -> None:
    text = BASE + (
        ":0 {\n\tbind 127.0.0.1\n"
        "\theader {\n\t\t>Content-Type text/x-forced\n\t\t-Server\n\t\t?Cache-Control no-store\n\t\t+Vary Origin\n\t}\n"
        "\trespond \"{\\\"a\\\": 1}\"\n}\n"
    )
    async with serve(text) as app:
        status, headers, body = await fetch(port_of(app), "/")
        assert status == 200 and body == b'{"a": 1}'
        assert headers["Content-Type"] == "text/x-forced"  # deferred set wins over the handler
        assert "Server" not in headers
        assert headers["Cache-Control"] == "no-store" and headers["Vary"] == "Origin"


async def test_non_deferred_header_yields_to_handler_and_respond_sniffs_json() -> None:
    text = BASE + ":0 {\n\tbind 127.0.0.1\n\theader Content-Type text/plain\n\trespond /j \"[1, 2]\"\n\trespond \"{path}\" 202\n}\n"
    async with serve(text) as app:
        port = port_of(app)
        status, headers, body = await fetch(port, "/j")
        # Caddy: a header set before the handler counts as already set, so no sniffing
        assert headers["Content-Type"] == "text/plain" and body == b"[1, 2]"
        status, headers, body = await fetch(port, "/p/q")
        assert (status, body) == (202, b"/p/q")


async def test_respond_json_content_type_without_header() -> None:
    text = BASE + ":0 {\n\tbind 127.0.0.1\n\trespond \"[1, 2]\"\n}\n"
    async with serve(text) as app:
        _, headers, _ = await fetch(port_of(app), "/")
        assert headers["Content-Type"] == "application/json"


async def test_request_body_limit() -> None:
    text = BASE + (
        ":0 {\n\tbind 127.0.0.1\n"
        f"\troute {{\n\t\trequest_body {{\n\t\t\tmax_size 10\n\t\t}}\n\t\t{ds('s')}\n\t}}\n}}\n"
    )
    async with serve(text) as app:
        port = port_of(app)
        status, _, body = await fetch(port, "/s", "POST", data=b"x" * 5)
        assert status == 200 and b'"max_body_size": 10' in body
        status, _, _ = await fetch(port, "/s", "POST", data=b"x" * 11)
        assert status == 413


async def test_host_matching_between_sites_on_one_port() -> None:
    port = free_port()
    text = BASE + (
        f"http://a.test:{port} {{\n\tbind 127.0.0.1\n\trespond a\n}}\n"
        f"http://b.test:{port}, http://*.wild.test:{port} {{\n\tbind 127.0.0.1\n\trespond b\n}}\n"
        f":{port} {{\n\tbind 127.0.0.1\n\trespond any\n}}\n"
    )
    async with serve(text):
        assert (await fetch(port, "/", host="a.test"))[2] == b"a"
        assert (await fetch(port, "/", host=f"B.TEST:{port}"))[2] == b"b"
        assert (await fetch(port, "/", host="x.wild.test"))[2] == b"b"
        assert (await fetch(port, "/", host="other.test"))[2] == b"any"


async def test_unmatched_request_gets_empty_200() -> None:
    port = free_port()
    text = BASE + f"http://a.test:{port} {{\n\tbind 127.0.0.1\n\trespond a\n}}\n"
    async with serve(text):
        status, _, body = await fetch(port, "/", host="elsewhere.test")
        assert (status, body) == (200, b"")


async def test_multiple_listeners() -> None:
    p1, p2 = free_port(), free_port()
    text = BASE + (
        f":{p1} {{\n\tbind 127.0.0.1\n\troute {{\n\t\t{ds('one')}\n\t}}\n}}\n"
        f":{p2} {{\n\tbind 127.0.0.1\n\troute {{\n\t\t{ds('two')}\n\t}}\n}}\n"
    )
    async with serve(text) as app:
        assert len(app.listeners) == 2
        assert b'"label": "one"' in (await fetch(p1, "/x"))[2]
        assert b'"label": "two"' in (await fetch(p2, "/x"))[2]


async def test_one_site_on_two_ports_shares_one_handler() -> None:
    p1, p2 = free_port(), free_port()
    text = BASE + f":{p1}, :{p2} {{\n\tbind 127.0.0.1\n\troute {{\n\t\t{ds('shared')}\n\t}}\n}}\n"
    async with serve(text) as app:
        assert len(app.compiler.lifecycle) == 1
        assert b'"label": "shared"' in (await fetch(p1, "/x"))[2]
        assert b'"label": "shared"' in (await fetch(p2, "/x"))[2]


async def test_abort_closes_the_connection() -> None:
    text = BASE + ":0 {\n\tbind 127.0.0.1\n\tabort /secret\n\trespond ok\n}\n"
    async with serve(text) as app:
        with pytest.raises(aiohttp.ClientError):
            await fetch(port_of(app), "/secret")
        assert (await fetch(port_of(app), "/open"))[2] == b"ok"


async def test_redir() -> None:
    text = BASE + ":0 {\n\tbind 127.0.0.1\n\tredir /old /new{uri} 308\n}\n"
    async with serve(text) as app:
        status, headers, _ = await fetch(port_of(app), "/old?x=1", allow_redirects=False)
        assert status == 308 and headers["Location"] == "/new/old?x=1"


async def test_client_ip_through_trusted_proxy() -> None:
    text = (
        "{\n\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}\n}\n"
        ":0 {\n\tbind 127.0.0.1\n\t@office client_ip 203.0.113.0/24\n\trespond @office office\n\trespond other\n}\n"
    )
    async with serve(text) as app:
        port = port_of(app)
        assert (await fetch(port, "/", headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}))[2] == b"office"
        assert (await fetch(port, "/"))[2] == b"other"


async def test_handlers_start_before_listening_and_stop_after() -> None:
    text = BASE + f":0 {{\n\tbind 127.0.0.1\n\troute {{\n\t\t{ds('s')}\n\t}}\n}}\n"
    async with serve(text) as app:
        (handler,) = app.compiler.lifecycle
        assert handler.started and not handler.stopped
    assert handler.stopped
    assert app.bound_addresses == []


def _self_signed(tmp_path, name: str) -> tuple[str, str]:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl not available to make a test certificate")
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


async def test_tls_site_with_certificate_files(tmp_path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path, "streams.test")
    port = free_port()
    text = (
        "{\n\tauto_https disable_redirects\n}\n"
        f"streams.test:{port} {{\n\tbind 127.0.0.1\n\ttls {cert} {key}\n\troute {{\n\t\t{ds('tls')}\n\t}}\n}}\n"
    )
    ctx = ssl.create_default_context(cafile=cert)
    async with serve(text):
        conn = aiohttp.TCPConnector(ssl=ctx, resolver=_StaticResolver(port))
        async with aiohttp.ClientSession(connector=conn) as session:
            async with session.get(f"https://streams.test:{port}/v1/stream/x") as r:
                assert r.status == 200
                assert b'"label": "tls"' in await r.read()
        # plain HTTP on the TLS port is not served
        with pytest.raises(aiohttp.ClientError):
            await fetch(port, "/v1/stream/x")


async def test_https_redirect_server_runs_although_adapt_omits_it(tmp_path) -> None:
    from durable_streams.server.config import load_config

    cert, key = _self_signed(tmp_path, "streams.test")
    port, http_port = free_port(), free_port()
    text = (
        f"{{\n\tdefault_bind 127.0.0.1\n\thttp_port {http_port}\n}}\n"
        f"streams.test:{port} {{\n\ttls {cert} {key}\n\trespond hi\n}}\n"
    )
    # like `caddy adapt`: the redirect server is added at run time, not in the JSON
    assert list(load_config(text).to_json()["apps"]["http"]["servers"]) == ["srv0"]
    async with serve(text) as app:
        assert port_of(app, "remaining_auto_https_redirects") == http_port
        status, headers, _ = await fetch(http_port, "/v1/x?y=1", host="streams.test", allow_redirects=False)
        assert status == 308 and headers["Location"] == f"https://streams.test:{port}/v1/x?y=1"


class _StaticResolver(aiohttp.abc.AbstractResolver):
    """Resolve every name to 127.0.0.1 (so SNI/Host carry the site name)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(self, host, port=0, family=0):
        import socket

        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        pass


async def test_error_directive_and_respond_close() -> None:
    text = BASE + ":0 {\n\tbind 127.0.0.1\n\terror /forbidden 403\n\trespond /bye bye {\n\t\tclose\n\t}\n}\n"
    async with serve(text) as app:
        status, _, body = await fetch(port_of(app), "/forbidden")
        assert (status, body) == (403, b"")
        status, headers, body = await fetch(port_of(app), "/bye")
        assert (status, body, headers["Connection"]) == (200, b"bye", "close")


async def test_header_replace_and_wildcard_delete() -> None:
    text = BASE + (
        ":0 {\n\tbind 127.0.0.1\n"
        "\theader {\n\t\tX-Note \"hello world\"\n\t\t>X-Note world there\n\t\t-X-Drop-*\n\t}\n"
        f"\troute {{\n\t\theader X-Drop-Me 1\n\t\theader X-Keep 1\n\t\t{ds('s')}\n\t}}\n}}\n"
    )
    async with serve(text) as app:
        _, headers, _ = await fetch(port_of(app), "/x")
        assert headers["X-Note"] == "hello there"
        assert "X-Drop-Me" not in headers and headers["X-Keep"] == "1"


async def test_read_header_timeout_closes_slow_header_senders() -> None:
    import asyncio

    text = "{\n\tadmin off\n\tservers {\n\t\ttimeouts {\n\t\t\tread_header 1s\n\t\t}\n\t}\n}\n:0 {\n\tbind 127.0.0.1\n\trespond ok\n}\n"
    async with serve(text) as app:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(app))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        await writer.drain()
        # the server gives up with 408 and closes; the generous bound only prevents a hang
        answer = await asyncio.wait_for(reader.read(), timeout=30)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in answer
        writer.close()


async def test_read_body_timeout_closes_slow_uploads() -> None:
    import asyncio

    text = (
        "{\n\tadmin off\n\tservers {\n\t\ttimeouts {\n\t\t\tread_body 1s\n\t\t}\n\t}\n}\n"
        f":0 {{\n\tbind 127.0.0.1\n\troute {{\n\t\t{ds('s')}\n\t}}\n}}\n"
    )
    async with serve(text) as app:
        port = port_of(app)
        # a complete body is read well within the limit
        status, _, body = await fetch(port, "/s", "POST", data=b"x" * 10)
        assert status == 200 and b'"received": 10' in body
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        # the rest never comes: the connection is closed without an answer
        assert await asyncio.wait_for(reader.read(), timeout=30) == b""
        writer.close()
