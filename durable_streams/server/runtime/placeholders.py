"""Caddy request placeholders (`{http.request.*}`) for respond bodies, header values, redirects.

Only placeholders that describe the request are known; anything else is left as written
(`known_only`, Caddy's ReplaceKnown) or replaced by "" (Caddy's ReplaceAll).
"""

from __future__ import annotations

import re

from ..http import Request
from .context import context_of

_PLACEHOLDER = re.compile(r"\{([a-zA-Z0-9_.\-]+)\}")


def _lookup(name: str, request: Request) -> str | None:
    if not name.startswith("http."):
        return None
    key = name[5:]
    host = request.host or ""
    hostname, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    simple = {
        "request.host": hostname,
        "request.hostport": host,
        "request.port": port,
        "request.method": request.method,
        "request.scheme": request.scheme,
        "request.uri": request.path_qs,
        "request.uri.path": request.path,
        "request.uri.query": request.query_string,
        "request.remote": f"{request.remote}",
        "request.remote.host": request.remote or "",
        "request.proto": f"HTTP/{request.version.major}.{request.version.minor}",
        "vars.client_ip": context_of(request).client_ip or request.remote or "",
    }
    if key in simple:
        return simple[key]
    if key.startswith("request.header."):
        return ",".join(request.headers.getall(key[len("request.header."):], []))
    if key.startswith("request.uri.query."):
        return request.query.get(key[len("request.uri.query."):], "")
    return None


def replace_placeholders(text: str, request: Request, *, known_only: bool) -> str:
    if "{" not in text:
        return text

    def sub(m: re.Match[str]) -> str:
        value = _lookup(m.group(1), request)
        if value is None:
            return m.group(0) if known_only else ""
        return value

    return _PLACEHOLDER.sub(sub, text)
