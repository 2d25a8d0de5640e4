"""Liveness and readiness endpoints (extensions: Caddy has no such paths).

Liveness (`/healthz`): the process answers HTTP, so the event loop is running.
Readiness (`/readyz`): the store has finished recovery and the server accepts
stream traffic; 503 before that, and again while stopping. The runtime owns
one `Readiness` and flips it at those points of its lifecycle. Components that
can lose what they depend on (a PostgreSQL store) add a check: while one fails,
readiness is 503 and says which.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from ..http import Request, Response, json_response

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"


class Readiness:
    """Whether the server may receive traffic, and why not when it may not."""

    def __init__(self) -> None:
        self._state = "starting"
        self._since = time.monotonic()
        self._checks: dict[int, tuple[str, Callable[[], bool]]] = {}

    @property
    def ready(self) -> bool:
        return self._state == "ready" and not self.failing()

    def failing(self) -> list[str]:
        return [name for name, check in self._checks.values() if not check()]

    def add_check(self, name: str, check: Callable[[], bool]) -> Callable[[], None]:
        """Readiness also needs `check()` to hold; returns the function that removes it."""
        key = id(check)
        self._checks[key] = (name, check)
        return lambda: self._checks.pop(key, None)

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
        failing = self.failing()
        body: dict[str, object] = {
            "status": self._state,
            "ready": self._state == "ready" and not failing,
            "since_seconds": round(time.monotonic() - self._since, 3),
        }
        if failing:
            body["unavailable"] = failing
        return body


Handler = Callable[[Request], Awaitable[Response]]
NO_STORE = {"Cache-Control": "no-store"}


def method_not_allowed(*allowed: str) -> Response:
    """405 naming the methods a path accepts (shared by the admin endpoints)."""
    return Response(status=405, text="405: Method Not Allowed", headers={"Allow": ",".join(allowed)})


def liveness_handler() -> Handler:
    """200 with `{"status": "alive"}` whenever the process can answer."""

    async def live(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed("GET", "HEAD")
        return json_response({"status": "alive"}, headers=NO_STORE)

    return live


def readiness_handler(readiness: Readiness) -> Handler:
    """200 when `readiness` is ready, 503 otherwise; the body says which state."""

    async def ready(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed("GET", "HEAD")
        return json_response(readiness.as_json(), status=200 if readiness.ready else 503, headers=NO_STORE)

    return ready
