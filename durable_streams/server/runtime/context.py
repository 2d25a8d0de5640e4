"""Per-request state shared by the handlers of one request (survives request.clone)."""

from __future__ import annotations

from dataclasses import dataclass, field

from multidict import CIMultiDict

from ..config.model import HeaderOp
from ..http import Request
from .matching import ip_in_ranges


@dataclass
class RequestContext:
    client_ip: str = ""
    # Headers written by non-deferred `header` ops: Caddy puts them on the response writer
    # before the next handler runs, so handlers may overwrite them.
    early_headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    # Ops that Caddy applies when the response header is written (`defer`, deletes, `?`).
    deferred_ops: list[HeaderOp] = field(default_factory=list)
    max_body_size: int | None = None  # from `request_body { max_size }`, for the protocol handler
    skip_log: bool = False  # `log_skip`: no access log line for this request
    user_id: str = ""  # the user `basic_auth` let in (logged, like Caddy's user_id)


CONTEXT_KEY = "ds.ctx"


def context_of(request: Request) -> RequestContext:
    try:
        return request[CONTEXT_KEY]  # not request.get: Mapping.get is slow Python code on every call
    except KeyError:
        ctx = request[CONTEXT_KEY] = RequestContext()
        return ctx


def client_ip(request: Request, trusted: tuple[str, ...], headers: tuple[str, ...]) -> str:
    """The client address: the remote peer, or (from a trusted proxy) the first forwarded IP."""
    remote = request.remote or ""
    if not trusted or not ip_in_ranges(remote, trusted):
        return remote
    for name in headers or ("X-Forwarded-For",):
        value = request.headers.get(name)
        if value:
            first = value.split(",")[0].strip()
            if first:
                return first
    return remote
