"""Stream-Cursor: the current 20-second interval since 2024-10-09T00:00:00Z. A client
echoing a cursor at or past the current interval gets a strictly larger one (random
jitter of 1-3600 s), so CDN cache keys always move forward."""

from __future__ import annotations

import math
import random
import re

CURSOR_EPOCH = 1728432000.0  # 2024-10-09T00:00:00Z
CURSOR_INTERVAL = 20.0
_MAX_JITTER_SECONDS = 3600
_CURSOR = re.compile(r"[0-9]{1,20}")


def current_interval(now: float) -> int:
    return int((now - CURSOR_EPOCH) // CURSOR_INTERVAL)


def echoed_cursor(client_cursor: str | None) -> int | None:
    """The client's cursor as a number, or None when absent or malformed (ignored)."""
    if client_cursor is not None and _CURSOR.fullmatch(client_cursor):
        return int(client_cursor)
    return None


def advance(echoed: int | None, current: int) -> int:
    """The cursor for a client that echoed `echoed` during interval `current`."""
    if echoed is not None and echoed >= current:
        jitter_seconds = random.randint(1, _MAX_JITTER_SECONDS)
        return echoed + max(1, math.ceil(jitter_seconds / CURSOR_INTERVAL))
    return current


def next_cursor(client_cursor: str | None, now: float) -> str:
    return str(advance(echoed_cursor(client_cursor), current_interval(now)))
