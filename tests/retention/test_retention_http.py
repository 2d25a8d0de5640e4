"""Retention over HTTP, against real server processes on the memory, file and PostgreSQL
stores: 410 Gone (with Stream-Earliest-Offset) below the floor in every read mode and
before any body or event, `offset=-1` from the floor, the HEAD header, JSON streams a
valid array from the floor, forks pinning their source, max_age, the first matching
pattern winning, unmatched streams and servers without retention never trimmed, and
the official Python client's RetentionGoneError."""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from durable_streams.server.engine.offsets import format_offset, parse_position

from retention_servers import STORES, Server, client, retention_block, serving

EARLIEST = "Stream-Earliest-Offset"
NEXT = "Stream-Next-Offset"
BINARY = "application/octet-stream"
TEXT = "text/plain"
WAIT = 10.0  # longest wait for a background retention pass (a guard, not a benchmark)
MAX_SIZE = 1024
PIECE = 100

RULES = [
    # first matching rule wins: /size/roomy/* is never held to the 1 KiB of /size/**
    retention_block("/v1/stream/size/roomy/*", max_size="1MiB"),
    retention_block("/v1/stream/size/**", max_size="1KiB"),
    retention_block("/v1/stream/age/*", max_age="1s"),
]
_names = itertools.count()


def new(prefix: str) -> str:
    return f"{prefix}/s{next(_names)}-{time.monotonic_ns() % 10**6}"


@pytest.fixture(scope="module", params=STORES)
def server(request, tmp_path_factory, make_dsn):
    store = request.param
    dsn = make_dsn() if store == "postgres" else None
    with serving(Server(tmp_path_factory.mktemp(f"ret-{store}"), store, RULES, dsn=dsn)) as srv:
        yield srv


@pytest.fixture(scope="module")
def http():
    with client() as c:
        yield c


def create(c: httpx.Client, url: str, content_type: str = BINARY, headers: dict | None = None) -> None:
    r = c.put(url, headers={"Content-Type": content_type, **(headers or {})})
    assert r.status_code == 201, (r.status_code, r.text)


def fill(c: httpx.Client, url: str, count: int, size: int = PIECE, tag: str = "",
         content_type: str = BINARY) -> bytes:
    data = b""
    for i in range(count):
        piece = (b"%s%04d:" % (tag.encode(), i)).ljust(size, b".")
        r = c.post(url, content=piece, headers={"Content-Type": content_type})
        assert r.status_code == 204, (r.status_code, r.text)
        data += piece
    return data


def head(c: httpx.Client, url: str) -> httpx.Response:
    r = c.head(url)
    assert r.status_code == 200, r.status_code
    return r


def floor_of(c: httpx.Client, url: str) -> int:
    value = head(c, url).headers.get(EARLIEST)
    return 0 if value is None else parse_position(value)


def wait_floor(c: httpx.Client, url: str, at_least: int = 1, bound: int = MAX_SIZE) -> int:
    """The floor once it is at `at_least` or above and at most `bound` bytes remain: the
    pass after the last append has run (passes may lag behind appends), so the floor
    holds still until the stream grows again."""
    deadline = time.monotonic() + WAIT
    while True:
        r = head(c, url)
        floor = parse_position(r.headers.get(EARLIEST, format_offset(0)))
        if floor >= at_least and parse_position(r.headers[NEXT]) - floor <= bound:
            return floor
        assert time.monotonic() < deadline, f"the floor of {url} stayed at {floor}"
        time.sleep(0.05)


def trimmed_stream(c: httpx.Client, server: Server) -> tuple[str, bytes, int]:
    """A text stream (ASCII, no newlines) of 30 appends of 100 bytes under a 1 KiB bound,
    once trimmed."""
    url = server.url(new("size"))
    create(c, url, TEXT)
    data = fill(c, url, 30, content_type=TEXT)
    return url, data, wait_floor(c, url)


def assert_gone(r: httpx.Response, floor: int) -> None:
    assert r.status_code == 410, (r.status_code, r.headers, r.content[:200])
    assert r.headers.get(EARLIEST) == format_offset(floor)
    assert "text/event-stream" not in r.headers.get("Content-Type", "")


def settle(c: httpx.Client, server: Server) -> None:
    """Wait until a retention pass after everything sent so far has run: a fresh stream
    under the 1 KiB bound, filled now, is trimmed by the pass after its appends; one
    more tick covers anything that pass saw together with it."""
    trimmed_stream(c, server)
    time.sleep(0.3)


# ------------------------------------------------------------------ reads


def test_reads_below_the_floor_are_gone_in_every_mode(server, http):
    url, data, floor = trimmed_stream(http, server)
    tail = len(data)
    # whole appends, at most max_size kept (down to ~7/8 of it, less one append)
    assert floor % PIECE == 0 and MAX_SIZE * 7 // 8 - PIECE <= tail - floor <= MAX_SIZE
    for below in (0, floor - PIECE, floor - 1):
        offset = format_offset(below)
        assert_gone(http.get(url, params={"offset": offset}), floor)
        started = time.monotonic()
        assert_gone(http.get(url, params={"offset": offset, "live": "long-poll"}), floor)
        assert time.monotonic() - started < 0.9  # answered at once, not after the poll timeout
        with http.stream("GET", url, params={"offset": offset, "live": "sse"}) as r:
            body = r.read()
            assert_gone(r, floor)
            assert b"event:" not in body and b"data:" not in body
    # at the floor itself: served
    r = http.get(url, params={"offset": format_offset(floor)})
    assert r.status_code == 200 and r.content == data[floor:]


def test_offset_minus_one_reads_from_the_floor(server, http):
    url, data, floor = trimmed_stream(http, server)
    tail = len(data)
    r = http.get(url, params={"offset": "-1"})
    assert r.status_code == 200 and r.content == data[floor:]
    assert r.headers[NEXT] == format_offset(tail)
    assert r.headers.get("Stream-Up-To-Date") == "true"
    etag = r.headers["ETag"]
    # the same range read from the floor's own offset: the same ETag; a revalidation is a 304
    assert http.get(url, params={"offset": format_offset(floor)}).headers["ETag"] == etag
    again = http.get(url, params={"offset": "-1"}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers[NEXT] == format_offset(tail)
    # no offset at all: also from the floor
    assert http.get(url).content == data[floor:]
    # long-poll from -1: the retained data at once
    r = http.get(url, params={"offset": "-1", "live": "long-poll"})
    assert r.status_code == 200 and r.content == data[floor:]
    assert r.headers[NEXT] == format_offset(tail)
    # SSE from -1: the data events before the first control event are the retained data
    with http.stream("GET", url, params={"offset": "-1", "live": "sse"}) as r:
        assert r.status_code == 200
        received, event = "", None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                if event == "control":
                    break
            elif line.startswith("data:") and event == "data":
                received += line[6:] if line.startswith("data: ") else line[5:]
        assert received.encode() == data[floor:]
    # appends go on from the tail as usual
    more = fill(http, url, 1, tag="m", content_type=TEXT)
    r = http.get(url, params={"offset": format_offset(tail)})
    assert r.content == more


def test_head_carries_the_earliest_offset_once_the_floor_moved(server, http):
    url = server.url(new("size"))
    create(http, url)
    fill(http, url, 2)
    settle(http, server)
    assert EARLIEST not in head(http, url).headers  # under the bound: floor 0, no header
    data = fill(http, url, 20, tag="b")
    floor = wait_floor(http, url)
    r = head(http, url)
    assert r.headers[EARLIEST] == format_offset(floor)
    assert r.headers[NEXT] == format_offset(2 * PIECE + len(data))


def test_json_stream_is_a_valid_array_from_the_floor(server, http):
    url = server.url(new("size"))
    create(http, url, "application/json")
    for i in range(40):
        r = http.post(url, content=json.dumps({"n": i, "pad": "x" * 40}),
                      headers={"Content-Type": "application/json"})
        assert r.status_code == 204
    floor = wait_floor(http, url)
    for params in ({"offset": "-1"}, {"offset": format_offset(floor)}):
        r = http.get(url, params=params)
        assert r.status_code == 200
        items = r.json()
        assert isinstance(items, list) and 10 <= len(items) < 40
        assert [m["n"] for m in items] == list(range(40 - len(items), 40))
    assert_gone(http.get(url, params={"offset": format_offset(floor - 1)}), floor)


# ------------------------------------------------------------------ forks


def test_a_fork_pins_its_source(server, http):
    src = server.url(new("size"))
    src_path = src.split(server.base, 1)[1]
    create(http, src)
    data = fill(http, src, 5)
    fork = server.url(new("keep"))  # a fork no rule trims
    create(http, fork, headers={"Stream-Forked-From": src_path, "Stream-Fork-Offset": format_offset(300)})
    own = fill(http, fork, 2, tag="f")
    # 3000 bytes in one append, then 10 small ones: 4000 bytes, far over the 1 KiB bound,
    # but every floor the rule wants is past the fork's base (300)
    data += fill(http, src, 1, size=3000, tag="big")
    data += fill(http, src, 10, tag="s")
    settle(http, server)
    assert floor_of(http, src) == 0  # [0, 300) is still the fork's
    assert floor_of(http, fork) == 0
    for params in ({"offset": "-1"}, {"offset": format_offset(0)}):
        r = http.get(fork, params=params)
        assert r.status_code == 200 and r.content == data[:300] + own
    # the fork gone, the next pass trims the source
    assert http.delete(fork).status_code == 204
    data += fill(http, src, 1, tag="t")
    floor = wait_floor(http, src, at_least=301)
    assert len(data) - floor <= MAX_SIZE
    assert_gone(http.get(src, params={"offset": format_offset(0)}), floor)
    assert http.get(src, params={"offset": "-1"}).content == data[floor:]


def test_a_fork_never_reads_its_source_below_the_floor(server, http):
    src, data, floor = trimmed_stream(http, server)
    src_path = src.split(server.base, 1)[1]
    # forking below the source's floor: those bytes are gone
    below = server.url(new("keep"))
    r = http.put(below, headers={"Content-Type": TEXT, "Stream-Forked-From": src_path,
                                 "Stream-Fork-Offset": format_offset(floor - PIECE)})
    assert_gone(r, floor)
    assert http.head(below).status_code == 404
    # forking at the floor: the fork's reads start at the source's floor
    at_floor = server.url(new("keep"))
    create(http, at_floor, TEXT, {"Stream-Forked-From": src_path, "Stream-Fork-Offset": format_offset(floor)})
    assert head(http, at_floor).headers.get(EARLIEST) == format_offset(floor)
    r = http.get(at_floor, params={"offset": "-1"})
    assert r.status_code == 200 and r.content == b"" and r.headers[NEXT] == format_offset(floor)
    own = fill(http, at_floor, 1, tag="f", content_type=TEXT)
    assert http.get(at_floor, params={"offset": "-1"}).content == own
    assert_gone(http.get(at_floor, params={"offset": format_offset(0)}), floor)
    # forking above the floor: the source's floor may still rise to the fork's base, and
    # the fork's reads follow it (never bytes the source no longer holds)
    base = len(data)
    fork = server.url(new("keep"))
    create(http, fork, TEXT, {"Stream-Forked-From": src_path, "Stream-Fork-Offset": format_offset(base)})
    data += fill(http, src, 30, tag="s", content_type=TEXT)
    settle(http, server)
    src_floor = floor_of(http, src)
    assert floor <= src_floor <= base
    assert floor_of(http, fork) == src_floor
    r = http.get(fork, params={"offset": "-1"})
    assert r.status_code == 200 and r.content == data[src_floor:base]
    if src_floor > floor:
        assert_gone(http.get(fork, params={"offset": format_offset(floor)}), src_floor)


def test_a_json_fork_at_the_floor(server, http):
    src = server.url(new("size"))
    create(http, src, "application/json")
    for i in range(40):
        assert http.post(src, content=json.dumps({"n": i, "pad": "x" * 40}),
                         headers={"Content-Type": "application/json"}).status_code == 204
    floor = wait_floor(http, src)
    kept = http.get(src, params={"offset": "-1"}).json()
    fork = server.url(new("keep"))
    # the floor is a message boundary, though the byte before it is gone
    create(http, fork, "application/json", {"Stream-Forked-From": src.split(server.base, 1)[1],
                                            "Stream-Fork-Offset": format_offset(floor)})
    assert http.post(fork, content=json.dumps({"n": "own"}),
                     headers={"Content-Type": "application/json"}).status_code == 204
    assert http.get(fork, params={"offset": "-1"}).json() == [{"n": "own"}]
    r = http.put(server.url(new("keep")), headers={"Content-Type": "application/json",
                                                   "Stream-Forked-From": src.split(server.base, 1)[1],
                                                   "Stream-Fork-Offset": format_offset(floor + 1)})
    assert r.status_code == 400  # not a message boundary (as without retention)
    assert kept[-1]["n"] == 39


# ------------------------------------------------------------------ rules


def test_max_age_drops_old_data_and_never_early(server, http):
    url = server.url(new("age"))
    create(http, url)
    acked = time.monotonic()
    data = fill(http, url, 3)
    assert floor_of(http, url) == 0  # younger than max_age 1s: kept
    assert http.get(url, params={"offset": format_offset(0)}).content == data
    assert time.monotonic() - acked < 0.9  # (so the checks above came before it was due)
    floor = wait_floor(http, url, at_least=len(data))  # after 1 s (plus a mark interval and a tick)
    assert time.monotonic() - acked >= 1.0  # never early
    assert floor == len(data)
    assert_gone(http.get(url, params={"offset": format_offset(0)}), floor)
    r = http.get(url, params={"offset": "-1"})
    assert r.status_code == 200 and r.content == b"" and r.headers[NEXT] == format_offset(floor)


def test_first_matching_rule_wins_and_unmatched_streams_are_kept(server, http):
    roomy = server.url(new("size/roomy"))  # matches /size/roomy/* (1 MiB) before /size/** (1 KiB)
    other = server.url(new("keep"))  # matches no rule
    create(http, roomy)
    create(http, other)
    roomy_data = fill(http, roomy, 30)
    other_data = fill(http, other, 30)
    settle(http, server)
    for url, data in ((roomy, roomy_data), (other, other_data)):
        assert EARLIEST not in head(http, url).headers
        assert http.get(url, params={"offset": format_offset(0)}).content == data


def test_a_server_without_retention_keeps_everything(tmp_path, make_dsn):
    """One server per store, filled together, then one wait past a retention tick."""
    servers = []
    try:
        for store in STORES:
            try:
                dsn = make_dsn() if store == "postgres" else None
            except pytest.skip.Exception:
                continue  # PostgreSQL unavailable here: the other stores still count
            servers.append(Server(tmp_path, store, None, dsn=dsn, name=store).start())
        with client() as http:
            written = []
            for srv in servers:
                url = srv.url("size/a")  # would match the rules above: there are none here
                create(http, url)
                written.append((url, fill(http, url, 30)))
            time.sleep(1.2)  # past a retention tick, had there been a retention task
            for url, data in written:
                assert EARLIEST not in head(http, url).headers
                assert http.get(url, params={"offset": format_offset(0)}).content == data
    finally:
        for srv in servers:
            srv.stop()
    for srv in servers:
        assert not srv.errors(), srv.errors()


# ------------------------------------------------------------------ the official client


# The official client cannot share the dev venv (it is a regular `durable_streams`
# package, ours a namespace package): it runs in the client venv of tests/devtools.
_CLIENT_ENV = Path(__file__).resolve().parents[1] / "devtools" / "conftest.py"
_CLIENT_CHECK = """
import sys
from durable_streams import RetentionGoneError, stream
url, below, expected = sys.argv[1], sys.argv[2], sys.argv[3].encode()
for live in (False, "long-poll", "sse"):
    try:
        with stream(url, offset=below, live=live) as res:
            res.read_bytes()
    except RetentionGoneError as gone:
        assert gone.status == 410, (live, gone.status)
    else:
        raise AssertionError(f"no RetentionGoneError with live={live!r}")
with stream(url, offset="-1", live=False) as res:  # from the floor: fine
    assert res.read_bytes() == expected
print("ok")
"""


def _client_python() -> Path:
    module = sys.modules.get("devtools_client_env")
    if module is None:
        spec = importlib.util.spec_from_file_location("devtools_client_env", _CLIENT_ENV)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # before it runs: its dataclasses look themselves up
        spec.loader.exec_module(module)
    return module.build_client_venv()


def test_official_client_gets_retention_gone(server, http):
    url, data, floor = trimmed_stream(http, server)
    done = subprocess.run([str(_client_python()), "-c", _CLIENT_CHECK, url, format_offset(0),
                           data[floor:].decode()], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr
