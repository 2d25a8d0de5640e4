"""Built-in runtime handlers: what `respond`, `header`, `request_body`, `handle_path`,
`metrics` and `durable_streams` do at request time (Caddy's handler modules).

A handler is a middleware: `await handler(request, next)` answers, or calls `next`
(possibly with a changed request). `DEFAULT_FACTORIES` maps each config class to the
function that builds its handler; tests and embedders can add or replace entries.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..config.model import (
    BasicAuth,
    DurableStreams,
    HeaderOp,
    Headers,
    MetricsEndpoint,
    RequestBody,
    SkipLog,
    StaticResponse,
    StripPathPrefix,
    Subroute,
)
from ..http import Request, Response, StreamResponse
from ..ops.metrics import metrics_response
from .auth import BasicAuthHandler
from .context import CONTEXT_KEY, context_of
from .placeholders import replace_placeholders

Next = Callable[[Request], Awaitable[Response | StreamResponse]]


class RuntimeHandler(Protocol):
    """A middleware: may answer, or call `next` (possibly with a changed request)."""

    async def __call__(self, request: Request, next: Next) -> Response | StreamResponse: ...


class Lifecycle(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


# (config object, the routing.Compiler building it) -> runtime handler
Factory = Callable[[Any, Any], RuntimeHandler]


class StaticResponseHandler:
    def __init__(self, config: StaticResponse) -> None:
        self.config = config

    async def __call__(self, request: Request, next: Next) -> Response | StreamResponse:
        c = self.config
        if c.abort:
            # Caddy panics with ErrAbortHandler: the connection closes without a response.
            request.abort()
            raise ConnectionAbortedError("respond abort")  # nothing is written: the connection is gone
        ctx = context_of(request)
        response = Response(status=c.status or 200)
        for name, value in c.headers:
            response.headers[name] = replace_placeholders(value, request, known_only=False)
        body = replace_placeholders(c.body, request, known_only=True) if c.body else ""
        if body and "Content-Type" not in response.headers and "Content-Type" not in ctx.early_headers:
            response.headers["Content-Type"] = _sniff_static_type(body)
        if c.close:
            response.headers["Connection"] = "close"
            response.force_close()
        if body and response.status != 103:
            response.body = body.encode()
        return response


def _sniff_static_type(body: str) -> str:
    content = body.strip()
    if len(content) > 2 and ((content[0], content[-1]) in (("{", "}"), ("[", "]"))):
        import json

        try:
            json.loads(content)
            return "application/json"
        except ValueError:
            pass
    return "text/plain; charset=utf-8"


class HeadersHandler:
    def __init__(self, config: Headers) -> None:
        self.config = config

    async def __call__(self, request: Request, next: Next) -> Response | StreamResponse:
        ctx = context_of(request)
        if self.config.deferred:
            ctx.deferred_ops.extend(_with_values(self.config.ops, request))
        else:
            for op in _with_values(self.config.ops, request):
                if op.action in ("delete", "default"):
                    ctx.deferred_ops.append(op)
                else:
                    apply_header_op(ctx.early_headers, op)
        return await next(request)


def _with_values(ops: tuple[HeaderOp, ...], request: Request) -> list[HeaderOp]:
    out = []
    for op in ops:
        value = replace_placeholders(op.value, request, known_only=False)
        out.append(op if value == op.value else HeaderOp(op.action, op.field, value, op.search, op.regex))
    return out


def apply_header_op(headers: Any, op: HeaderOp) -> None:
    """Apply one op to a CIMultiDict (response headers or the early headers)."""
    if op.action == "set":
        headers[op.field] = op.value
    elif op.action == "add":
        headers.add(op.field, op.value)
    elif op.action == "default":
        if op.field not in headers:
            headers[op.field] = op.value
    elif op.action == "delete":
        _delete_header(headers, op.field)
    elif op.action == "replace":
        if op.field == "*":
            names = list(dict.fromkeys(headers.keys()))
        else:
            names = [op.field] if op.field in headers else []
        for name in names:
            values = headers.getall(name)
            del headers[name]
            for v in values:
                new = re.sub(op.search or "", op.value, v) if op.regex else v.replace(op.search or "", op.value)
                headers.add(name, new)


def _delete_header(headers: Any, pattern: str) -> None:
    # Caddy allows a leading or trailing '*' in delete patterns
    low = pattern.lower()
    for name in list(dict.fromkeys(headers.keys())):
        n = name.lower()
        if (
            n == low
            or (low.startswith("*") and low.endswith("*") and len(low) > 1 and low[1:-1] in n)
            or (low.startswith("*") and n.endswith(low[1:]))
            or (low.endswith("*") and n.startswith(low[:-1]))
        ):
            del headers[name]


def apply_response_headers(response: Response | StreamResponse, request: Request) -> None:
    """on_response_prepare: early headers the handler did not overwrite, then deferred ops."""
    ctx = request.get(CONTEXT_KEY)
    if ctx is None or not ctx.changes_response_headers:
        return
    for name in dict.fromkeys(ctx.early_headers.keys()):
        if name not in response.headers:
            for value in ctx.early_headers.getall(name):
                response.headers.add(name, value)
    for op in ctx.deferred_ops:
        apply_header_op(response.headers, op)


class RequestBodyHandler:
    def __init__(self, config: RequestBody) -> None:
        self.config = config

    async def __call__(self, request: Request, next: Next) -> Response | StreamResponse:
        limit = self.config.max_size
        if limit > 0:
            context_of(request).max_body_size = limit
            length = request.content_length
            if length is not None and length > limit:
                return Response(status=413, text="http: request body too large\n", headers={"Connection": "close"})
        return await next(request)


class StripPrefixHandler:
    def __init__(self, config: StripPathPrefix) -> None:
        self.prefix = config.prefix.lower()

    async def __call__(self, request: Request, next: Next) -> Response | StreamResponse:
        raw = request.raw_path
        if self.prefix and raw.lower().startswith(self.prefix):
            stripped = raw[len(self.prefix):]
            if not stripped.startswith("/"):
                stripped = "/" + stripped
            request = request.clone(raw_path=stripped)
        return await next(request)


class SkipLogHandler:
    async def __call__(self, request: Request, next: Next) -> Response | StreamResponse:
        context_of(request).skip_log = True
        return await next(request)


class MetricsEndpointHandler:
    """Caddy's `metrics` directive: the Prometheus exposition, terminal."""

    def __init__(self, config: MetricsEndpoint, metrics: Any) -> None:
        self.metrics = metrics
        self.openmetrics = config.openmetrics

    async def __call__(self, request: Request, next: Next) -> Response | StreamResponse:
        return metrics_response(self.metrics, request, openmetrics=self.openmetrics)


class DurableStreamsRuntime:
    """Runs the protocol handler for one `durable_streams` directive (one store)."""

    def __init__(self, config: DurableStreams, metrics: Any = None, readiness: Any = None) -> None:
        self.config = config
        self.metrics = metrics
        self.readiness = readiness  # ops.health.Readiness: ready only while the store can serve
        self.impl: Any = None
        self._unready: Callable[[], None] | None = None

    async def start(self) -> None:
        # Imported here: the runtime layer works (and is testable) without the protocol layer.
        from ..protocol.handler import DurableStreamsHandler

        self.impl = DurableStreamsHandler(self.config, metrics=self.metrics)
        await self.impl.start()
        if self.readiness is not None:
            impl = self.impl
            self._unready = self.readiness.add_check("store", lambda: impl.available)

    async def stop(self) -> None:
        if self._unready is not None:
            self._unready()
            self._unready = None
        if self.impl is not None:
            await self.impl.stop()

    def __call__(self, request: Request, next: Next) -> Awaitable[Response | StreamResponse]:
        # A plain def handing back the handler's coroutine: one coroutine less per request.
        return self.impl.handle(request, max_body_size=context_of(request).max_body_size)



DEFAULT_FACTORIES: dict[type, Factory] = {
    Subroute: lambda c, compiler: compiler.subroute(c.routes),
    StaticResponse: lambda c, _: StaticResponseHandler(c),
    Headers: lambda c, _: HeadersHandler(c),
    RequestBody: lambda c, _: RequestBodyHandler(c),
    StripPathPrefix: lambda c, _: StripPrefixHandler(c),
    DurableStreams: lambda c, compiler: DurableStreamsRuntime(
        c, compiler.services.get("metrics"), compiler.services.get("readiness")),
    SkipLog: lambda c, _: SkipLogHandler(),
    MetricsEndpoint: lambda c, compiler: MetricsEndpointHandler(c, compiler.services["metrics"]),
    BasicAuth: lambda c, _: BasicAuthHandler(c),
}
