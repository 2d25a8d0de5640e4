"""Stream-Fork-Sub-Offset on binary and text streams names bytes of the append at the
anchor: up to its end (the next data boundary) is allowed, past it is 400. JSON
sub-offsets count messages up to the source's tail. Run on the memory store and on
the file store, there also after a restart (boundaries from the index files)."""

from __future__ import annotations

import pytest

from durable_streams.server.engine.offsets import format_offset

OCTETS = "application/octet-stream"


@pytest.fixture(params=["memory", "file"])
def store_settings(request, tmp_path):
    return {} if request.param == "memory" else {"data_dir": str(tmp_path / "data")}


async def make_source(server, http, content_type: str, first: bytes, *rest: bytes) -> str:
    """A stream created with `first` as its body, then one append per `rest`."""
    path = server.new_path("src")
    async with http.put(server.url(path), data=first, headers={"Content-Type": content_type}) as r:
        assert r.status == 201
    for chunk in rest:
        async with http.post(server.url(path), data=chunk, headers={"Content-Type": content_type}) as r:
            assert r.status == 204
    return path


async def fork(server, http, source: str, position: int, sub_offset: int) -> tuple[int, bytes]:
    """Fork `source` at `position` with `sub_offset` (inheriting its content type);
    (status, the fork's bytes if created)."""
    path = server.new_path("fork")
    headers = {"Stream-Forked-From": source, "Stream-Fork-Offset": format_offset(position),
               "Stream-Fork-Sub-Offset": str(sub_offset)}
    async with http.put(server.url(path), headers=headers, skip_auto_headers=["Content-Type"]) as r:
        status = r.status
    if status != 201:
        return status, b""
    async with http.get(server.url(path)) as r:
        return status, await r.read()


async def check_abc_defgh(server, http, source: str) -> None:
    assert await fork(server, http, source, 0, 3) == (201, b"abc")
    assert (await fork(server, http, source, 0, 4))[0] == 400  # past the end of "abc"
    assert await fork(server, http, source, 1, 2) == (201, b"abc")  # inside "abc": up to its end
    assert (await fork(server, http, source, 1, 3))[0] == 400
    assert await fork(server, http, source, 3, 5) == (201, b"abcdefgh")
    assert (await fork(server, http, source, 3, 6))[0] == 400  # past the tail, too


@pytest.mark.parametrize("content_type", [OCTETS, "text/plain"])
@pytest.mark.parametrize("created_with_data", [False, True])
async def test_sub_offset_stops_at_the_end_of_the_append(start_server, http, store_settings, content_type,
                                                         created_with_data):
    async with start_server(**store_settings) as server:
        if created_with_data:  # a create's initial body ends an append too
            source = await make_source(server, http, content_type, b"abc", b"defgh")
        else:
            source = await make_source(server, http, content_type, b"", b"abc", b"defgh")
        await check_abc_defgh(server, http, source)
    if store_settings:
        async with start_server(**store_settings) as server:  # from the index files now
            await check_abc_defgh(server, http, source)


async def test_multibyte_text(start_server, http, store_settings):
    async with start_server(**store_settings) as server:
        hello, world = "héllo".encode(), "wörld".encode()  # 6 bytes each
        source = await make_source(server, http, "text/plain; charset=utf-8", hello, world)
        assert await fork(server, http, source, 0, 6) == (201, hello)
        assert (await fork(server, http, source, 0, 7))[0] == 400
        assert await fork(server, http, source, 6, 6) == (201, hello + world)
        assert (await fork(server, http, source, 6, 7))[0] == 400


async def test_boundaries_of_a_fork(start_server, http, store_settings):
    async with start_server(**store_settings) as server:
        source = await make_source(server, http, OCTETS, b"", b"abc", b"defgh")
        # View "a" | "bc" (prefix) | "XY" (body): below its base the source's "abc" ends
        # at the base; the prefix and the body end appends of the fork's own.
        middle = server.new_path("middle")
        async with http.put(server.url(middle), data=b"XY", headers={
                "Stream-Forked-From": source, "Stream-Fork-Offset": format_offset(1),
                "Stream-Fork-Sub-Offset": "2", "Content-Type": OCTETS}) as r:
            assert r.status == 201
        assert await fork(server, http, middle, 0, 1) == (201, b"a")
        assert (await fork(server, http, middle, 0, 2))[0] == 400
        assert await fork(server, http, middle, 1, 2) == (201, b"abc")
        assert (await fork(server, http, middle, 1, 3))[0] == 400
        assert await fork(server, http, middle, 3, 2) == (201, b"abcXY")
        assert (await fork(server, http, middle, 3, 3))[0] == 400


async def test_json_sub_offset_counts_messages_to_the_tail(start_server, http, store_settings):
    async with start_server(**store_settings) as server:
        source = await make_source(server, http, "application/json", b'[{"a":1}]', b'{"b":2}')
        path = server.new_path("fork")
        async with http.put(server.url(path), headers={"Stream-Forked-From": source,
                                                       "Stream-Fork-Offset": format_offset(0),
                                                       "Stream-Fork-Sub-Offset": "2"},
                            skip_auto_headers=["Content-Type"]) as r:
            assert r.status == 201
        async with http.get(server.url(path)) as r:
            assert await r.json() == [{"a": 1}, {"b": 2}]
