"""Caddy durations: Go's `time.ParseDuration` plus a `d` (24h) unit, with Go's error texts.

Values are returned as float seconds; the integer nanosecond arithmetic follows Go so that
overflow and rounding behave like Caddy's.
"""

from __future__ import annotations

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_MAX = 1 << 63


class DurationError(ValueError):
    """Carries Go's message verbatim (e.g. `time: missing unit in duration "10"`)."""


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _go_format_float(value: float) -> str:
    # strconv.FormatFloat(v, 'f', -1, 64): shortest repr, never exponent form.
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(value, "f").rstrip("0").rstrip(".") if "." in format(value, "f") else format(value, "f")
    if text.endswith(".0"):
        text = text[:-2]
    return text


def _go_parse_float(text: str) -> float:
    try:
        if text.strip() != text or "_" in text or text.lower() in ("inf", "+inf", "-inf", "nan", "infinity"):
            raise ValueError
        return float(text)
    except ValueError:
        raise DurationError(f"strconv.ParseFloat: parsing {_quote(text)}: invalid syntax") from None


def _expand_days(s: str) -> str:
    """Caddy's pre-pass: rewrite each `<number>d` as the equivalent hours."""
    in_number = False
    num_start = 0
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "d":
            days = _go_parse_float(s[num_start:i])
            s = s[:num_start] + _go_format_float(days * 24.0) + "h" + s[i + 1 :]
            # like Caddy, rescan from the same index (inside the rewritten number)
            continue
        if not in_number:
            num_start = i
        in_number = ch.isdigit() and ch.isascii() or ch in ".-+"
        i += 1
    return s


def parse_go_duration(orig: str) -> int:
    """Go's time.ParseDuration, returning nanoseconds."""
    invalid = DurationError(f"time: invalid duration {_quote(orig)}")
    s = orig
    neg = False
    if s and s[0] in "-+":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise invalid
        # integer part
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        pre = i > 0
        value = int(s[:i]) if pre else 0
        if value >= _MAX:
            raise invalid
        s = s[i:]
        frac, scale, post = 0, 1.0, False
        if s.startswith("."):
            s = s[1:]
            i = 0
            overflow = False
            while i < len(s) and "0" <= s[i] <= "9":
                if not overflow:
                    if frac > (_MAX - 1) // 10:
                        overflow = True  # Go drops further digits
                    else:
                        frac = frac * 10 + int(s[i])
                        scale *= 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise invalid
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise DurationError(f"time: missing unit in duration {_quote(orig)}")
        unit_text, s = s[:i], s[i:]
        unit = _UNITS_NS.get(unit_text)
        if unit is None:
            raise DurationError(f"time: unknown unit {_quote(unit_text)} in duration {_quote(orig)}")
        if value > _MAX // unit:
            raise invalid
        value *= unit
        if frac > 0:
            value += int(float(frac) * (float(unit) / scale))
            if value > _MAX:
                raise invalid
        total += value
        if total > _MAX:
            raise invalid
    if neg:
        return -total
    if total > _MAX - 1:
        raise invalid
    return total


def parse_duration_ns(text: str) -> int:
    """caddy.ParseDuration: nanoseconds. Raises DurationError with Caddy/Go wording."""
    if len(text) > 1024:
        raise DurationError("parsing duration: input string too long")
    return parse_go_duration(_expand_days(text))


def parse_duration(text: str) -> float:
    """caddy.ParseDuration in seconds (float), as the config model stores durations."""
    return parse_duration_ns(text) / 1e9


def format_duration(seconds: float) -> str:
    """A short Go-style rendering for `adapt` output (e.g. 30s, 1m30s, 500ms)."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _go_format_float(ns / size) + unit
    hours, rest = divmod(ns, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + _go_format_float(rest / 1e9) + "s"
