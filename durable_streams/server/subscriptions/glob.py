"""Subscription patterns over stream-root-relative paths (PROTOCOL.md §6.2): `*` is one
whole segment, `**` zero or more segments, anything else a literal segment."""

from __future__ import annotations

import functools


def segments(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.strip("/").split("/") if part)


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> tuple[str, ...]:
    return segments(pattern)


def matches(pattern: str, path: str) -> bool:
    return _match(_compiled(pattern), segments(path))


def _match(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    # Iterative with one backtrack point per `**` seen last (classic wildcard matching
    # over segments): linear in practice, never exponential.
    p = s = 0
    star = -1  # index in pattern just after the last `**`
    star_s = 0  # path index that `**` is currently taken to reach
    while s < len(path):
        if p < len(pattern) and pattern[p] == "**":
            star, star_s = p + 1, s
            p += 1
        elif p < len(pattern) and (pattern[p] == "*" or pattern[p] == path[s]):
            p += 1
            s += 1
        elif star >= 0:
            star_s += 1  # let `**` swallow one more segment
            p, s = star, star_s
        else:
            return False
    while p < len(pattern) and pattern[p] == "**":
        p += 1
    return p == len(pattern)
