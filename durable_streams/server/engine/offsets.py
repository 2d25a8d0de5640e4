"""Offsets: `%016d_%016d` tokens, the first part reserved (always 0), the second a
logical byte position that only grows. Zero-padding makes string order equal
numeric order, which is what clients may rely on."""

from __future__ import annotations

import re

from .errors import InvalidRequest

START = "-1"  # sentinel: the beginning of the stream
NOW = "now"  # sentinel: the current tail
_PART = 10**16
_OFFSET = re.compile(r"([0-9]{1,16})_([0-9]{1,16})")  # ASCII digits only, whole string


def format_offset(position: int) -> str:
    return "%016d_%016d" % divmod(position, _PART)


def parse_position(text: str) -> int:
    """A minted offset -> position; `-1` -> 0. Anything else (including `now`) is invalid."""
    if text == START:
        return 0
    match = _OFFSET.fullmatch(text)
    if match is None:
        raise InvalidRequest(f"malformed offset {text!r}")
    return int(match.group(1)) * _PART + int(match.group(2))


def parse_read_offset(text: str) -> int | None:
    """A read's `offset` parameter -> position, or None for `now`."""
    return None if text == NOW else parse_position(text)
