"""parse_head and ChunkedDecoder, without I/O."""

from __future__ import annotations

import pytest

from durable_streams.server.http.parser import (
    CHUNKED, HTTP_10, HTTP_11, ChunkedDecoder, ParseError, parse_head,
)

MAX = 8192


def head(text: bytes, max_line: int = MAX, max_field: int = MAX):
    return parse_head(text, max_line, max_field)


def refused(text: bytes, max_line: int = MAX, max_field: int = MAX) -> int:
    with pytest.raises(ParseError) as info:
        parse_head(text, max_line, max_field)
    return info.value.status


# ---------------------------------------------------------------- valid heads

def test_http11_get_with_query():
    h = head(b"GET /streams/a?offset=-1&live=sse HTTP/1.1\r\nHost: example.test")
    assert h.method == "GET"
    assert h.target == "/streams/a?offset=-1&live=sse"
    assert h.version == HTTP_11
    assert h.headers["host"] == "example.test"
    assert h.body_length == 0
    assert h.keep_alive is True
    assert h.expect_continue is False


def test_http10_needs_no_host_and_does_not_keep_alive():
    h = head(b"GET / HTTP/1.0")
    assert h.version == HTTP_10
    assert h.keep_alive is False
    assert "Host" not in h.headers


def test_http10_keep_alive_token():
    assert head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive").keep_alive is True


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close", "Upgrade,  CLOSE"])
def test_connection_close_token(value):
    assert head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: " + value.encode()).keep_alive is False


def test_absolute_form_target_is_kept_as_sent():
    h = head(b"GET http://example.test:8080/a/b?x=1 HTTP/1.1\r\nHost: example.test:8080")
    assert h.target == "http://example.test:8080/a/b?x=1"


def test_header_values_are_trimmed_of_spaces_and_tabs():
    h = head(b"GET / HTTP/1.1\r\nHost: h\r\nX-A:   spaced  value \t\r\nX-B:\tx\r\nX-C:")
    assert h.headers["X-A"] == "spaced  value"
    assert h.headers["X-B"] == "x"
    assert h.headers["X-C"] == ""


def test_tab_inside_a_value_is_allowed():
    assert head(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\tb").headers["X"] == "a\tb"


def test_headers_are_case_insensitive_and_multi_valued():
    h = head(b"GET / HTTP/1.1\r\nHost: h\r\nAccept: a\r\nACCEPT: b\r\naccept: c")
    assert h.headers.getall("Accept") == ["a", "b", "c"]
    assert h.headers["aCcEpT"] == "a"


def test_content_length_body():
    h = head(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 42")
    assert h.body_length == 42


def test_equal_duplicate_content_lengths_are_accepted():
    assert head(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\nContent-Length: 7").body_length == 7


@pytest.mark.parametrize("value", [b"chunked", b"Chunked", b" chunked "])
def test_chunked_transfer_encoding(value):
    assert head(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + value).body_length == CHUNKED


def test_expect_continue_only_on_http11():
    assert head(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: 100-Continue").expect_continue
    assert not head(b"POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue").expect_continue


# ---------------------------------------------------------------- refusals

def test_content_length_and_transfer_encoding_together():
    assert refused(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked") == 400


def test_differing_duplicate_content_lengths():
    assert refused(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6") == 400


@pytest.mark.parametrize("value", [b"abc", b"-1", b"+5", b"", b"1 2", b"0x10", b"5.0", b"1" * 19,
                                   "\u0665".encode()])
def test_invalid_content_length(value):
    assert refused(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + value) == 400


@pytest.mark.parametrize("value", [b"gzip", b"gzip, chunked", b"chunked, gzip", b"identity", b"chunked, chunked"])
def test_transfer_coding_other_than_chunked(value):
    assert refused(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + value) == 501


def test_transfer_encoding_on_http10():
    assert refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked") == 400


def test_obs_fold_line():
    assert refused(b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n  continued") == 400
    assert refused(b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n\tcontinued") == 400


def test_space_before_colon():
    assert refused(b"GET / HTTP/1.1\r\nHost : h") == 400
    assert refused(b"GET / HTTP/1.1\r\nHost: h\r\nX-A\t: 1") == 400


def test_header_line_without_colon():
    assert refused(b"GET / HTTP/1.1\r\nHost: h\r\nno colon here") == 400


@pytest.mark.parametrize("char", [b"\x00", b"\x01", b"\x1f", b"\x7f", b"\n", b"\r"])
def test_control_character_in_value(char):
    assert refused(b"GET / HTTP/1.1\r\nHost: h\r\nX: a" + char + b"b") == 400


@pytest.mark.parametrize("method", [b"GE(T", b"G\x00T", b"GET\x7f", b"G@T", b"G\xc3\xa9T"])
def test_bad_method_token(method):
    assert refused(method + b" / HTTP/1.1\r\nHost: h") == 400


@pytest.mark.parametrize("line", [b"GET  / HTTP/1.1", b"GET / HTTP/1.1 ", b"GET /", b"GET", b"",
                                  b"GET /a b HTTP/1.1", b"GET /\x7f HTTP/1.1"])
def test_malformed_request_line(line):
    assert refused(line + b"\r\nHost: h") == 400


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/3.0", b"HTTP/0.9"])
def test_unsupported_version(version):
    assert refused(b"GET / " + version + b"\r\nHost: h") == 505


@pytest.mark.parametrize("version", [b"HTTP/1.1x", b"HTTPS/1.1", b"http/1.1", b"HTTP/11", b"HTTP/1", b"FOO",
                                     b"HTTP/1.10"])
def test_garbage_version(version):
    assert refused(b"GET / " + version + b"\r\nHost: h") == 400


def test_missing_host_on_http11():
    assert refused(b"GET / HTTP/1.1\r\nAccept: */*") == 400


def test_two_host_headers():
    assert refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b") == 400
    assert refused(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a") == 400


def test_request_line_too_long():
    line = b"GET /" + b"a" * 100 + b" HTTP/1.1"
    assert refused(line + b"\r\nHost: h", max_line=64) == 414
    assert head(line + b"\r\nHost: h", max_line=len(line)).target == "/" + "a" * 100


def test_header_line_too_long():
    field = b"X-Long: " + b"v" * 100
    assert refused(b"GET / HTTP/1.1\r\nHost: h\r\n" + field, max_field=64) == 431
    assert head(b"GET / HTTP/1.1\r\nHost: h\r\n" + field, max_field=len(field)).headers["X-Long"] == "v" * 100


# ---------------------------------------------------------------- ChunkedDecoder

BODY = b"hello world, chunked!"
WIRE = b"5\r\nhello\r\n7;ext=1\r\n world,\r\nA\r\n chunked!X\r\n0\r\n\r\n"
WIRE_BODY = b"hello world, chunked!X"


def decode_all(wire: bytes) -> tuple[bytes, bytes, ChunkedDecoder]:
    decoder = ChunkedDecoder()
    pieces, rest = decoder.feed(wire)
    return b"".join(pieces), rest, decoder


def test_decodes_whole_message():
    body, rest, decoder = decode_all(WIRE)
    assert body == WIRE_BODY
    assert rest == b""
    assert decoder.done


def test_one_byte_at_a_time():
    decoder = ChunkedDecoder()
    body = []
    for i in range(len(WIRE)):
        assert not decoder.done
        pieces, rest = decoder.feed(WIRE[i:i + 1])
        assert rest == b""
        body.extend(pieces)
    assert decoder.done
    assert b"".join(body) == WIRE_BODY


@pytest.mark.parametrize("split", range(1, len(WIRE)))
def test_split_at_every_boundary(split):
    decoder = ChunkedDecoder()
    first, rest1 = decoder.feed(WIRE[:split])
    assert rest1 == b""
    second, rest2 = decoder.feed(WIRE[split:])
    assert rest2 == b""
    assert decoder.done
    assert b"".join(first + second) == WIRE_BODY


def test_chunk_extensions_are_ignored():
    body, rest, decoder = decode_all(b"3;a=b;c=\"d e\"\r\nabc\r\n2 ; x\r\nde\r\n0;last=1\r\n\r\n")
    assert (body, rest, decoder.done) == (b"abcde", b"", True)


def test_trailers_are_dropped():
    body, rest, decoder = decode_all(b"3\r\nabc\r\n0\r\nX-Checksum: 1234\r\nX-Other: y\r\n\r\n")
    assert (body, rest, decoder.done) == (b"abc", b"", True)


def test_trailers_split_byte_by_byte_are_dropped():
    wire = b"3\r\nabc\r\n0\r\nX-Checksum: 1234\r\n\r\n"
    decoder = ChunkedDecoder()
    body = b""
    for i in range(len(wire)):
        pieces, rest = decoder.feed(wire[i:i + 1])
        body += b"".join(pieces)
        assert rest == b""
    assert decoder.done and body == b"abc"


def test_uppercase_and_padded_hex_sizes():
    body, _, decoder = decode_all(b"00A\r\n0123456789\r\n0000\r\n\r\n")
    assert body == b"0123456789" and decoder.done


def test_bytes_after_the_last_chunk_are_leftover():
    next_request = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    body, rest, decoder = decode_all(b"3\r\nabc\r\n0\r\n\r\n" + next_request)
    assert body == b"abc"
    assert rest == next_request
    assert decoder.done


def test_leftover_when_fed_byte_by_byte():
    wire = b"3\r\nabc\r\n0\r\n\r\n"
    decoder = ChunkedDecoder()
    for i in range(len(wire)):
        decoder.feed(wire[i:i + 1])
    assert decoder.done
    assert decoder.feed(b"GET") == ([], b"GET")


def test_data_is_not_interpreted_as_framing():
    payload = b"0\r\n\r\n"  # looks like a last chunk, but it is data
    body, rest, decoder = decode_all(b"5\r\n" + payload + b"\r\n0\r\n\r\n")
    assert body == payload and rest == b"" and decoder.done


@pytest.mark.parametrize("wire", [
    b"zz\r\nabc\r\n0\r\n\r\n",
    b"\r\nabc\r\n0\r\n\r\n",
    b"-1\r\nabc\r\n",
    b"0x3\r\nabc\r\n",
    b"+3\r\nabc\r\n",
    b"1" * 17 + b"\r\n",
    b"3 4\r\nabc\r\n",
])
def test_malformed_chunk_size(wire):
    with pytest.raises(ParseError) as info:
        ChunkedDecoder().feed(wire)
    assert info.value.status == 400


@pytest.mark.parametrize("wire", [
    b"3\r\nabcX\r\n0\r\n\r\n",  # data longer than its size
    b"3\r\nabc0\r\n\r\n",  # no CRLF after the data
    b"3\r\nabc\n0\r\n\r\n",  # bare LF after the data
    b"3\nabc\r\n0\r\n\r\n",  # bare LF after the size
    b"3\r\nabc\r\n0\r\n\n",  # bare LF ends the trailer section
])
def test_missing_crlf(wire):
    with pytest.raises(ParseError) as info:
        ChunkedDecoder().feed(wire)
    assert info.value.status == 400


def test_missing_crlf_found_byte_by_byte():
    decoder = ChunkedDecoder()
    with pytest.raises(ParseError) as info:
        for byte in b"3\r\nabcX\r\n":
            decoder.feed(bytes([byte]))
    assert info.value.status == 400


def test_over_long_size_line_in_one_piece():
    with pytest.raises(ParseError) as info:
        ChunkedDecoder().feed(b"5;" + b"e" * 5000 + b"\r\nhello\r\n0\r\n\r\n")
    assert info.value.status == 400


def test_over_long_size_line_without_end():
    decoder = ChunkedDecoder()
    with pytest.raises(ParseError) as info:
        for _ in range(100):
            decoder.feed(b"1" * 100)
    assert info.value.status == 400


def test_long_extension_within_the_limit_is_fine():
    ext = b";e=" + b"x" * 3000
    body, _, decoder = decode_all(b"5" + ext + b"\r\nhello\r\n0\r\n\r\n")
    assert body == b"hello" and decoder.done
