"""How a stream's bytes are cut into units, by content type.

JSON mode (`application/json`): a body is validated and flattened one level, each
message is re-serialised compactly (which never contains a raw newline) and stored as
one line. Reads are cut at line ends and rendered as one JSON array. Text streams are
cut at UTF-8 character boundaries so every page decodes on its own; other streams are
plain bytes."""

from __future__ import annotations

import functools
import json
from enum import Enum

from .errors import InvalidRequest


class Framing(Enum):
    BYTES = "bytes"
    TEXT = "text"
    JSON = "json"


@functools.lru_cache(maxsize=256)  # few distinct types; an append compares two
@functools.lru_cache(maxsize=256)  # few distinct values; every append compares two
def media_type(content_type: str) -> str:
    """`Text/Plain; charset=utf-8` -> `text/plain` (what equality of stream types means)."""
    return content_type.split(";", 1)[0].strip().lower()


def framing_of(content_type: str) -> Framing:
    kind = media_type(content_type)
    if kind == "application/json":
        return Framing.JSON
    if kind.startswith("text/"):
        return Framing.TEXT
    return Framing.BYTES


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def json_records(body: bytes, *, allow_empty_array: bool) -> bytes:
    """Validate a whole JSON body and return its messages as newline-terminated lines."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        items = value if isinstance(value, list) else [value]
        if not items and not allow_empty_array:
            raise InvalidRequest("an empty JSON array appends nothing")
        lines = [_dump(item) for item in items]
    except InvalidRequest:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"invalid JSON: {exc}") from None
    return b"".join(line + b"\n" for line in lines)


# Made once: json.dumps with non-default options builds an encoder per call.
_COMPACT_UTF8 = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_COMPACT_ASCII = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _dump(item: object) -> bytes:
    text = _COMPACT_UTF8.encode(item)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from \ud800 escapes: keep them escaped
        return _COMPACT_ASCII.encode(item).encode("ascii")


def json_array(records: bytes) -> bytes:
    """Stored lines -> the JSON array a read returns."""
    if not records:
        return b"[]"
    return b"[" + records[:-1].replace(b"\n", b",") + b"]"


def json_array_piece(records: bytes, *, first: bool, last: bool) -> bytes:
    """One piece of a JSON array rendered range by range, for a streamed body: `records`
    may be cut anywhere, and the pieces of consecutive ranges joined are `json_array` of
    the whole (which must not be empty). The rendering is byte for byte, so its length is
    known before the first piece: `json_array_length`."""
    piece = records.replace(b"\n", b",")
    if last:
        piece = piece[:-1] + b"]"
    return b"[" + piece if first else piece


def json_array_length(nbytes: int) -> int:
    """len(json_array(records)) for `nbytes` of stored lines: each newline becomes a comma
    or the closing bracket, plus the opening one."""
    return nbytes + 1 if nbytes else 2


def unit_end(framing: Framing, data: bytes) -> int:
    """Where a page that stops short of the tail may end: after the last whole unit
    in `data` (0 when not even one unit fits)."""
    if framing is Framing.JSON:
        return data.rfind(b"\n") + 1
    if framing is Framing.TEXT:
        # Step back over an incomplete trailing UTF-8 sequence (at most 3 bytes).
        end = len(data)
        for back in range(1, min(4, end) + 1):
            byte = data[end - back]
            if byte < 0x80:
                return end
            if byte >= 0xC0:  # lead byte: is its sequence complete?
                need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
                return end if back >= need else end - back
        return end
    return len(data)


MAX_UTF8_BYTES = 4  # the longest UTF-8 sequence: one character


def first_unit_end(framing: Framing, data: bytes) -> int:
    """Where the first whole unit of `data` ends (for a page too small to hold one), or
    len(data) when `data` does not complete it."""
    if framing is Framing.JSON:
        return data.find(b"\n") + 1 or len(data)
    if framing is Framing.TEXT and data:
        lead = data[0]
        length = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        return min(length, len(data))
    return min(1, len(data))


def count_units_prefix(framing: Framing, data: bytes, count: int) -> bytes | None:
    """The first `count` units of `data` (messages for JSON, bytes otherwise), or None
    when `data` holds fewer."""
    if framing is not Framing.JSON:
        return data[:count] if count <= len(data) else None
    end = 0
    for _ in range(count):
        newline = data.find(b"\n", end)
        if newline < 0:
            return None
        end = newline + 1
    return data[:end]
