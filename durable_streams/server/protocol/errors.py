"""One error type for the HTTP layer: status + reason + extra headers, answered as a
plain-text body with `Cache-Control: no-store` and the common security headers."""

from __future__ import annotations

from ..engine import errors as engine
from ..engine.offsets import format_offset
from ..http import Response
from ..store import base as store
from .responses import plain

# Extension: the earliest retained offset of a stream whose retention dropped data, on
# HEAD and on the 410 of a read below it (clients may resume there, or from offset=-1).
EARLIEST_OFFSET = "Stream-Earliest-Offset"


class HttpError(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None,
                 *, close: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}
        self.close = close  # e.g. an unread oversized body: the connection cannot be reused

    def response(self, *, with_body: bool = True) -> Response:
        headers = {"Cache-Control": "no-store", **self.headers}
        body = b""
        if with_body:
            headers["Content-Type"] = "text/plain"
            body = (self.reason + "\n").encode("utf-8", "replace")
        response = plain(self.status, headers, body)
        if self.close:
            response.force_close()
        return response


def from_engine(error: engine.StreamError) -> HttpError:
    """Map an engine refusal to its status code and headers."""
    if isinstance(error, engine.StreamClosed):
        return HttpError(409, error.reason, {"Stream-Closed": "true", "Stream-Next-Offset": format_offset(error.tail)})
    if isinstance(error, engine.ProducerSeqGap):
        return HttpError(409, error.reason, {
            "Producer-Expected-Seq": str(error.expected),
            "Producer-Received-Seq": str(error.received),
        })
    if isinstance(error, engine.BelowFloor):
        return HttpError(410, error.reason, {EARLIEST_OFFSET: format_offset(error.floor)})
    if isinstance(error, engine.StaleProducerEpoch):
        return HttpError(403, error.reason, {"Producer-Epoch": str(error.current_epoch)})
    for kind, status in _ENGINE_STATUSES:
        if isinstance(error, kind):
            return HttpError(status, error.reason)
    return HttpError(500, error.reason)


STORE_RETRY_AFTER = "1"  # seconds: a lost database is probed every second


def from_store(error: store.StoreError) -> HttpError:
    """A store that could not keep a write: 507 when the disk is full, else 503 with
    Retry-After. A local store's failed write left the stream unchanged; a shared store
    that lost its database mid-commit cannot say (`StoreUnavailable`), so only an
    idempotent producer's retry is safe there, and the reason says so."""
    if isinstance(error, store.StoreFull):
        return HttpError(507, "storage full")
    if isinstance(error, store.StoreUnavailable):
        return HttpError(503, "storage unavailable, retry later (the outcome of a write in flight is unknown: "
                              "retry it with idempotent producer headers)", {"Retry-After": STORE_RETRY_AFTER})
    return HttpError(503, "storage unavailable, retry later", {"Retry-After": STORE_RETRY_AFTER})


# Matched by isinstance, in order, so a new subclass gets its parent's status, never a 500.
_ENGINE_STATUSES: tuple[tuple[type[engine.StreamError], int], ...] = (
    (engine.InvalidRequest, 400),
    (engine.StreamNotFound, 404),
    (engine.StreamGone, 410),
    (engine.Conflict, 409),
    (engine.ShuttingDown, 503),
)
