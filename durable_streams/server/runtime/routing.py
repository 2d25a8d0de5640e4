"""The request-time route tree: config routes -> matchers + chained handlers.

Semantics are Caddy's: a route list runs the first matching route's handlers as a
middleware chain whose `next` continues with the following routes; within a group only
the first matching route runs; a terminal route ends the list. A Subroute is a nested
route list whose `next` is its parent's `next`. Handlers are built from config objects
by factories, so tests can plug their own (see `HandlerFactories`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from yarl import URL

from ..config.matchers import MatcherSet, RequestView, ip_in_ranges, sets_match
from ..config.model import (
    DurableStreams,
    HeaderOp,
    Headers,
    MetricsEndpoint,
    RequestBody,
    Route,
    StaticResponse,
    StripPathPrefix,
    Subroute,
)
from .context import CONTEXT_KEY, context_of
from .placeholders import replace_placeholders

Next = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RuntimeHandler(Protocol):
    """A middleware: may answer, or call `next` (possibly with a changed request)."""

    async def __call__(self, request: web.Request, next: Next) -> web.StreamResponse: ...


class Lifecycle(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


Factory = Callable[[Any, "Compiler"], RuntimeHandler]


def request_view(request: web.Request) -> RequestView:
    return RequestView(
        method=request.method,
        path=request.path,
        raw_path=request.rel_url.raw_path,
        headers=request.headers,
        host=request.headers.get("Host", ""),  # not request.host: no FQDN fallback, like Go's r.Host
        query=request.query,
        remote_ip=request.remote or "",
        client_ip=context_of(request).client_ip or request.remote or "",
        scheme=request.scheme,
        version=(request.version.major, request.version.minor),
    )


@dataclass(frozen=True, slots=True)
class _CompiledRoute:
    match: tuple[MatcherSet, ...]
    handlers: tuple[RuntimeHandler, ...]
    group: str | None
    terminal: bool


class RouteList:
    """A compiled route list; calling it runs Caddy's route semantics."""

    def __init__(self, routes: list[_CompiledRoute]) -> None:
        self.routes = routes

    async def __call__(self, request: web.Request, next: Next) -> web.StreamResponse:
        return await self._from(0, request, next, set())

    async def _from(self, index: int, request: web.Request, final: Next, chosen: set[str]) -> web.StreamResponse:
        view: RequestView | None = None
        routes = self.routes
        while index < len(routes):
            route = routes[index]
            index += 1
            if route.group is not None and route.group in chosen:
                continue
            if route.match:
                view = view or request_view(request)
                if not sets_match(route.match, view):
                    continue
            if route.group is not None:
                chosen.add(route.group)
            if route.terminal:
                rest = final
            else:
                after = index

                async def rest(req: web.Request, _after: int = after) -> web.StreamResponse:
                    return await self._from(_after, req, final, chosen)

            return await _chain(route.handlers, 0, request, rest)
        return await final(request)


async def _chain(handlers: tuple[RuntimeHandler, ...], i: int, request: web.Request, last: Next) -> web.StreamResponse:
    if i == len(handlers):
        return await last(request)

    async def next_handler(req: web.Request) -> web.StreamResponse:
        return await _chain(handlers, i + 1, req, last)

    return await handlers[i](request, next_handler)


# --------------------------------------------------------------------------- built-in handlers


class StaticResponseHandler:
    def __init__(self, config: StaticResponse) -> None:
        self.config = config

    async def __call__(self, request: web.Request, next: Next) -> web.StreamResponse:
        c = self.config
        if c.abort:
            # Caddy panics with ErrAbortHandler: the connection closes without a response.
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPException()  # never written: the transport is gone
        ctx = context_of(request)
        response = web.Response(status=c.status or 200)
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

    async def __call__(self, request: web.Request, next: Next) -> web.StreamResponse:
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


def _with_values(ops: tuple[HeaderOp, ...], request: web.Request) -> list[HeaderOp]:
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


def apply_response_headers(response: web.StreamResponse, request: web.BaseRequest) -> None:
    """on_response_prepare: early headers the handler did not overwrite, then deferred ops."""
    ctx = request.get(CONTEXT_KEY)
    if ctx is None:
        return
    for name in dict.fromkeys(ctx.early_headers.keys()):
        # aiohttp fills in Content-Type (octet-stream) before this hook runs; a handler that
        # set nothing must not beat a header the config set earlier, as in Caddy
        defaulted = name.lower() == "content-type" and response.headers.get(name) == "application/octet-stream"
        if defaulted:
            del response.headers[name]
        if name not in response.headers:
            for value in ctx.early_headers.getall(name):
                response.headers.add(name, value)
    for op in ctx.deferred_ops:
        apply_header_op(response.headers, op)


class RequestBodyHandler:
    def __init__(self, config: RequestBody) -> None:
        self.config = config

    async def __call__(self, request: web.Request, next: Next) -> web.StreamResponse:
        limit = self.config.max_size
        if limit > 0:
            context_of(request).max_body_size = limit
            length = request.content_length
            if length is not None and length > limit:
                return web.Response(status=413, text="http: request body too large\n", headers={"Connection": "close"})
        return await next(request)


class StripPrefixHandler:
    def __init__(self, config: StripPathPrefix) -> None:
        self.prefix = config.prefix.lower()

    async def __call__(self, request: web.Request, next: Next) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        if self.prefix and raw.lower().startswith(self.prefix):
            stripped = raw[len(self.prefix):]
            if not stripped.startswith("/"):
                stripped = "/" + stripped
            qs = request.rel_url.raw_query_string
            url = URL(stripped + ("?" + qs if qs else ""), encoded=True)
            request = request.clone(rel_url=url)
        return await next(request)


class MetricsEndpointHandler:
    """Caddy's `metrics` directive: the Prometheus exposition, terminal."""

    def __init__(self, config: MetricsEndpoint, metrics: Any) -> None:
        from ..ops.metrics import metrics_handler

        self.serve = metrics_handler(metrics, openmetrics=config.openmetrics)

    async def __call__(self, request: web.Request, next: Next) -> web.StreamResponse:
        try:
            return await self.serve(request)
        except web.HTTPException as exc:
            return web.Response(status=exc.status, text=exc.text or "", headers=exc.headers)


class DurableStreamsRuntime:
    """Runs the protocol handler for one `durable_streams` directive (one store)."""

    def __init__(self, config: DurableStreams, metrics: Any = None) -> None:
        self.config = config
        self.metrics = metrics
        self.impl: Any = None

    async def start(self) -> None:
        # Imported here: the runtime layer works (and is testable) without the protocol layer.
        from ..protocol.handler import DurableStreamsHandler, ProtocolSettings

        c = self.config
        settings = ProtocolSettings(
            data_dir=c.data_dir,
            max_file_handles=c.max_file_handles,
            long_poll_timeout=c.long_poll_timeout,
            sse_reconnect_interval=c.sse_reconnect_interval,
        )
        # metrics is an optional, additive keyword of the protocol handler
        params = inspect.signature(DurableStreamsHandler).parameters
        if self.metrics is not None and "metrics" in params:
            self.impl = DurableStreamsHandler(settings, metrics=self.metrics)
        else:
            self.impl = DurableStreamsHandler(settings)
        await self.impl.start()

    async def stop(self) -> None:
        if self.impl is not None:
            await self.impl.stop()

    async def __call__(self, request: web.Request, next: Next) -> web.StreamResponse:
        return await self.impl.handle(request, max_body_size=context_of(request).max_body_size)


# --------------------------------------------------------------------------- compiling


class Compiler:
    """Turns config handlers into runtime handlers; one runtime object per config object.

    Handlers with a lifecycle (start/stop: the stores) are listed in `lifecycle`. Given
    the compiler of the running config (`previous`, on reload), a handler whose config is
    equal to a running one is reused as is, so its store stays open and its clients stay
    connected; `reused` lists those.
    """

    def __init__(
        self,
        factories: Mapping[type, Factory] | None = None,
        *,
        services: Mapping[str, Any] | None = None,
        previous: "Compiler | None" = None,
    ) -> None:
        self.factories: dict[type, Factory] = dict(DEFAULT_FACTORIES)
        self.factories.update(factories or {})
        self.services: dict[str, Any] = dict(services or {})
        self._built: dict[int, RuntimeHandler] = {}
        self._keep: list[Any] = []  # keeps config objects alive so their ids stay unique
        self.lifecycle: list[Lifecycle] = []
        self.configs: list[Any] = []  # config of each lifecycle handler, same order
        self.reused: list[Lifecycle] = []
        self._previous = list(zip(previous.configs, previous.lifecycle)) if previous else []

    def handler(self, config: Any) -> RuntimeHandler:
        key = id(config)
        built = self._built.get(key)
        if built is None:
            built = self._reuse(config)
            if built is None:
                factory = self.factories.get(type(config))
                if factory is None:
                    raise TypeError(f"no runtime handler for {type(config).__name__}")
                built = factory(config, self)
            self._built[key] = built
            self._keep.append(config)
            if hasattr(built, "start") and hasattr(built, "stop"):
                self.lifecycle.append(built)  # type: ignore[arg-type]
                self.configs.append(config)
        return built

    def _reuse(self, config: Any) -> Any:
        for i, (old_config, old_handler) in enumerate(self._previous):
            if type(old_config) is type(config) and old_config == config:
                del self._previous[i]
                self.reused.append(old_handler)
                return old_handler
        return None

    def routes(self, routes: tuple[Route, ...]) -> RouteList:
        return RouteList(
            [
                _CompiledRoute(r.match, tuple(self.handler(h) for h in r.handle), r.group, r.terminal)
                for r in routes
            ]
        )


def _subroute(config: Subroute, compiler: Compiler) -> RuntimeHandler:
    return compiler.routes(config.routes)


DEFAULT_FACTORIES: dict[type, Factory] = {
    Subroute: _subroute,
    StaticResponse: lambda c, _: StaticResponseHandler(c),
    Headers: lambda c, _: HeadersHandler(c),
    RequestBody: lambda c, _: RequestBodyHandler(c),
    StripPathPrefix: lambda c, _: StripPrefixHandler(c),
    DurableStreams: lambda c, compiler: DurableStreamsRuntime(c, compiler.services.get("metrics")),
    MetricsEndpoint: lambda c, compiler: MetricsEndpointHandler(c, compiler.services["metrics"]),
}


def client_ip(request: web.BaseRequest, trusted: tuple[str, ...], headers: tuple[str, ...]) -> str:
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
