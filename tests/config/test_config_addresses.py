"""Site address parsing and the listener each key maps to."""

from __future__ import annotations

import json

import pytest

from durable_streams.server.config import load_config
from .oracle import caddy_adapt
from durable_streams.server.config.addresses import (
    AddressError,
    ListenAddress,
    listener_port,
    parse_address,
    parse_bind_host,
)


@pytest.mark.parametrize(
    "text,scheme,host,port,path",
    [
        (":4437", "", "", "4437", ""),
        ("localhost", "", "localhost", "", ""),
        ("Example.COM:8080", "", "example.com", "8080", ""),
        ("http://example.com", "http", "example.com", "", ""),
        ("https://example.com/api", "https", "example.com", "", "/api"),
        ("[::1]:4437", "", "::1", "4437", ""),
        ("127.0.0.1", "", "127.0.0.1", "", ""),
        ("*.example.com", "", "*.example.com", "", ""),
        ("{env.HOST}:80", "", "{env.HOST}", "80", ""),
        ("http://", "http", "", "", ""),
    ],
)
def test_parse_address(text, scheme, host, port, path) -> None:
    addr = parse_address(text)
    assert (addr.scheme, addr.host, addr.port, addr.path) == (scheme, host, port, path)


@pytest.mark.parametrize(
    "text,message",
    [
        (":http", "invalid port 'http': strconv.Atoi: parsing \"http\": invalid syntax"),
        (":65536", "port 65536 is out of range"),
    ],
)
def test_parse_address_errors(text, message) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "text,port",
    [(":4437", 4437), ("http://x", 80), ("x", 443), ("https://x", 443), ("http://x:8080", 8080)],
)
def test_listener_port_defaults(text, port) -> None:
    assert listener_port(parse_address(text), 80, 443) == port


def test_listener_port_follows_http_port_options() -> None:
    assert listener_port(parse_address("http://x"), 8080, 8443) == 8080
    assert listener_port(parse_address("x"), 8080, 8443) == 8443
    with pytest.raises(AddressError):
        listener_port(parse_address("http://x:8443"), 8080, 8443)


def test_bind_hosts() -> None:
    assert parse_bind_host("127.0.0.1", 80) == ListenAddress("tcp", "127.0.0.1", 80)
    assert str(parse_bind_host("tcp6/::1", 80)) == "tcp6/[::1]:80"
    assert str(parse_bind_host("unix//run/ds.sock", 0)) == "unix//run/ds.sock"
    with pytest.raises(AddressError):
        parse_bind_host("udp/1.2.3.4", 80)


def _listens(text: str) -> list[list[str]]:
    return [[str(a) for a in s.listen] for s in load_config(text).servers]


def test_sites_sharing_a_port_share_a_server() -> None:
    text = "http://a.test:8080 {\n\trespond a\n}\nhttp://b.test:8080 {\n\trespond b\n}\n:9090 {\n\trespond c\n}\n"
    assert _listens(text) == [[":8080"], [":9090"]]


def test_several_keys_per_block_and_bind() -> None:
    text = ":8080, :8081 {\n\tbind 127.0.0.1 ::1\n\trespond hi\n}\n"
    assert _listens(text) == [["127.0.0.1:8080", "[::1]:8080"], ["127.0.0.1:8081", "[::1]:8081"]]


def test_default_bind_applies_without_bind() -> None:
    text = "{\n\tdefault_bind 127.0.0.1\n}\n:8080 {\n}\n:8081 {\n\tbind 0.0.0.0\n}\n"
    assert _listens(text) == [["127.0.0.1:8080"], ["0.0.0.0:8081"]]


def test_http_port_option_moves_http_sites() -> None:
    config = load_config("{\n\thttp_port 8080\n}\nhttp://example.test {\n\trespond hi\n}\n")
    assert [str(a) for a in config.servers[0].listen] == [":8080"]


LISTEN_CASES = [
    ":4437 {\n\trespond hi\n}\n",
    ":8080, :8081 {\n\tbind 127.0.0.1 ::1\n\trespond hi\n}\n",
    "http://a.test:8080, http://b.test:8080 {\n\trespond hi\n}\n:9090 {\n\trespond x\n}\n",
    "{\n\thttp_port 8080\n\tdefault_bind 127.0.0.1\n}\nhttp://a.test {\n\trespond hi\n}\nhttp://b.test {\n\trespond b\n}\n",
    ":8080 {\n\trespond a\n}\nhttp://a.test:8080 {\n\trespond b\n}\n",
]


@pytest.mark.parametrize("text", LISTEN_CASES)
def test_listen_addresses_match_real_caddy(text: str, tmp_path) -> None:
    accepted, out = caddy_adapt(text, tmp_path)
    assert accepted, out
    theirs = sorted(sorted(s["listen"]) for s in json.loads(out)["apps"]["http"]["servers"].values())
    assert sorted(sorted(x) for x in _listens(text)) == theirs
