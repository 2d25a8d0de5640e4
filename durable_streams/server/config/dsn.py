"""Syntax of a PostgreSQL connection string, checked at `validate` without connecting:
a `postgres://` / `postgresql://` URL, or libpq's `key=value` form."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_KEYWORD = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']+)\s*")


def check_dsn(dsn: str) -> str | None:
    """None when `dsn` is well formed, else what is wrong with it."""
    if not dsn.strip():
        return "empty connection string"
    if "://" in dsn:
        try:
            parts = urlsplit(dsn)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            return f"malformed URL: {exc}"
        if parts.scheme not in ("postgres", "postgresql"):
            return f"unsupported scheme {parts.scheme!r} (want postgres:// or postgresql://)"
        return None
    position = 0
    while position < len(dsn):
        match = _KEYWORD.match(dsn, position)
        if match is None:
            return f"malformed key=value connection string near {dsn[position:position + 20]!r}"
        position = match.end()
    return None
