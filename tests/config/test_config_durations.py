"""Caddy durations: Go's time.ParseDuration + `d`, checked against real Caddy."""

from __future__ import annotations

import json

import pytest

from durable_streams.server.config.durations import DurationError, format_duration, parse_duration, parse_duration_ns

from .oracle import caddy_adapt

GOOD = {
    "0": 0,
    "30s": 30 * 10**9,
    "500ms": 500 * 10**6,
    "1m30s": 90 * 10**9,
    "1.5h": 5400 * 10**9,
    "-1s": -(10**9),
    "+5s": 5 * 10**9,
    "1d": 86400 * 10**9,
    "1d2h30m": 95400 * 10**9,
    "1.5d": 129600 * 10**9,
    ".5s": 500 * 10**6,
    "1.s": 10**9,
    "3us": 3000,
    "3µs": 3000,
    "7ns": 7,
    "1h1h": 7200 * 10**9,
    "1.000000001s": 1_000_000_001,
}

BAD = {
    "10": 'time: missing unit in duration "10"',
    "": 'time: invalid duration ""',
    "5x": 'time: unknown unit "x" in duration "5x"',
    "s": 'time: invalid duration "s"',
    ".s": 'time: invalid duration ".s"',
    "1s-": 'time: unknown unit "s-" in duration "1s-"',
    "d": 'strconv.ParseFloat: parsing "": invalid syntax',
    "1dd": 'strconv.ParseFloat: parsing "24h": invalid syntax',
    "9999999999999h": 'time: invalid duration "9999999999999h"',
}


@pytest.mark.parametrize("text,ns", GOOD.items(), ids=list(GOOD))
def test_parses(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns
    assert parse_duration(text) == pytest.approx(ns / 1e9)


@pytest.mark.parametrize("text,message", BAD.items(), ids=[k or "empty" for k in BAD])
def test_rejects_with_go_message(text: str, message: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration_ns(text)
    assert str(info.value) == message


def test_real_caddy_agrees(tmp_path) -> None:
    """One `caddy adapt` per value: grace_period shows Caddy's nanoseconds or its error."""
    for text, ns in GOOD.items():
        if text in ("0", "-1s"):
            continue  # Caddy omits a zero grace period from its JSON
        accepted, out = caddy_adapt(f'{{\n\tgrace_period "{text}"\n}}\n:80 {{\n}}\n', tmp_path)
        assert accepted, (text, out)
        assert json.loads(out)["apps"]["http"]["grace_period"] == ns, text
    for text, message in BAD.items():
        if not text:
            continue
        accepted, out = caddy_adapt(f'{{\n\tgrace_period "{text}"\n}}\n:80 {{\n}}\n', tmp_path)
        assert not accepted
        assert out == f"parsing caddyfile tokens for 'grace_period': {message}", text


@pytest.mark.parametrize(
    "seconds,text", [(30, "30s"), (90, "1m30s"), (0.5, "500ms"), (86400, "24h0m0s"), (0, "0s"), (-1, "-1s")]
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
