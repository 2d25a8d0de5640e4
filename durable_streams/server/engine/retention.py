"""Retention: which bytes of a stream may be dropped, and how far its floor moves.

A stream's floor (`StreamState.floor`) is its earliest retained offset: durable, never
lower than before, and always an append boundary (a whole append, so a JSON stream is a
valid array from its floor on, and offsets never get renumbered). Reads below it are
410 Gone; `offset=-1` reads from it.

Rules come from the configuration, matched against the stream's path in order (the
first rule that matches applies): `max_size` keeps at most that many bytes above the
floor (never dropping the newest append, however large), `max_age` drops appends older
than that. Ages come from marks: (tail, time) pairs the engine records as the stream
grows, at most MARKS per stream, kept with the floor. Everything below a mark older
than `max_age` is older than `max_age`, so the floor moves to it; data is dropped at
most one mark interval (max_age / 12) late, never early.

Patterns: `*` matches one path segment, `**` any number (zero included); a rule
without a pattern matches every stream."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

MARKS = 16  # age marks kept per stream
# One mark per max_age / MARK_SPACING: the oldest kept mark is ~1.25 max_age old, so
# every mark comes of age before it would be pushed out, and data is dropped at most
# max_age / 12 late.
MARK_SPACING = MARKS - 4


@dataclass(frozen=True, slots=True)
class RetentionRule:
    pattern: str | None = None  # None: every stream
    max_age: float | None = None  # seconds
    max_size: int | None = None  # bytes above the floor

    def matches(self, path: str) -> bool:
        return self.pattern is None or _compile(self.pattern).fullmatch(path) is not None

    @property
    def mark_interval(self) -> float | None:
        return None if self.max_age is None else self.max_age / MARK_SPACING


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern:
    out = []
    for part in re.split(r"(\*\*/?|\*)", pattern):
        if part == "**/":
            out.append("(?:[^/]*/)*")  # any number of whole segments
        elif part == "**":
            out.append(".*")
        elif part == "*":
            out.append("[^/]*")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


def rule_for(rules: tuple[RetentionRule, ...], path: str) -> RetentionRule | None:
    for rule in rules:
        if rule.matches(path):
            return rule
    return None


def add_mark(marks: tuple[tuple[int, float], ...], tail: int, now: float,
             interval: float) -> tuple[tuple[int, float], ...] | None:
    """The marks with (tail, now) added, or None when no mark is due yet."""
    if marks and (marks[-1][0] >= tail or now - marks[-1][1] < interval):
        return None
    return (marks + ((tail, now),))[-MARKS:]


def age_floor(marks: tuple[tuple[int, float], ...], now: float, max_age: float) -> int | None:
    """The highest mark whose bytes below are all older than `max_age`."""
    best = None
    for offset, at in marks:
        if now - at >= max_age:
            best = offset
    return best
