"""Strict parsing of the protocol's request headers and query parameters.

Python's int() accepts " 7", "+7", "1_000" and non-ASCII digits, and `$` in a regex
matches before a trailing newline: every value here is matched whole, ASCII only."""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta, timezone

from ..engine.errors import InvalidRequest
from ..engine.producers import ProducerClaim

_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # no leading zeros, signs, points or exponents
_DIGITS = re.compile(r"[0-9]+")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+/[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
MAX_SAFE_INTEGER = 2**53 - 1  # producer values must survive a JavaScript number


def decimal(value: str, name: str) -> int:
    """A non-negative decimal integer written canonically (Stream-TTL, sub-offsets)."""
    if _DECIMAL.fullmatch(value) is None:
        raise InvalidRequest(f"{name} must be a non-negative integer without sign or leading zeros")
    return int(value)


def expires_at(value: str) -> float:
    """An RFC 3339 timestamp -> unix seconds."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise InvalidRequest("Stream-Expires-At must be an RFC 3339 timestamp")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = float(match.group(7) or 0)
    zone = match.group(8)
    try:
        offset = timedelta(0) if zone in "Zz" else _zone_offset(zone)
        moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=timezone(offset))
    except (ValueError, OverflowError):
        raise InvalidRequest("Stream-Expires-At is not a valid date and time") from None
    return moment.timestamp() + fraction + (1 if second == 60 else 0)  # leap second


def _zone_offset(zone: str) -> timedelta:
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 23 or minutes > 59:
        raise ValueError("bad zone")
    sign = -1 if zone[0] == "-" else 1
    return sign * timedelta(hours=hours, minutes=minutes)


def is_true(value: str | None) -> bool:
    """Stream-Closed counts only when it says `true` (any case); anything else is absent."""
    return value is not None and value.lower() == "true"


@functools.lru_cache(maxsize=256)  # clients send few distinct types; each append checks one
def content_type(value: str | None) -> str | None:
    """The Content-Type as sent, or None when absent or not shaped like `type/subtype`."""
    if value is None:
        return None
    value = value.strip()
    return value if _MEDIA_TYPE.match(value) else None


def producer_claim(producer_id: str | None, epoch: str | None, seq: str | None) -> ProducerClaim | None:
    if producer_id is None and epoch is None and seq is None:
        return None  # the usual append: no producer
    present = [h is not None for h in (producer_id, epoch, seq)]
    if not any(present):
        return None
    if not all(present):
        raise InvalidRequest("Producer-Id, Producer-Epoch and Producer-Seq must be sent together")
    if not producer_id:
        raise InvalidRequest("Producer-Id must not be empty")
    return ProducerClaim(producer_id, _safe_integer(epoch, "Producer-Epoch"), _safe_integer(seq, "Producer-Seq"))


def _safe_integer(value: str, name: str) -> int:
    if _DIGITS.fullmatch(value) is None or int(value) > MAX_SAFE_INTEGER:
        raise InvalidRequest(f"{name} must be an integer between 0 and 2^53-1")
    return int(value)
