"""Liveness and readiness endpoints (extensions: Caddy has no such paths).

Liveness (`/healthz`): the process answers HTTP, so the event loop is running.
Readiness (`/readyz`): the store has finished recovery and the server accepts
stream traffic; 503 before that, and again while stopping. The runtime owns
one `Readiness` and flips it at those points of its lifecycle.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"


class Readiness:
    """Whether the server may receive traffic, and why not when it may not."""

    def __init__(self) -> None:
        self._state = "starting"
        self._since = time.monotonic()

    @property
    def ready(self) -> bool:
        return self._state == "ready"

    @property
    def state(self) -> str:
        return self._state

    def mark_ready(self) -> None:
        """Recovery finished and listeners serve streams."""
        self._set("ready")

    def mark_stopping(self) -> None:
        """Shutdown began: load balancers should stop sending new requests."""
        self._set("stopping")

    def _set(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._since = time.monotonic()

    def as_json(self) -> dict[str, object]:
        return {
            "status": self._state,
            "ready": self.ready,
            "since_seconds": round(time.monotonic() - self._since, 3),
        }


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _only_get_or_head(request: web.Request) -> None:
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])


def liveness_handler() -> Handler:
    """200 with `{"status": "alive"}` whenever the process can answer."""

    async def live(request: web.Request) -> web.Response:
        _only_get_or_head(request)
        return web.json_response({"status": "alive"}, headers={"Cache-Control": "no-store"})

    return live


def readiness_handler(readiness: Readiness) -> Handler:
    """200 when `readiness` is ready, 503 otherwise; the body says which state."""

    async def ready(request: web.Request) -> web.Response:
        _only_get_or_head(request)
        return web.json_response(
            readiness.as_json(),
            status=200 if readiness.ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    return ready


def add_health_routes(app: web.Application, readiness: Readiness) -> None:
    """Mount both endpoints at their documented paths on an aiohttp app."""
    app.router.add_get(LIVENESS_PATH, liveness_handler())
    app.router.add_get(READINESS_PATH, readiness_handler(readiness))
