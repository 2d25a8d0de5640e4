"""Strict parsing and formatting rules, checked directly (no server needed)."""

from __future__ import annotations

import base64
import json

import pytest

from durable_streams.server.engine.errors import InvalidRequest
from durable_streams.server.engine.framing import Framing, json_array, json_records, unit_end
from durable_streams.server.engine.offsets import format_offset, parse_position, parse_read_offset
from durable_streams.server.protocol import headers
from durable_streams.server.protocol.cursor import CURSOR_EPOCH, CURSOR_INTERVAL, next_cursor
from durable_streams.server.protocol.sse import control_event, data_event


def test_offsets_round_trip_and_sort_like_positions():
    positions = [0, 1, 9, 10, 12345, 10**16 - 1, 10**16, 10**16 + 5]
    tokens = [format_offset(p) for p in positions]
    assert [parse_position(t) for t in tokens] == positions
    assert sorted(tokens) == tokens
    assert parse_position("-1") == 0 and parse_read_offset("now") is None


@pytest.mark.parametrize("bad", ["", "now", "abc", "1", "_", "1_", "_1", "0_0\n", " 0_0", "0_0 ", "+1_0",
                                 "١_٢", "0x1_0", "1_2_3", "00000000000000000_0", "-1_0", "-0"])
def test_malformed_offsets_are_refused(bad):
    with pytest.raises(InvalidRequest):
        parse_position(bad)


@pytest.mark.parametrize("value,ok", [("0", True), ("3600", True), ("03600", False), ("+3600", False),
                                      ("3600.0", False), ("3.6e3", False), ("-1", False), ("", False),
                                      ("٣", False), ("1_000", False), ("60\n", False)])
def test_ttl_is_a_canonical_decimal(value, ok):
    if ok:
        assert headers.decimal(value, "Stream-TTL") == int(value)
    else:
        with pytest.raises(InvalidRequest):
            headers.decimal(value, "Stream-TTL")


def test_rfc3339_timestamps():
    assert headers.expires_at("2030-01-01T00:00:00Z") == headers.expires_at("2030-01-01T00:00:00+00:00")
    assert headers.expires_at("2030-01-01T01:00:00+01:00") == headers.expires_at("2030-01-01T00:00:00z")
    assert headers.expires_at("2030-01-01T00:00:00.250Z") - headers.expires_at("2030-01-01T00:00:00Z") == 0.25
    for bad in ["2030-01-01", "2030-01-01 00:00:00Z", "2030-02-30T00:00:00Z", "2030-01-01T00:00:00",
                "2030-01-01T24:00:00Z", "tomorrow", "2030-01-01T00:00:00+0100"]:
        with pytest.raises(InvalidRequest):
            headers.expires_at(bad)


def test_stream_closed_counts_only_true():
    assert headers.is_true("true") and headers.is_true("TRUE") and headers.is_true("True")
    assert not any(headers.is_true(v) for v in [None, "", "false", "1", "yes", "true!"])


def test_producer_headers():
    assert headers.producer_claim(None, None, None) is None
    claim = headers.producer_claim("p", "3", "9007199254740991")
    assert (claim.epoch, claim.seq) == (3, 2**53 - 1)
    for args in [("p", "1", None), ("", "0", "0"), ("p", "-1", "0"), ("p", "0", "9007199254740992"),
                 ("p", "1e3", "0"), ("p", "0", "0x1")]:
        with pytest.raises(InvalidRequest):
            headers.producer_claim(*args)


def test_json_flattening_is_one_level():
    def messages(body: str, allow_empty=False):
        return json.loads(json_array(json_records(body.encode(), allow_empty_array=allow_empty)))

    assert messages('{"event": "created"}') == [{"event": "created"}]
    assert messages('[{"a": 1}, {"b": 2}]') == [{"a": 1}, {"b": 2}]
    assert messages("[[1,2], [3,4]]") == [[1, 2], [3, 4]]
    assert messages("[[[1,2,3]]]") == [[[1, 2, 3]]]
    assert messages('"s"') == ["s"] and messages("null") == [None]
    assert messages("[]", allow_empty=True) == []
    with pytest.raises(InvalidRequest):
        json_records(b"[]", allow_empty_array=False)
    # One stored line per message, whatever whitespace or escaped newlines the body had.
    assert json_records(b'["multi\\nline", {"k":\n 1}]', allow_empty_array=False).count(b"\n") == 2


def test_pages_are_cut_on_whole_units():
    assert unit_end(Framing.JSON, b"1\n2\n3") == 4
    assert unit_end(Framing.TEXT, "aé".encode()[:-1]) == 1
    assert unit_end(Framing.TEXT, "a🎉".encode()[:3]) == 1
    assert unit_end(Framing.TEXT, "a🎉".encode()) == 5
    assert unit_end(Framing.BYTES, b"\xf0\x9f") == 2


def test_sse_framing():
    assert data_event(Framing.TEXT, b"a\r\nb\rc\nd") == b"event: data\ndata:a\ndata:b\ndata:c\ndata:d\n\n"
    assert data_event(Framing.JSON, b'{"a":1}\n2\n') == b'event: data\ndata:[{"a":1},2]\n\n'
    event = data_event(Framing.BYTES, bytes(range(256)))
    lines = event.decode().split("\n")
    assert base64.b64decode("".join(line[5:] for line in lines if line.startswith("data:"))) == bytes(range(256))
    assert control_event({"streamNextOffset": "x", "upToDate": True}) == (
        b'event: control\ndata:{"streamNextOffset":"x","upToDate":true}\n\n'
    )


def test_cursor_moves_forward_from_an_echoed_cursor():
    now = CURSOR_EPOCH + 1000 * CURSOR_INTERVAL + 5
    assert next_cursor(None, now) == "1000"
    assert next_cursor("999", now) == "1000"
    for echoed in ("1000", "5000"):
        assert int(next_cursor(echoed, now)) > int(echoed)
    assert next_cursor("garbage", now) == "1000"
