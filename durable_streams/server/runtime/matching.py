"""Request matchers at request time: config matchers compiled into predicates.

`compile_sets` turns a route's config matcher sets into one `Predicate` when routes are
built (one table lookup per matcher, then never again), so a request runs plain
closures: no type dispatch, no pattern parsing, no regex or IP-range compilation.
Semantics follow Caddy's `http.matchers.*` modules: values inside one matcher are ORed,
matchers inside a set are ANDed, the sets of a route are ORed, no sets match everything.
Predicates read a `RequestView` (method, path, headers, host, query, addresses), so the
router's lazy view and the tests' plain one are evaluated by the same code.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config.matchers import (
    ClientIPMatcher,
    HeaderMatcher,
    HeaderRegexpMatcher,
    HostMatcher,
    Matcher,
    MatcherSet,
    MethodMatcher,
    NotMatcher,
    PathMatcher,
    PathRegexpMatcher,
    ProtocolMatcher,
    QueryMatcher,
    RemoteIPMatcher,
    go_regex_to_python,
    parse_ip_range,
)

# --------------------------------------------------------------------------- request view


class _MultiMapping(Protocol):
    def getall(self, key: str, default: Any = ...) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class RequestView:
    """What matchers may look at. `headers`/`query` need `getall` (multidict) or be dicts of lists."""

    method: str
    path: str  # unescaped path
    raw_path: str = ""  # escaped path as sent (for patterns containing '%')
    headers: Any = field(default_factory=dict)
    host: str = ""  # Host header value, may include a port
    query: Any = field(default_factory=dict)
    remote_ip: str = ""
    client_ip: str = ""
    scheme: str = "http"
    version: tuple[int, int] = (1, 1)

    def header_values(self, name: str) -> list[str] | None:
        if name.lower() == "host":
            return [self.host] if self.host else None
        return _getall(self.headers, name, fold_case=True)

    def query_values(self, name: str) -> list[str] | None:
        return _getall(self.query, name, fold_case=False)

    @property
    def hostname(self) -> str:
        return strip_port(self.host).lower()


def _getall(mapping: Any, name: str, *, fold_case: bool) -> list[str] | None:
    getall = getattr(mapping, "getall", None)
    if getall is not None:
        values = getall(name, None)
        return list(values) if values else None
    for key, values in mapping.items():
        if key == name or (fold_case and key.lower() == name.lower()):
            return [values] if isinstance(values, str) else list(values)
    return None


def strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


# --------------------------------------------------------------------------- compiling

Predicate = Callable[[RequestView], bool]
_COMPILERS: dict[type, Callable[[Any], Predicate]] = {}


def _compiles(kind: type) -> Callable[[Callable[[Any], Predicate]], Callable[[Any], Predicate]]:
    def register(build: Callable[[Any], Predicate]) -> Callable[[Any], Predicate]:
        _COMPILERS[kind] = build
        return build

    return register


def compile_matcher(matcher: Matcher | MatcherSet) -> Predicate:
    """The predicate of one config matcher (or matcher set); run when routes are built."""
    build = _COMPILERS.get(type(matcher))
    if build is None:
        raise TypeError(f"no request-time evaluation for {type(matcher).__name__}")
    return build(matcher)


def compile_sets(sets: Sequence[MatcherSet]) -> Predicate | None:
    """A route's matcher sets as one predicate (ORed); None when there are none (match all)."""
    if not sets:
        return None
    tests = tuple(compile_set(s) for s in sets)
    if len(tests) == 1:
        return tests[0]

    def any_set(request: RequestView) -> bool:
        for test in tests:
            if test(request):
                return True
        return False

    return any_set


@_compiles(MatcherSet)
def compile_set(matcher_set: MatcherSet) -> Predicate:
    tests = tuple(compile_matcher(m) for m in matcher_set.matchers)
    if len(tests) == 1:
        return tests[0]

    def all_matchers(request: RequestView) -> bool:
        for test in tests:
            if not test(request):
                return False
        return True

    return all_matchers


def matches(matcher: Matcher | MatcherSet, request: RequestView) -> bool:
    """One-off evaluation (compiles each call): for tests and tools, not the request path."""
    return compile_matcher(matcher)(request)


def sets_match(sets: Sequence[MatcherSet], request: RequestView) -> bool:
    """A route's matcher sets: no sets = match all; otherwise OR. One-off, like `matches`."""
    test = compile_sets(sets)
    return test is None or test(request)


# --------------------------------------------------------------------------- path


def _clean_path(path: str, merge_slashes: bool) -> str:
    """Caddy's CleanPath: resolve dot segments (and merge slashes unless asked not to)."""
    if not path:
        return path
    if "//" not in path and "/." not in path and not path.startswith("."):
        return path  # no empty or dot segments: already clean (the common case)
    trailing = path.endswith("/")
    parts = path.split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        if part == "." or (merge_slashes and part == "" and 0 < i):
            continue
        if part == "..":
            if len(out) > 1:
                out.pop()
            continue
        out.append(part)
    cleaned = "/".join(out)
    if path.startswith("/") and not cleaned.startswith("/"):
        cleaned = "/" + cleaned
    if trailing and not cleaned.endswith("/"):
        cleaned += "/"
    return cleaned or "/"


def _glob_regex(pattern: str) -> re.Pattern[str] | None:
    """Go's path.Match as a regex: `*`/`?` never cross '/'. None if the pattern is malformed."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                return None
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error:
        return None


def path_pattern_matches(pattern: str, request_path: str, raw_path: str = "") -> bool:
    return _path_test(pattern)(request_path, raw_path)


PathTest = Callable[[str, str], bool]  # (unescaped path, raw path) -> matches
_PATH_TESTS: dict[str, PathTest] = {}


def _path_test(pattern: str) -> PathTest:
    """The test for one path pattern, built once per pattern (config patterns are few and
    fixed): the per-request work is only cleaning the request's path and one comparison."""
    test = _PATH_TESTS.get(pattern)
    if test is None:
        test = _PATH_TESTS[pattern] = _build_path_test(pattern.lower())
    return test


def _build_path_test(pattern: str) -> PathTest:
    if pattern == "*":
        return lambda path, raw: True
    merge = "//" not in pattern
    if "%" in pattern:
        rx = _glob_regex(pattern)
        return lambda path, raw: bool(rx and rx.fullmatch(_clean_path((raw or path).lower(), merge)))
    stars = pattern.count("*")
    if stars == 2 and pattern.startswith("*") and pattern.endswith("*") and len(pattern) > 1:
        middle = pattern[1:-1]
        return lambda path, raw: middle in _clean_path(path.lower(), merge)
    if stars == 1 and pattern.startswith("*"):
        suffix = pattern[1:]
        return lambda path, raw: _clean_path(path.lower(), merge).endswith(suffix)
    if stars == 1 and pattern.endswith("*"):
        prefix = pattern[:-1]
        return lambda path, raw: _clean_path(path.lower(), merge).startswith(prefix)
    rx = _glob_regex(pattern)
    return lambda path, raw: bool(rx and rx.fullmatch(_clean_path(path.lower(), merge)))


@_compiles(PathMatcher)
def _path(m: PathMatcher) -> Predicate:
    # (test, reads the raw path): only patterns with '%' compare the escaped path
    tests = tuple((_path_test(p), "%" in p) for p in m.patterns)

    def path(request: RequestView) -> bool:
        path = request.path
        for test, raw in tests:
            if test(path, request.raw_path if raw else ""):
                return True
        return False

    return path


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    rx = _REGEX_CACHE.get(pattern)
    if rx is None:
        rx = _REGEX_CACHE[pattern] = re.compile(go_regex_to_python(pattern))
    return rx


@_compiles(PathRegexpMatcher)
def _path_regexp(m: PathRegexpMatcher) -> Predicate:
    search = _compiled(m.pattern).search
    return lambda request: search(request.path) is not None


# --------------------------------------------------------------------------- method, headers, query


@_compiles(MethodMatcher)
def _method(m: MethodMatcher) -> Predicate:
    methods = m.methods
    return lambda request: request.method.upper() in methods


def _wildcard_value_matches(allowed: str, actual: str) -> bool:
    if allowed == "*":
        return True
    if len(allowed) > 1 and allowed.startswith("*") and allowed.endswith("*"):
        return allowed[1:-1] in actual
    if allowed.startswith("*"):
        return actual.endswith(allowed[1:])
    if allowed.endswith("*"):
        return actual.startswith(allowed[:-1])
    return actual == allowed


@_compiles(HeaderMatcher)
def _header(m: HeaderMatcher) -> Predicate:
    fields = m.fields

    def header(request: RequestView) -> bool:
        for name, allowed in fields:
            actual = request.header_values(name)
            if allowed is None:
                if actual is not None:
                    return False
                continue
            if not allowed:
                if actual is None:
                    return False
                continue
            if not actual or not any(_wildcard_value_matches(a, v) for v in actual for a in allowed):
                return False
        return True

    return header


@_compiles(HeaderRegexpMatcher)
def _header_regexp(m: HeaderRegexpMatcher) -> Predicate:
    name = m.field
    search = _compiled(m.pattern).search
    return lambda request: any(search(v) for v in request.header_values(name) or [])


@_compiles(QueryMatcher)
def _query(m: QueryMatcher) -> Predicate:
    params = m.params
    if not params:
        return lambda request: not any(True for _ in _items(request.query))

    def query(request: RequestView) -> bool:
        for key, allowed in params:
            actual = request.query_values(key)
            if actual is None:
                return False
            if not any(a == "*" or a == v for a in allowed for v in actual):
                return False
        return True

    return query


def _items(mapping: Any):
    return mapping.items() if hasattr(mapping, "items") else ()


# --------------------------------------------------------------------------- host


def host_test(hosts: Sequence[str]) -> Callable[[str], bool]:
    """Does a hostname (lower case, no port) match one of `hosts`? `*` is one label."""
    exact = frozenset(h.lower() for h in hosts)
    wildcards = tuple(h.split(".") for h in sorted(exact) if "*" in h)

    def matches_host(hostname: str) -> bool:
        if hostname in exact:
            return True
        if wildcards:
            have = hostname.split(".")
            for want in wildcards:
                if len(want) == len(have) and all(w == "*" or w == h for w, h in zip(want, have)):
                    return True
        return False

    return matches_host


HOST_ANSWERS_KEPT = 1024  # Host header values whose answer a host matcher remembers


@_compiles(HostMatcher)
def _host(m: HostMatcher) -> Predicate:
    test = host_test(m.hosts)
    # Clients send few distinct Host values, so the answer is remembered by the value as
    # sent (`hostname` is a function of it), up to a bound a client cannot push past.
    answers: dict[str, bool] = {}

    def host(request: RequestView) -> bool:
        sent = request.host
        answer = answers.get(sent)
        if answer is None:
            answer = test(request.hostname)
            if len(answers) < HOST_ANSWERS_KEPT:
                answers[sent] = answer
        return answer

    return host


# --------------------------------------------------------------------------- addresses, protocol

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip_in_networks(ip_text: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(strip_port(ip_text) if ip_text.count(":") <= 1 else ip_text.strip("[]"))
    except ValueError:
        return False
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    for net in networks:
        if ip.version == net.version and ip in net:
            return True
    return False


def ip_in_ranges(ip_text: str, ranges: Sequence[str]) -> bool:
    """Is the address (an IP, maybe with a port) inside one of the ranges (IPs or CIDRs)?"""
    return _ip_in_networks(ip_text, [parse_ip_range(text) for text in ranges])


@_compiles(RemoteIPMatcher)
def _remote_ip(m: RemoteIPMatcher) -> Predicate:
    networks = tuple(parse_ip_range(text) for text in m.ranges)
    return lambda request: _ip_in_networks(request.remote_ip, networks)


@_compiles(ClientIPMatcher)
def _client_ip(m: ClientIPMatcher) -> Predicate:
    networks = tuple(parse_ip_range(text) for text in m.ranges)
    return lambda request: _ip_in_networks(request.client_ip or request.remote_ip, networks)


@_compiles(ProtocolMatcher)
def _protocol(m: ProtocolMatcher) -> Predicate:
    proto = m.protocol.lower()
    if proto in ("http", "https"):
        return lambda request: request.scheme == proto
    if proto == "grpc":
        return lambda request: any(
            v.startswith("application/grpc") for v in (request.header_values("Content-Type") or [])
        )
    if proto.startswith("http/"):
        wanted = proto[5:]
        at_least = wanted.endswith("+")
        want_major, _, want_minor = wanted.rstrip("+").partition(".")
        want = (int(want_major), int(want_minor or 0))

        def http_version(request: RequestView) -> bool:
            major, minor = request.version
            return (major, minor) >= want if at_least else (major, minor) == want

        return http_version
    return lambda request: False


# --------------------------------------------------------------------------- not


@_compiles(NotMatcher)
def _not(m: NotMatcher) -> Predicate:
    tests = tuple(compile_set(s) for s in m.sets)
    return lambda request: not any(test(request) for test in tests)
