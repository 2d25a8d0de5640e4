"""Request matchers: their Caddyfile forms, their config (JSON) form, and request-time evaluation.

Evaluation is pure: every matcher reads a `RequestView` (method, path, headers, host,
query, addresses), so the runtime and the tests use the same code. Semantics follow
Caddy's `http.matchers.*` modules: values inside one matcher are ORed, matchers inside a
set are ANDed, the sets of a route are ORed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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


# --------------------------------------------------------------------------- matchers


class Matcher:
    """Base: `kind` is the Caddy module name; `matches` evaluates; `config` is the JSON value."""

    kind = ""

    def matches(self, request: RequestView) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


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
    """The test for one path pattern, built once: config patterns are few and fixed, so
    the per-request work is only cleaning the request's path and one comparison."""
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


@dataclass(frozen=True, slots=True)
class PathMatcher(Matcher):
    patterns: tuple[str, ...]
    kind = "path"

    def matches(self, request: RequestView) -> bool:
        path = request.path
        for pattern in self.patterns:
            if _path_test(pattern)(path, request.raw_path if "%" in pattern else ""):
                return True
        return False

    def config(self) -> Any:
        return list(self.patterns)


@dataclass(frozen=True, slots=True)
class PathRegexpMatcher(Matcher):
    pattern: str
    name: str = ""
    kind = "path_regexp"

    def matches(self, request: RequestView) -> bool:
        return _compiled(self.pattern).search(request.path) is not None

    def config(self) -> Any:
        return {"name": self.name, "pattern": self.pattern} if self.name else {"pattern": self.pattern}


@dataclass(frozen=True, slots=True)
class MethodMatcher(Matcher):
    methods: tuple[str, ...]
    kind = "method"

    def matches(self, request: RequestView) -> bool:
        return request.method.upper() in self.methods

    def config(self) -> Any:
        return list(self.methods)


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


@dataclass(frozen=True, slots=True)
class HeaderMatcher(Matcher):
    """field -> allowed values. `None` = field must be absent; `()` = field must be present."""

    fields: tuple[tuple[str, tuple[str, ...] | None], ...]
    kind = "header"

    def matches(self, request: RequestView) -> bool:
        for name, allowed in self.fields:
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

    def config(self) -> Any:
        return {name: (None if allowed is None else list(allowed)) for name, allowed in self.fields}


@dataclass(frozen=True, slots=True)
class HeaderRegexpMatcher(Matcher):
    field: str
    pattern: str
    name: str = ""
    kind = "header_regexp"

    def matches(self, request: RequestView) -> bool:
        values = request.header_values(self.field) or []
        rx = _compiled(self.pattern)
        return any(rx.search(v) for v in values)

    def config(self) -> Any:
        body = {"pattern": self.pattern}
        if self.name:
            body["name"] = self.name
        return {self.field: body}


@dataclass(frozen=True, slots=True)
class HostMatcher(Matcher):
    hosts: tuple[str, ...]
    kind = "host"

    def matches(self, request: RequestView) -> bool:
        hostname = request.hostname
        for pattern in self.hosts:
            pattern = pattern.lower()
            if pattern == hostname:
                return True
            if "*" in pattern:
                # each '*' stands for exactly one label
                want = pattern.split(".")
                have = hostname.split(".")
                if len(want) == len(have) and all(w == "*" or w == h for w, h in zip(want, have)):
                    return True
        return False

    def config(self) -> Any:
        return list(self.hosts)


@dataclass(frozen=True, slots=True)
class QueryMatcher(Matcher):
    params: tuple[tuple[str, tuple[str, ...]], ...]
    kind = "query"

    def matches(self, request: RequestView) -> bool:
        if not self.params:
            return not any(True for _ in _items(request.query))
        for key, allowed in self.params:
            actual = request.query_values(key)
            if actual is None:
                return False
            if not any(a == "*" or a == v for a in allowed for v in actual):
                return False
        return True

    def config(self) -> Any:
        return {key: list(values) for key, values in self.params}


def _items(mapping: Any):
    return mapping.items() if hasattr(mapping, "items") else ()


PRIVATE_RANGES = (
    "192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "127.0.0.1/8",
    "fd00::/8", "::1",
)


def parse_ip_range(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        if "/" in text:
            return ipaddress.ip_network(text, strict=False)
        return ipaddress.ip_network(ipaddress.ip_address(text))
    except ValueError:
        raise MatcherError(f"invalid IP address: '{text}'" if "/" not in text else f"invalid CIDR: '{text}'") from None


def ip_in_ranges(ip_text: str, ranges: Sequence[str]) -> bool:
    try:
        ip = ipaddress.ip_address(strip_port(ip_text) if ip_text.count(":") <= 1 else ip_text.strip("[]"))
    except ValueError:
        return False
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    for text in ranges:
        net = parse_ip_range(text)
        if ip.version == net.version and ip in net:
            return True
    return False


@dataclass(frozen=True, slots=True)
class RemoteIPMatcher(Matcher):
    ranges: tuple[str, ...]
    kind = "remote_ip"

    def matches(self, request: RequestView) -> bool:
        return ip_in_ranges(request.remote_ip, self.ranges)

    def config(self) -> Any:
        return {"ranges": list(self.ranges)}


@dataclass(frozen=True, slots=True)
class ClientIPMatcher(Matcher):
    ranges: tuple[str, ...]
    kind = "client_ip"

    def matches(self, request: RequestView) -> bool:
        return ip_in_ranges(request.client_ip or request.remote_ip, self.ranges)

    def config(self) -> Any:
        return {"ranges": list(self.ranges)}


@dataclass(frozen=True, slots=True)
class ProtocolMatcher(Matcher):
    protocol: str
    kind = "protocol"

    def matches(self, request: RequestView) -> bool:
        proto = self.protocol.lower()
        major, minor = request.version
        if proto in ("http", "https"):
            return request.scheme == proto
        if proto == "grpc":
            return any(v.startswith("application/grpc") for v in (request.header_values("Content-Type") or []))
        if proto.startswith("http/"):
            wanted = proto[5:]
            at_least = wanted.endswith("+")
            wanted = wanted.rstrip("+")
            want_major, _, want_minor = wanted.partition(".")
            want = (int(want_major), int(want_minor or 0))
            return (major, minor) >= want if at_least else (major, minor) == want
        return False

    def config(self) -> Any:
        return self.protocol


@dataclass(frozen=True, slots=True)
class NotMatcher(Matcher):
    """Matches when none of its sets match: NOT (set1 OR set2 ...)."""

    sets: tuple["MatcherSet", ...]
    kind = "not"

    def matches(self, request: RequestView) -> bool:
        return not any(s.matches(request) for s in self.sets)

    def config(self) -> Any:
        return [s.config() for s in self.sets]


@dataclass(frozen=True, slots=True)
class MatcherSet:
    """Matchers ANDed together (one Caddy "matcher set")."""

    matchers: tuple[Matcher, ...] = ()

    def matches(self, request: RequestView) -> bool:
        for m in self.matchers:
            if not m.matches(request):
                return False
        return True

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in self.matchers:
            out[m.kind] = m.config()
        return out

    def single_path(self) -> str | None:
        """The one path pattern of this set, if it has exactly one (used for directive sorting)."""
        paths = [m for m in self.matchers if isinstance(m, PathMatcher)]
        if len(paths) == 1 and len(paths[0].patterns) == 1:
            return paths[0].patterns[0]
        return None


def sets_match(sets: Sequence[MatcherSet], request: RequestView) -> bool:
    """A route's matcher sets: no sets = match all; otherwise OR."""
    if not sets:
        return True
    for s in sets:
        if s.matches(request):
            return True
    return False


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    rx = _REGEX_CACHE.get(pattern)
    if rx is None:
        rx = _REGEX_CACHE[pattern] = re.compile(_go_regex_to_python(pattern))
    return rx


def _go_regex_to_python(pattern: str) -> str:
    # RE2 named groups `(?P<n>...)` are Python's too; `(?<n>...)` needs the P.
    return re.sub(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P<\1>", pattern)


def check_regex(pattern: str) -> None:
    try:
        re.compile(_go_regex_to_python(pattern))
    except re.error as exc:
        raise MatcherError(f"compiling matcher regexp {pattern}: {exc}") from None


class MatcherError(ValueError):
    """A matcher definition problem; the adapter adds the file:line."""
