"""`POST /reload` on the admin address: our extension, used by `durable-streams-server reload`.

Caddy's `reload` command adapts the config locally and POSTs it to its admin API. We have
no config API, so the body names a Caddyfile instead: `{"config": "/abs/path/Caddyfile"}`.
The server performs the same reload as SIGHUP from that file and answers 200
`{"status": "reloaded"}`, or 400 `{"error": "..."}` when the reload is refused (the running
configuration stays). As on Caddy's admin API, a request must name the admin address in
its Host header (and in Origin/Referer when a browser sends one), so that a web page cannot
reach it through DNS rebinding or a cross-site form.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from ..config.addresses import ListenAddress, join_host_port
from ..http import Request, Response, json_response
from ..ops.health import NO_STORE, method_not_allowed

RELOAD_PATH = "/reload"

# Reloads from the given absolute path; returns the error message, or None when reloaded.
Reloader = Callable[[str], Awaitable[str | None]]


def allowed_hosts(address: ListenAddress, port: int) -> frozenset[str] | None:
    """Host header values that name the admin address; None where Caddy does not check
    the Host (unix sockets, wildcard interfaces)."""
    if address.network == "unix" or address.host in ("", "0.0.0.0", "::"):
        return None
    if _is_loopback(address.host):
        return frozenset(join_host_port(host, port) for host in ("localhost", "127.0.0.1", "::1"))
    return frozenset({join_host_port(address.host, port)})


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refusal(request: Request, address: ListenAddress) -> str | None:
    """Why the request is not addressed to the admin endpoint itself, or None."""
    port = request.local_port or address.port
    allowed = allowed_hosts(address, port)
    if allowed is not None and request.host not in allowed:
        return f"host not allowed: {request.host}"
    # browsers always send one of these; a page from another origin is refused
    if "Origin" in request.headers or "Sec-Fetch-Mode" in request.headers:
        origin = request.headers.get("Origin") or request.headers.get("Referer") or ""
        if not allowed or urlsplit(origin).netloc not in allowed:
            return f"client is not allowed to access from origin '{origin}'"
    return None


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status=status, headers=NO_STORE)


def reload_handler(address: ListenAddress, reload: Reloader) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        refused = _refusal(request, address)
        if refused:
            return _error(403, refused)
        if request.method != "POST":
            return method_not_allowed("POST")
        try:
            body = await request.json()
        except ValueError:  # also undecodable bytes
            return _error(400, 'request body must be JSON: {"config": "/absolute/path/to/Caddyfile"}')
        path = body.get("config") if isinstance(body, dict) else None
        if not isinstance(path, str) or not os.path.isabs(path):
            return _error(400, '"config" must be the absolute path of a Caddyfile')
        error = await reload(path)
        if error is not None:
            return _error(400, error)
        return json_response({"status": "reloaded"}, headers=NO_STORE)

    return handle

