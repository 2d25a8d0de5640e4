"""Per-request state shared by the handlers of one request (survives request.clone)."""

from __future__ import annotations

from multidict import CIMultiDict

from ..config.model import HeaderOp
from ..http import Request
from .matching import ip_in_ranges


class RequestContext:
    """What the handlers of one request share. The header lists are made on first use:
    most requests meet no `header` directive, and every request makes a context."""

    __slots__ = ("client_ip", "max_body_size", "skip_log", "user_id", "_early_headers", "_deferred_ops")

    def __init__(self, client_ip: str = "") -> None:
        self.client_ip = client_ip
        self.max_body_size: int | None = None  # from `request_body { max_size }`, for the protocol handler
        self.skip_log = False  # `log_skip`: no access log line for this request
        self.user_id = ""  # the user `basic_auth` let in (logged, like Caddy's user_id)
        self._early_headers: CIMultiDict[str] | None = None
        self._deferred_ops: list[HeaderOp] | None = None

    @property
    def early_headers(self) -> CIMultiDict[str]:
        """Headers written by non-deferred `header` ops: Caddy puts them on the response
        writer before the next handler runs, so handlers may overwrite them."""
        if self._early_headers is None:
            self._early_headers = CIMultiDict()
        return self._early_headers

    @property
    def deferred_ops(self) -> list[HeaderOp]:
        """Ops that Caddy applies when the response header is written (`defer`, deletes, `?`)."""
        if self._deferred_ops is None:
            self._deferred_ops = []
        return self._deferred_ops

    @property
    def changes_response_headers(self) -> bool:
        return bool(self._early_headers) or bool(self._deferred_ops)


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
