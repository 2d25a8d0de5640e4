"""HTTP/2 over TLS (ALPN h2) in the HTTP layer: an HTTPServer on a real TLS socket, and a
client on the h2 library that shows frames' effects per stream (h2tools.py)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl

import pytest

from durable_streams.server.http import HTTPServer, Response, ServerSettings, StreamResponse

from h2tools import GUARD, H2Client, TLSFiles, write_tls_files
from rawhttp import listening_socket, wait_until


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> TLSFiles:
    return write_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def serve_h2(tls):
    """`await serve_h2(handler, settings, **kwargs)` -> (HTTPServer, port), TLS with ALPN h2 and http/1.1."""
    started: list[HTTPServer] = []
    clients: list[H2Client] = []

    async def start(handler, settings: ServerSettings = ServerSettings(), **kwargs) -> tuple[HTTPServer, int]:
        server = HTTPServer(handler, settings, **kwargs)
        sock = listening_socket()
        await server.listen(sock, tls.server_context(["h2", "http/1.1"]))
        started.append(server)
        return server, sock.getsockname()[1]

    async def connect(port: int, **kwargs) -> H2Client:
        client = await H2Client.connect(port, tls, **kwargs)
        clients.append(client)
        return client

    start.connect = connect  # type: ignore[attr-defined]
    yield start
    for client in clients:
        await client.close()
    for server in started:
        await server.shutdown(0)


async def test_request_and_response_over_h2(serve_h2):
    seen = {}

    async def handler(request):
        seen.update(version=tuple(request.version), method=request.method, path=request.path,
                    query=dict(request.query), host=request.host, url=request.url, secure=request.secure,
                    cookie=request.headers.get("Cookie"), custom=request.headers.get("X-Custom"))
        return Response(text="hello", headers={"Connection": "keep-alive", "Keep-Alive": "timeout=5",
                                               "X-Answer": "42"})

    def hook(request, response):
        response.headers["Server"] = "test"

    server, port = await serve_h2(handler, prepare_hook=hook)
    client = await serve_h2.connect(port)
    answer = await client.request("GET", "/a/b?x=1&y=2", [("x-custom", "v"), ("cookie", "a=1"), ("cookie", "b=2")])
    assert answer.status == 200 and bytes(answer.data) == b"hello"
    assert answer.headers["content-length"] == "5"
    assert answer.headers["x-answer"] == "42" and answer.headers["server"] == "test" and "date" in answer.headers
    # RFC 9113 §8.2.2: connection-specific fields are never sent
    assert "connection" not in answer.headers and "keep-alive" not in answer.headers
    assert seen == {"version": (2, 0), "method": "GET", "path": "/a/b", "query": {"x": "1", "y": "2"},
                    "host": "localhost", "url": "https://localhost/a/b?x=1&y=2", "secure": True,
                    "cookie": "a=1; b=2", "custom": "v"}
    assert server.h2_connections == 1 and server.accepted_connections == 1


async def test_a_client_without_h2_is_served_http11_on_the_same_listener(serve_h2, tls):
    async def handler(request):
        return Response(text=f"HTTP/{request.version.major}.{request.version.minor}")

    server, port = await serve_h2(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client_context(["http/1.1"]),
                                                   server_hostname="localhost")
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), GUARD)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"HTTP/1.1")
    assert server.h2_connections == 0 and server.accepted_connections == 1


async def test_head_and_no_body_statuses_end_the_stream_with_the_head(serve_h2):
    async def handler(request):
        if request.path == "/empty":
            return Response(status=204)
        return Response(text="twelve bytes")

    _, port = await serve_h2(handler)
    client = await serve_h2.connect(port)
    head = await client.request("HEAD", "/")
    assert head.status == 200 and head.data == b"" and head.headers["content-length"] == "12"
    empty = await client.request("GET", "/empty")
    assert empty.status == 204 and empty.data == b"" and "content-length" not in empty.headers


async def test_streamed_response_is_framed_by_data_frames(serve_h2):
    async def handler(request):
        response = StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for n in range(3):
            await response.write(b"event %d\n" % n)
        await response.write_eof()
        return response

    _, port = await serve_h2(handler)
    client = await serve_h2.connect(port)
    answer = await client.request("GET", "/sse")
    assert answer.status == 200 and bytes(answer.data) == b"event 0\nevent 1\nevent 2\n"
    assert "content-length" not in answer.headers and "transfer-encoding" not in answer.headers


async def test_a_big_response_waits_on_the_readers_window(serve_h2):
    """The server sends no more than the client's window; the writer's drain() waits until
    the client reads (acknowledges), and then the whole body arrives intact."""
    body = bytes(range(256)) * (8 << 10)  # 2 MiB
    written = []

    async def handler(request):
        response = StreamResponse()
        await response.prepare(request)
        for start in range(0, len(body), 64 << 10):
            await response.write(body[start:start + (64 << 10)])
            written.append(start)
        await response.write_eof()
        return response

    _, port = await serve_h2(handler)
    client = await serve_h2.connect(port, initial_window=16384, auto_ack=False)
    sid = client.start("GET", "/big")
    state = client.streams[sid]
    await client.until(lambda: len(state.data) == 16384)  # a window's worth, and not one byte more
    await asyncio.sleep(0.05)  # would the server overrun? h2 raises FlowControlError if it did
    assert len(state.data) == 16384 and not state.ended
    assert len(written) <= 3, "the writer must wait while its stream's queue is full"
    while not state.ended:
        client.ack(sid)
        await client.until(lambda: state.unacked > 0 or state.ended)
    assert hashlib.sha256(state.data).digest() == hashlib.sha256(body).digest()


async def test_request_bodies_flow_as_the_handler_reads(serve_h2):
    """A body larger than the stream's window arrives whole (the server hands window back
    as the handler reads); a handler that does not read holds only its own stream."""
    release = asyncio.Event()

    async def handler(request):
        if request.path == "/stall":
            await release.wait()
        data = await request.read()
        return Response(text=hashlib.sha256(data).hexdigest())

    _, port = await serve_h2(handler)
    client = await serve_h2.connect(port)
    stalled = client.start("POST", "/stall", end=False)
    stall_body = asyncio.ensure_future(client.send_body(stalled, b"s" * (1 << 20)))
    await client.until(lambda: client.conn.local_flow_control_window(stalled) == 0)
    body = bytes(range(256)) * 12288  # 3 MiB
    answer = await client.request("POST", "/read", body=body)
    assert answer.status == 200 and bytes(answer.data).decode() == hashlib.sha256(body).hexdigest()
    assert not stall_body.done()
    release.set()
    await asyncio.wait_for(stall_body, GUARD)
    answer = await client.response(stalled)
    assert bytes(answer.data).decode() == hashlib.sha256(b"s" * (1 << 20)).hexdigest()


async def test_a_client_reset_cancels_only_its_handler(serve_h2):
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(request):
        if request.path == "/wait":
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return Response(text="ok")

    server, port = await serve_h2(handler)
    client = await serve_h2.connect(port)
    sid = client.start("GET", "/wait")
    await asyncio.wait_for(started.wait(), GUARD)
    client.reset(sid)
    await asyncio.wait_for(cancelled.wait(), GUARD)
    answer = await client.request("GET", "/next")
    assert answer.status == 200 and bytes(answer.data) == b"ok"
    assert server.open_connections == 1


async def test_request_abort_resets_its_stream_and_spares_the_others(serve_h2):
    async def handler(request):
        if request.path == "/cut":
            response = StreamResponse()
            await response.prepare(request)
            await response.write(b"partial")
            request.abort()
            return response
        return Response(text="fine")

    _, port = await serve_h2(handler)
    client = await serve_h2.connect(port)
    cut = await client.request("GET", "/cut")
    assert cut.reset == 2 and not cut.ended  # INTERNAL_ERROR: the body is incomplete
    fine = await client.request("GET", "/fine")
    assert fine.status == 200 and bytes(fine.data) == b"fine"


async def test_an_unread_body_is_refused_after_the_response(serve_h2):
    async def handler(request):
        return Response(status=413, text="too big")

    _, port = await serve_h2(handler)
    client = await serve_h2.connect(port)
    sid = client.start("POST", "/upload", end=False)
    answer = await client.response(sid)
    assert answer.status == 413
    await client.until(lambda: answer.reset is not None)
    assert answer.reset == 0  # NO_ERROR: stop sending, the answer is complete (RFC 9113 §8.1)
    again = await client.request("GET", "/")
    assert again.status == 413


async def test_shutdown_sends_goaway_and_lets_open_streams_finish(serve_h2):
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(request):
        started.set()
        await release.wait()
        return Response(text="finished")

    server, port = await serve_h2(handler)
    client = await serve_h2.connect(port)
    sid = client.start("GET", "/slow")
    await asyncio.wait_for(started.wait(), GUARD)
    shutdown = asyncio.ensure_future(server.shutdown(GUARD))
    await client.until(lambda: client.goaway is not None)
    assert client.goaway.error_code == 0 and client.goaway.last_stream_id == sid
    assert not client.streams[sid].ended and not shutdown.done()
    release.set()
    answer = await client.response(sid)
    assert answer.status == 200 and bytes(answer.data) == b"finished"
    await asyncio.wait_for(shutdown, GUARD)
    await client.until(lambda: client.eof)  # the server closed it
    assert server.open_connections == 0


async def test_an_idle_connection_gets_goaway_after_the_keepalive_timeout(serve_h2):
    async def handler(request):
        return Response(text="ok")

    server, port = await serve_h2(handler, ServerSettings(keepalive_timeout=0.2))
    client = await serve_h2.connect(port)
    assert (await client.request("GET", "/")).status == 200
    await client.until(lambda: client.eof, GUARD)
    assert client.goaway is not None and client.goaway.error_code == 0
    await wait_until(lambda: server.open_connections == 0)


async def test_header_limits_refuse_the_stream_not_the_connection(serve_h2):
    async def handler(request):
        return Response(text="ok")

    _, port = await serve_h2(handler, ServerSettings(max_header_fields=10, max_line_size=100))
    client = await serve_h2.connect(port)
    many = await client.request("GET", "/", [(f"x-h{n}", "v") for n in range(11)])
    assert many.status == 431
    long_path = await client.request("GET", "/" + "p" * 200)
    assert long_path.status == 414
    fine = await client.request("GET", "/", [(f"x-h{n}", "v") for n in range(9)])
    assert fine.status == 200


async def test_a_protocol_error_ends_the_connection_with_goaway(serve_h2):
    async def handler(request):
        return Response(text="ok")

    server, port = await serve_h2(handler)
    client = await serve_h2.connect(port)
    assert (await client.request("GET", "/")).status == 200
    # A DATA frame on stream 0 is a connection error (RFC 9113 §6.1).
    client.writer.write(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
    await client.until(lambda: client.eof, GUARD)
    assert client.goaway is not None and client.goaway.error_code == 1  # PROTOCOL_ERROR
    await wait_until(lambda: server.open_connections == 0)


async def test_a_slow_body_gets_408(serve_h2):
    async def handler(request):
        await request.read()
        return Response(text="read")

    _, port = await serve_h2(handler, ServerSettings(min_body_rate=1 << 20, body_rate_grace=0.1))
    client = await serve_h2.connect(port)
    sid = client.start("POST", "/", end=False)
    await client.send_body(sid, b"x" * 10, end=False)
    answer = await client.response(sid)
    assert answer.status == 408


async def test_expect_100_continue_gets_an_informational_response(serve_h2):
    async def handler(request):
        return Response(text=str(len(await request.read())))

    _, port = await serve_h2(handler)
    client = await serve_h2.connect(port)
    sid = client.start("POST", "/", [("expect", "100-continue")], end=False)
    await client.until(lambda: client.streams[sid].informational == [100])
    await client.send_body(sid, b"abc")
    answer = await client.response(sid)
    assert answer.status == 200 and bytes(answer.data) == b"3"


async def test_the_connection_cap_applies_to_h2(serve_h2, tls):
    async def handler(request):
        return Response(text="ok")

    server, port = await serve_h2(handler, ServerSettings(max_connections=1))
    client = await serve_h2.connect(port)
    assert (await client.request("GET", "/")).status == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client_context(["h2"]),
                                                   server_hostname="localhost")
    try:
        assert await asyncio.wait_for(reader.read(), GUARD) == b""
    except (ConnectionError, ssl.SSLError):
        pass
    writer.close()
    assert server.refused_connections == 1


async def test_connection_close_in_a_response_ends_the_connection_gracefully(serve_h2):
    """As Go's server does: the field is not sent, a GOAWAY is, and the connection closes
    once its streams are done."""
    async def handler(request):
        return Response(text="bye", headers={"Connection": "close"})

    server, port = await serve_h2(handler)
    client = await serve_h2.connect(port)
    sid = client.start("GET", "/")
    answer = await client.response(sid)
    assert answer.status == 200 and bytes(answer.data) == b"bye" and "connection" not in answer.headers
    await client.until(lambda: client.eof)
    assert client.goaway is not None and client.goaway.error_code == 0 and client.goaway.last_stream_id == sid
    await wait_until(lambda: server.open_connections == 0)


async def test_a_client_that_floods_pings_and_never_reads_is_cut(serve_h2, tls):
    """h2 answers every PING; the answers of a client that never reads must not pile up."""
    import h2.config
    import h2.connection

    async def handler(request):
        return Response(text="ok")

    server, port = await serve_h2(handler)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, ssl=tls.client_context(["h2"]), server_hostname="localhost")
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    writer.write(client.data_to_send())
    for n in range(20000):
        client.ping(n.to_bytes(8, "big"))
    batch = client.data_to_send()
    try:
        for _ in range(40):  # 800,000 PINGs at most, 13.6 MB of answers
            writer.write(batch)
            await asyncio.wait_for(writer.drain(), GUARD)
            if server.open_connections == 0:
                break
    except (ConnectionError, ssl.SSLError):
        pass
    await wait_until(lambda: server.open_connections == 0, GUARD)
    writer.close()


async def test_the_clients_goaway_lets_its_open_streams_finish(serve_h2):
    """A client closing gracefully (Node's session.close()) sends GOAWAY and still reads
    the responses of the streams it opened before."""
    from hyperframe.frame import GoAwayFrame

    started, release = asyncio.Event(), asyncio.Event()

    async def handler(request):
        started.set()
        await release.wait()
        return Response(text="late but whole")

    server, port = await serve_h2(handler)
    client = await serve_h2.connect(port)
    sid = client.start("GET", "/")
    await asyncio.wait_for(started.wait(), GUARD)
    # Written by hand: h2 would close the client's own state machine on sending it.
    client.writer.write(GoAwayFrame(stream_id=0, last_stream_id=0, error_code=0).serialize())
    await asyncio.sleep(0.05)  # the server has read it (if not, the response still must come)
    release.set()
    answer = await client.response(sid)
    assert answer.status == 200 and bytes(answer.data) == b"late but whole"
    await client.until(lambda: client.eof)  # then the server closes the connection
    await wait_until(lambda: server.open_connections == 0)
