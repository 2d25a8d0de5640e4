"""The machinery shared by all directive families (Caddy's httpcaddyfile.Helper, in Python).

A directive function reads one `Directive` (a segment of the syntax tree) and returns
config values: routes for handler directives, or site settings (`bind`, `tls`, `log`).
Handler directives get Caddy's matcher-token handling for free via `handler_directive`.
Sub-blocks (`route`, `handle`, `handle_path`) are parsed with `parse_block`, and the
handler routes of a block are ordered and grouped by `build_subroute`, like Caddy does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ...caddyfile.tree import Directive, Token
from ..errors import AdaptError, arg_error, at
from ..matcher_defs import collect_matcher_definitions
from ..matchers import MatcherSet, PathMatcher
from ..model import Handler, Route, Subroute

# Caddy 2.11's defaultDirectiveOrder: handler directives at site level and inside
# handle/handle_path are sorted by this list; `route` keeps the file order.
DEFAULT_ORDER: tuple[str, ...] = (
    "tracing", "map", "vars", "fs", "root", "log_append", "skip_log", "log_skip", "log_name",
    "header", "copy_response_headers", "request_body", "timeouts", "redir", "method",
    "rewrite", "uri", "try_files", "basicauth", "basic_auth", "forward_auth",
    "request_header", "encode", "push", "intercept", "templates", "invoke", "handle",
    "handle_path", "route", "abort", "error", "copy_response", "respond", "metrics",
    "reverse_proxy", "php_fastcgi", "file_server", "acme_server",
)

# Every directive real Caddy 2.11 (+ the durable_streams plugin) registers. A site key
# equal to one of these is a misplaced directive; `order` may only name these.
CADDY_DIRECTIVES: frozenset[str] = frozenset(
    DEFAULT_ORDER
    + ("bind", "tls", "log", "handle_errors", "durable_streams")
)


@dataclass
class Value:
    """One result of a directive (Caddy's ConfigValue). `kind` is its class: route, bind, tls, log."""

    kind: str
    value: Any
    directive: str = ""
    token: Token | None = None  # the site-level directive name that produced it (for messages)


class GroupCounter:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> str:
        name = f"group{self.n}"
        self.n += 1
        return name


@dataclass
class Scope:
    """What a directive may consult: matcher definitions in scope, global options, warnings."""

    matcher_defs: dict[str, MatcherSet]
    order: list[str]
    warnings: list[str]
    groups: GroupCounter
    options: dict[str, Any] = field(default_factory=dict)

    def child(self, matcher_defs: dict[str, MatcherSet]) -> "Scope":
        return replace(self, matcher_defs=matcher_defs)

    def warn(self, token: Token, message: str) -> None:
        self.warnings.append(f"{token.file}:{token.line}: {message}")


DirectiveFunc = Callable[[Directive, Scope], list[Value]]
HandlerFunc = Callable[[Directive, list[Token], Scope], Handler | list[Handler] | None]

# name -> function, filled by the family modules (site.py, durable_streams.py, ...).
DIRECTIVES: dict[str, DirectiveFunc] = {}
HANDLER_DIRECTIVES: set[str] = set()


def directive(name: str) -> Callable[[DirectiveFunc], DirectiveFunc]:
    def register(fn: DirectiveFunc) -> DirectiveFunc:
        DIRECTIVES[name] = fn
        return fn

    return register


def handler_directive(name: str) -> Callable[[HandlerFunc], HandlerFunc]:
    """Register a handler directive: its first argument may be a matcher token."""

    def register(fn: HandlerFunc) -> HandlerFunc:
        def run(d: Directive, scope: Scope) -> list[Value]:
            matcher, args = extract_matcher(d, scope)
            handlers = fn(d, args, scope)
            if handlers is None:
                return []
            if isinstance(handlers, Handler):
                handlers = [handlers]
            match = () if matcher is None else (matcher,)
            return [Value("route", Route(match=match, handle=(h,))) for h in handlers]

        DIRECTIVES[name] = run
        HANDLER_DIRECTIVES.add(name)
        return fn

    return register


# --------------------------------------------------------------------------- matcher tokens


def is_matcher_token(token: Token) -> bool:
    return token.text == "*" or token.text.startswith("/") or token.text.startswith("@")


def extract_matcher(d: Directive, scope: Scope) -> tuple[MatcherSet | None, list[Token]]:
    """Caddy's ExtractMatcherSet: consume a leading `*`, `/path` or `@name` argument."""
    args = list(d.args)
    if not args or not is_matcher_token(args[0]):
        return None, args
    token = args.pop(0)
    if token.text == "*":
        return None, args
    if token.text.startswith("/"):
        return MatcherSet((PathMatcher((token.text,)),)), args
    found = scope.matcher_defs.get(token.text)
    if found is None:
        raise AdaptError(f"unrecognized matcher name: {token.text}", token.file, token.line)
    return found, args


# --------------------------------------------------------------------------- blocks


def block_end(d: Directive) -> Token:
    """The block's closing brace: Caddy's dispenser sits there when it reports nested errors."""
    if d.block_close is not None:
        return d.block_close
    # trees built without brace tokens: the line after the block's last token
    return Token("}", d.name.file, _last_line(d) + 1, None, d.name.import_chain)


def _last_line(d: Directive) -> int:
    line = max([d.name.line, *(t.line + t.text.count("\n") for t in d.args)])
    for child in d.block or ():
        line = max(line, _last_line(child))
    for t in d.after:
        line = max(line, t.line)
    return line


def parse_block(d: Directive, args: list[Token], scope: Scope) -> list[Value]:
    """Caddy's parseSegmentAsConfig: each line of d's block is itself a directive."""
    if args:
        raise arg_error(args[0])
    end = block_end(d)
    lines = list(d.block or ())
    defs = dict(scope.matcher_defs)
    collect_matcher_definitions([x for x in lines if x.name.text.startswith("@")], defs)
    inner = scope.child(defs)
    results: list[Value] = []
    for line in lines:
        name = line.name.text
        if name.startswith("@"):
            continue
        fn = lookup_directive(line, nested=True, end=end)
        try:
            values = fn(line, inner)
        except AdaptError as exc:
            raise AdaptError(f"parsing caddyfile tokens for '{name}': {exc.text}{at(end)}", exc.file, exc.line) from None
        for value in values:
            value.directive = normalize_directive_name(name)
            results.append(value)
    return results


def lookup_directive(d: Directive, *, nested: bool, end: Token | None = None, braces: bool = True) -> DirectiveFunc:
    """Find a directive's function; unknown or unsupported ones raise Caddy-shaped errors."""
    from . import policy

    name = d.name.text
    fn = DIRECTIVES.get(name)
    if fn is not None:
        return fn
    reason = policy.REJECTED_DIRECTIVES.get(name)
    if nested:
        where = end or d.name
        if reason:
            raise AdaptError(f"unsupported directive: {name} - {reason}{at(where)}", d.file, d.line)
        raise AdaptError(
            f"unrecognized directive: {name} - are you sure your Caddyfile structure (nesting and braces) is correct?{at(where)}",
            d.file,
            d.line,
        )
    if reason:
        raise AdaptError(f"{d.file}:{d.line}: unsupported directive: {name} - {reason}", d.file, d.line)
    hint = "" if braces else (
        "\nDid you mean to define a second site? If so, you must use curly braces around each site"
        " to separate their configurations."
    )
    raise AdaptError(f"{d.file}:{d.line}: unrecognized directive: {name}{hint}", d.file, d.line)


def normalize_directive_name(name: str) -> str:
    # handle_path sorts and groups with handle (Caddy does the same rename)
    return "handle" if name == "handle_path" else name


# --------------------------------------------------------------------------- subroutes

def build_subroute(values: list[Value], scope: Scope, *, sort: bool) -> Subroute:
    """Caddy's buildSubroute: validate/sort by directive order, group `handle`s, consolidate.

    At site level the caller passes only the route values; inside handle/handle_path every
    value is passed, so a non-handler (e.g. `tls`) fails the ordered-handler check as in Caddy.
    """
    if sort:
        for v in values:
            if v.directive not in scope.order:
                raise AdaptError(
                    f"directive '{v.directive}' is not an ordered HTTP handler, so it cannot be used here"
                    " - try placing within a route block or using the order global option"
                )
        values = sort_routes(values, scope.order)
    # Caddy names groups in sorted key order (handle, rewrite, root) and always spends a
    # name on rewrite; doing the same keeps `adapt` output's group names equal to Caddy's.
    handle_count = sum(1 for v in values if v.directive == "handle")
    handle_group = scope.groups.next() if handle_count > 1 else None
    scope.groups.next()  # rewrite's group name
    routes: list[Route] = []
    for v in values:
        route: Route = v.value
        if v.directive == "handle":
            route = replace(route, group=handle_group)
        routes.append(route)
    return Subroute(routes=tuple(consolidate(routes)))


def consolidate(routes: list[Route]) -> list[Route]:
    """Merge neighbours with identical matchers/group/terminal into one route."""
    out: list[Route] = []
    for route in routes:
        prev = out[-1] if out else None
        if prev is not None and prev.match == route.match and prev.group == route.group and prev.terminal == route.terminal:
            out[-1] = replace(prev, handle=prev.handle + route.handle)
        else:
            out.append(route)
    return out


def sort_routes(values: list[Value], order: list[str]) -> list[Value]:
    """Stable sort by directive order; same directive: most specific single path first."""
    position = {name: i for i, name in enumerate(order)}

    def single_path(v: Value) -> str | None:
        route: Route = v.value
        if len(route.match) == 1:
            return route.match[0].single_path()
        return None

    def less(a: Value, b: Value) -> bool:
        if a.directive != b.directive:
            return position[a.directive] < position[b.directive]
        pa, pb = single_path(a), single_path(b)
        if pa and pb:
            ta, tb = pa.removesuffix("*"), pb.removesuffix("*")
            if ta == tb:
                result = len(pa) < len(pb)
            elif len(ta) == len(tb):
                result = ta < tb
            else:
                result = len(ta) > len(tb)
        else:
            result = bool(a.value.match) and not b.value.match
        return (not result) if a.directive == "vars" else result

    # insertion sort keeps it stable with a pairwise "less" (lists are short)
    out: list[Value] = []
    for v in values:
        i = len(out)
        while i > 0 and less(v, out[i - 1]):
            i -= 1
        out.insert(i, v)
    return out


# --------------------------------------------------------------------------- args and placeholders

# Caddy's placeholder shorthands (shorthands.go), rewritten in every token we keep.
_SHORTHANDS = {
    "{host}": "{http.request.host}",
    "{hostport}": "{http.request.hostport}",
    "{port}": "{http.request.port}",
    "{method}": "{http.request.method}",
    "{path}": "{http.request.uri.path}",
    "{query}": "{http.request.uri.query}",
    "{remote}": "{http.request.remote}",
    "{remote_host}": "{http.request.remote.host}",
    "{remote_port}": "{http.request.remote.port}",
    "{scheme}": "{http.request.scheme}",
    "{uri}": "{http.request.uri}",
    "{uuid}": "{http.request.uuid}",
    "{tls_cipher}": "{http.request.tls.cipher_suite}",
    "{tls_version}": "{http.request.tls.version}",
    "{client_ip}": "{http.vars.client_ip}",
}
_SHORTHAND_PREFIXES = (
    (re.compile(r"\{header\.([\w-]+)\}"), r"{http.request.header.\1}"),
    (re.compile(r"\{query\.([\w.-]+)\}"), r"{http.request.uri.query.\1}"),
    (re.compile(r"\{cookie\.([\w.-]+)\}"), r"{http.request.cookie.\1}"),
    (re.compile(r"\{labels\.([\w.-]+)\}"), r"{http.request.host.labels.\1}"),
    (re.compile(r"\{path\.([\w.-]+)\}"), r"{http.request.uri.path.\1}"),
    (re.compile(r"\{re\.([\w.-]+)\}"), r"{http.regexp.\1}"),
    (re.compile(r"\{vars\.([\w.-]+)\}"), r"{http.vars.\1}"),
)


def expand_shorthands(text: str) -> str:
    for short, long in _SHORTHANDS.items():
        text = text.replace(short, long)
    for rx, repl in _SHORTHAND_PREFIXES:
        text = rx.sub(repl, text)
    return text


def all_args(line: Directive, count: int) -> tuple[Token, ...]:
    """Caddy's `d.AllArgs(...)`: exactly `count` arguments; the error names the last token
    read (the final argument when short, the last wanted one when there are too many)."""
    if len(line.args) < count:
        raise arg_error(line.args[-1] if line.args else line.name)
    if len(line.args) > count:
        raise arg_error(line.args[count - 1] if count else line.name)
    return line.args
