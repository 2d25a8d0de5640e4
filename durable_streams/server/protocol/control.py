"""The reserved control routes under `{stream root}/__ds/` (PROTOCOL.md §6–7): HTTP in,
subscription calls out, JSON back. Routed before stream operations, so no application
stream can live in the reserved namespace.

The stream root is the request path up to its first `__ds` segment (`/v1/stream/` for
`/v1/stream/__ds/jwks.json`): the routes work under whatever prefix the Caddyfile mounts
the handler at, and paths in bodies are relative to that root."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

from ..http import Request, Response
from ..subscriptions.errors import SubscriptionError, invalid
from ..subscriptions.manager import SubscriptionManager
from ..subscriptions.model import SubscriptionConfig, check_id, relative_path
from .responses import plain

CONTROL_SEGMENT = "__ds"
MAX_CONTROL_BODY = 1 << 20
JWKS_CACHE = "public, max-age=300"
_ACTIONS = ("callback", "claim", "ack", "release")


def control_root(raw_path: str) -> str | None:
    """The stream root if `raw_path` is a control route, else None."""
    marker = "/" + CONTROL_SEGMENT
    at = raw_path.find(marker + "/")
    if at < 0:
        if not raw_path.endswith(marker):
            return None
        at = len(raw_path) - len(marker)
    return unquote(raw_path[: at + 1])


def _json(status: int, body: dict) -> Response:
    return plain(status, {"Content-Type": "application/json", "Cache-Control": "no-store"},
                 json.dumps(body, separators=(",", ":")).encode())


class ControlRoutes:
    def __init__(self, subscriptions: SubscriptionManager | None) -> None:
        self.subscriptions = subscriptions

    async def handle(self, request: Request, root: str, read_body) -> Response:
        try:
            return await self._route(request, root, read_body)
        except SubscriptionError as error:
            response = _json(error.status, error.body())
            allow = getattr(error, "allow", None)
            if allow:
                response.headers["Allow"] = allow  # RFC 9110 §15.5.6: a 405 names the allowed methods
            return response

    async def _route(self, request: Request, root: str, read_body) -> Response:
        manager = self.subscriptions
        raw = request.raw_path
        after = raw[raw.find("/" + CONTROL_SEGMENT) + len(CONTROL_SEGMENT) + 2:]  # past "/__ds/"
        segments = [unquote(part) for part in after.split("/")] if after else []
        if manager is None:
            raise SubscriptionError(404, "NOT_ENABLED",
                                    "subscriptions are not enabled on this server (the durable_streams "
                                    "block's `subscriptions` option)")
        method = request.method
        if segments == ["jwks.json"]:
            _allow(method, "GET", "HEAD")
            body = json.dumps(manager.keys.jwks(), separators=(",", ":")).encode()
            return plain(200, {"Content-Type": "application/jwk-set+json", "Cache-Control": JWKS_CACHE},
                         body if method == "GET" else b"")
        if len(segments) < 2 or segments[0] != "subscriptions":
            raise SubscriptionError(404, "NOT_FOUND", "no such control route")
        subscription_id = check_id(segments[1])
        tail = segments[2:]
        if not tail:
            if method == "PUT":
                config = SubscriptionConfig.parse(await _body(request, read_body))
                sub, created = await manager.create(root, subscription_id, config, _base_url(request, root))
                return _json(201 if created else 200, manager.describe(sub))
            if method == "GET":
                return _json(200, manager.describe(await manager.get(root, subscription_id)))
            if method == "DELETE":
                await manager.delete(root, subscription_id)
                return plain(204)
            raise _method_not_allowed("GET, PUT, DELETE")
        action = tail[0]
        if action == "streams":
            if len(tail) == 1:
                _allow(method, "POST")
                body = await _body(request, read_body)
                streams = body.get("streams") if isinstance(body, dict) else None
                if not isinstance(streams, list) or not streams:
                    raise invalid("the body must be {\"streams\": [<stream path>, ...]}")
                await manager.add_streams(root, subscription_id, [relative_path(s) for s in streams])
                return plain(204)
            _allow(method, "DELETE")
            path = "/".join(tail[1:])  # one %2F-encoded segment, or several
            await manager.remove_stream(root, subscription_id, relative_path(path))
            return plain(204)
        if action in _ACTIONS and len(tail) == 1:
            _allow(method, "POST")
            body = await _body(request, read_body, optional=True)
            if not isinstance(body, dict):
                raise invalid("the body must be a JSON object")
            if action == "claim":
                worker = body.get("worker", "worker")
                if not isinstance(worker, str) or not 0 < len(worker) <= 256:
                    raise invalid("worker must be a string of 1 to 256 characters")
                return _json(200, await manager.claim(root, subscription_id, worker))
            token = _bearer(request)
            if action == "release":
                await manager.release(root, subscription_id, token, body)
                return plain(204)
            finish = manager.callback if action == "callback" else manager.ack
            next_wake = await finish(root, subscription_id, token, body)
            return _json(200, {"ok": True, "next_wake": next_wake})
        raise SubscriptionError(404, "NOT_FOUND", "no such control route")


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _method_not_allowed(", ".join(allowed))


def _method_not_allowed(allowed: str) -> SubscriptionError:
    error = SubscriptionError(405, "METHOD_NOT_ALLOWED", f"allowed methods: {allowed}")
    error.allow = allowed
    return error


def _bearer(request: Request) -> str:
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SubscriptionError(401, "TOKEN_INVALID", "an Authorization: Bearer <token> header is required")
    return token.strip()


async def _body(request: Request, read_body, *, optional: bool = False):
    raw = await read_body(request, MAX_CONTROL_BODY)
    if not raw.strip():
        if optional:
            return {}
        raise invalid("a JSON body is required")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid("the body is not valid JSON") from None


_HOST = re.compile(r"[A-Za-z0-9\-._~%]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def _base_url(request: Request, root: str) -> str:
    """The absolute URL of the stream root as this request reached it."""
    host = request.headers.get("Host", "")
    if not _HOST.fullmatch(host):
        host = request.host
    return f"{request.scheme}://{host.lower()}{root}"
