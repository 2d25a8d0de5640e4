"""The request-time route tree: config routes -> compiled matchers + chained handlers.

Semantics are Caddy's: a route list runs the first matching route's handlers as a
middleware chain whose `next` continues with the following routes; within a group only
the first matching route runs; a terminal route ends the list. A Subroute is a nested
route list whose `next` is its parent's `next`. The Compiler builds handlers from config
objects through factories (handlers.DEFAULT_FACTORIES), which tests may extend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from ..http import Request, Response, StreamResponse
from ..config.model import Route
from .context import context_of
from .handlers import DEFAULT_FACTORIES, Factory, Lifecycle, Next, RuntimeHandler
from .matching import Predicate, RequestView, compile_sets

__all__ = ["Compiler", "Factory", "Next", "RouteList", "RuntimeHandler", "request_view"]


class _LazyRequestView:
    """The RequestView of a request, read field by field when a matcher asks.

    Most routes look at one or two fields (host, path); building every field (query
    parsing, peer address, ...) for each route list cost more than the matching itself.
    The evaluation helpers are RequestView's own, so both views answer alike.
    """

    __slots__ = ("_request",)

    def __init__(self, request: Request) -> None:
        self._request = request

    @property
    def method(self) -> str:
        return self._request.method

    @property
    def path(self) -> str:
        return self._request.path

    @property
    def raw_path(self) -> str:
        return self._request.raw_path

    @property
    def headers(self) -> Any:
        return self._request.headers

    @property
    def host(self) -> str:
        return self._request.headers.get("Host", "")  # not request.host: no FQDN fallback, like Go's r.Host

    @property
    def query(self) -> Any:
        return self._request.query

    @property
    def remote_ip(self) -> str:
        return self._request.remote or ""

    @property
    def client_ip(self) -> str:
        return context_of(self._request).client_ip or self._request.remote or ""

    @property
    def scheme(self) -> str:
        return self._request.scheme

    @property
    def version(self) -> tuple[int, int]:
        version = self._request.version
        return (version.major, version.minor)

    header_values = RequestView.header_values
    query_values = RequestView.query_values
    hostname = RequestView.hostname


def request_view(request: Request) -> RequestView:
    """What matchers see of `request` (fields are read on use)."""
    return _LazyRequestView(request)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class _CompiledRoute:
    match: Predicate | None  # the route's matcher sets; None matches every request
    handlers: tuple[RuntimeHandler, ...]
    group: str | None
    terminal: bool


_NO_GROUPS: frozenset[str] = frozenset()  # what a list without grouped routes has chosen: nothing, ever


class RouteList:
    """A compiled route list; calling it runs Caddy's route semantics."""

    def __init__(self, routes: list[_CompiledRoute]) -> None:
        self.routes = routes
        self._grouped = any(route.group is not None for route in routes)

    # The plain `def`s below return their callee's awaitable instead of awaiting it, so a
    # request passes through one coroutine per handler rather than three.
    def __call__(self, request: Request, next: Next) -> Awaitable[Response | StreamResponse]:
        return self._from(0, request, next, set() if self._grouped else _NO_GROUPS)

    def _from(self, index: int, request: Request, final: Next, chosen: set[str] | frozenset[str]) -> Awaitable[Response | StreamResponse]:
        view: RequestView | None = None
        routes = self.routes
        while index < len(routes):
            route = routes[index]
            index += 1
            if route.group is not None and route.group in chosen:
                continue
            if route.match is not None:
                if view is None:
                    view = _LazyRequestView(request)  # type: ignore[assignment]
                if not route.match(view):
                    continue
            if route.group is not None:
                chosen.add(route.group)  # type: ignore[union-attr]  # a grouped list chose into a set
            if route.terminal:
                rest = final
            else:
                after = index

                def rest(req: Request, _after: int = after) -> Awaitable[Response | StreamResponse]:
                    return self._from(_after, req, final, chosen)

            handlers = route.handlers
            if len(handlers) == 1:  # the usual route: its one handler continues with `rest`
                return handlers[0](request, rest)
            return _chain(handlers, 0, request, rest)
        return final(request)


def _chain(handlers: tuple[RuntimeHandler, ...], i: int, request: Request, last: Next) -> Awaitable[Response | StreamResponse]:
    if i == len(handlers):
        return last(request)
    if i + 1 == len(handlers):  # the route's last handler continues with `last` itself
        return handlers[i](request, last)

    def next_handler(req: Request) -> Awaitable[Response | StreamResponse]:
        return _chain(handlers, i + 1, req, last)

    return handlers[i](request, next_handler)


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
            # (a collapsed subroute is its one handler, which is registered already)
            lifecycle = hasattr(built, "start") and hasattr(built, "stop")
            if lifecycle and not any(built is known for known in self.lifecycle):
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
                _CompiledRoute(compile_sets(r.match), tuple(self.handler(h) for h in r.handle), r.group, r.terminal)
                for r in routes
            ]
        )

    def subroute(self, routes: tuple[Route, ...]) -> RuntimeHandler:
        """A nested route list. One route with no matcher, no group and one handler is
        that handler (its `next` is the subroute's `next` either way), so the common
        `route { durable_streams }` costs no route list at request time."""
        compiled = self.routes(routes)
        if len(compiled.routes) == 1:
            (only,) = compiled.routes
            if only.match is None and only.group is None and len(only.handlers) == 1:
                return only.handlers[0]
        return compiled
