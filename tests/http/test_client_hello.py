"""Reading a TLS ClientHello before the handshake (http/client_hello.py), on ClientHellos
that OpenSSL itself writes, whole, cut short, and over a real socket (peeked, so that the
handshake that follows still gets every byte)."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from durable_streams.server.http.client_hello import _Short, parse_client_hello, peek_client_hello


def client_hello(server_name: str | None, alpn: list[str] | None) -> bytes:
    """The first flight of a real TLS client (Python's ssl over memory BIOs)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("name,alpn", [
    ("streams.example.com", ["acme-tls/1"]),
    ("Streams.Example.COM", ["h2", "http/1.1"]),
    ("a.example", None),
    (None, ["http/1.1"]),
])
def test_server_name_and_alpn_are_read(name, alpn) -> None:
    hello = parse_client_hello(client_hello(name, alpn))
    assert hello is not None
    assert hello.server_name == (name.lower() if name else None)
    assert hello.alpn == tuple(alpn or ())


def test_an_incomplete_record_asks_for_more_and_junk_is_not_a_hello() -> None:
    data = client_hello("streams.example.com", ["acme-tls/1"])
    for cut in (0, 3, 5, len(data) // 2, len(data) - 1):
        with pytest.raises(_Short):
            parse_client_hello(data[:cut])
    assert parse_client_hello(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is None
    assert parse_client_hello(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00") is None  # a ServerHello
    garbled = bytearray(data)
    garbled[43] = 0xFF  # session id length far past the end
    assert parse_client_hello(bytes(garbled)) is None


def test_peek_waits_for_a_hello_sent_in_pieces_and_leaves_it_in_the_socket() -> None:
    data = client_hello("streams.example.com", ["acme-tls/1", "http/1.1"])

    async def main() -> None:
        server_side, client_side = socket.socketpair()
        server_side.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            async def send_slowly() -> None:
                for i in range(0, len(data), 100):
                    client_side.send(data[i:i + 100])
                    await asyncio.sleep(0.01)

            sender = loop.create_task(send_slowly())
            hello = await peek_client_hello(server_side, timeout=5)
            await sender
            assert hello is not None and hello.server_name == "streams.example.com"
            assert hello.alpn == ("acme-tls/1", "http/1.1")
            assert server_side.recv(len(data) + 10) == data  # nothing was consumed
            client_side.close()
            assert await peek_client_hello(server_side, timeout=1) is None  # closed: nothing to read
        finally:
            server_side.close()
            client_side.close()

    asyncio.run(main())


def test_peek_gives_up_after_its_timeout() -> None:
    async def main() -> None:
        server_side, client_side = socket.socketpair()
        server_side.setblocking(False)
        try:
            client_side.send(client_hello("x.example", None)[:20])
            started = asyncio.get_running_loop().time()
            assert await peek_client_hello(server_side, timeout=0.3) is None
            assert asyncio.get_running_loop().time() - started < 2
        finally:
            server_side.close()
            client_side.close()

    asyncio.run(main())
