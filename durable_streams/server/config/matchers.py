"""Request matchers as configuration: what each matcher says, and its Caddy JSON form.

Frozen data only. Each class is one Caddy `http.matchers.*` module: `kind` is its module
name and `config()` its JSON value (what `adapt` prints). Inputs are validated when the
config is loaded (`parse_ip_range`, `check_regex` raise `MatcherError`), so a loaded
config always compiles. Evaluating matchers against a request is the runtime's
(`runtime/matching.py`); this module knows nothing of requests.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any


class Matcher:
    """Base: `kind` is the Caddy module name; `config` is the JSON value."""

    kind = ""

    def config(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class PathMatcher(Matcher):
    patterns: tuple[str, ...]
    kind = "path"

    def config(self) -> Any:
        return list(self.patterns)


@dataclass(frozen=True, slots=True)
class PathRegexpMatcher(Matcher):
    pattern: str
    name: str = ""
    kind = "path_regexp"

    def config(self) -> Any:
        return {"name": self.name, "pattern": self.pattern} if self.name else {"pattern": self.pattern}


@dataclass(frozen=True, slots=True)
class MethodMatcher(Matcher):
    methods: tuple[str, ...]
    kind = "method"

    def config(self) -> Any:
        return list(self.methods)


@dataclass(frozen=True, slots=True)
class HeaderMatcher(Matcher):
    """field -> allowed values. `None` = field must be absent; `()` = field must be present."""

    fields: tuple[tuple[str, tuple[str, ...] | None], ...]
    kind = "header"

    def config(self) -> Any:
        return {name: (None if allowed is None else list(allowed)) for name, allowed in self.fields}


@dataclass(frozen=True, slots=True)
class HeaderRegexpMatcher(Matcher):
    field: str
    pattern: str
    name: str = ""
    kind = "header_regexp"

    def config(self) -> Any:
        body = {"pattern": self.pattern}
        if self.name:
            body["name"] = self.name
        return {self.field: body}


@dataclass(frozen=True, slots=True)
class HostMatcher(Matcher):
    hosts: tuple[str, ...]
    kind = "host"

    def config(self) -> Any:
        return list(self.hosts)


@dataclass(frozen=True, slots=True)
class QueryMatcher(Matcher):
    params: tuple[tuple[str, tuple[str, ...]], ...]
    kind = "query"

    def config(self) -> Any:
        return {key: list(values) for key, values in self.params}


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


@dataclass(frozen=True, slots=True)
class RemoteIPMatcher(Matcher):
    ranges: tuple[str, ...]
    kind = "remote_ip"

    def config(self) -> Any:
        return {"ranges": list(self.ranges)}


@dataclass(frozen=True, slots=True)
class ClientIPMatcher(Matcher):
    ranges: tuple[str, ...]
    kind = "client_ip"

    def config(self) -> Any:
        return {"ranges": list(self.ranges)}


@dataclass(frozen=True, slots=True)
class ProtocolMatcher(Matcher):
    protocol: str
    kind = "protocol"

    def config(self) -> Any:
        return self.protocol


@dataclass(frozen=True, slots=True)
class NotMatcher(Matcher):
    """Matches when none of its sets match: NOT (set1 OR set2 ...)."""

    sets: tuple["MatcherSet", ...]
    kind = "not"

    def config(self) -> Any:
        return [s.config() for s in self.sets]


@dataclass(frozen=True, slots=True)
class MatcherSet:
    """Matchers ANDed together (one Caddy "matcher set"); a route's sets are ORed."""

    matchers: tuple[Matcher, ...] = ()

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


def go_regex_to_python(pattern: str) -> str:
    # RE2 named groups `(?P<n>...)` are Python's too; `(?<n>...)` needs the P.
    return re.sub(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P<\1>", pattern)


def check_regex(pattern: str) -> None:
    try:
        re.compile(go_regex_to_python(pattern))
    except re.error as exc:
        raise MatcherError(f"compiling matcher regexp {pattern}: {exc}") from None


class MatcherError(ValueError):
    """A matcher definition problem; the adapter adds the file:line."""
