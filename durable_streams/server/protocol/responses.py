"""Headers every response carries, and the plain (non-streaming) response builder.
Header values are set raw: clients compare Content-Type byte for byte."""

from __future__ import annotations

from multidict import CIMultiDict

from ..http import Response

ALLOWED_METHODS = "GET, POST, PUT, DELETE, HEAD, OPTIONS"
_CORS_ALLOW_HEADERS = ", ".join([
    "Content-Type", "Authorization", "If-None-Match", "Stream-Seq", "Stream-TTL",
    "Stream-Expires-At", "Stream-Closed", "Producer-Id", "Producer-Epoch", "Producer-Seq",
    "Stream-Forked-From", "Stream-Fork-Offset", "Stream-Fork-Sub-Offset",
])
_CORS_EXPOSE_HEADERS = ", ".join([
    "Stream-Next-Offset", "Stream-Cursor", "Stream-Up-To-Date", "Stream-Closed",
    "Stream-TTL", "Stream-Expires-At", "Stream-SSE-Data-Encoding", "ETag", "Location",
    "Content-Type", "Producer-Epoch", "Producer-Seq", "Producer-Expected-Seq",
    "Producer-Received-Seq", "Stream-Earliest-Offset",
])

# Browser defence in depth (PROTOCOL "Browser Security Headers") plus permissive CORS:
# authorisation, if any, is the job of the surrounding server configuration.
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": _CORS_EXPOSE_HEADERS,
}

PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": ALLOWED_METHODS,
    "Access-Control-Allow-Headers": _CORS_ALLOW_HEADERS,
    "Access-Control-Max-Age": "86400",
}


# Copied into every response: copying a multidict skips folding the names' case again.
_COMMON_FIELDS = CIMultiDict(COMMON_HEADERS)


def common_fields(headers: dict[str, str]) -> CIMultiDict[str]:
    """The fields `plain` would send with `headers`, to copy into many responses."""
    fields = _COMMON_FIELDS.copy()
    fields.update(headers)
    return fields


def plain(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
    # Merged case-insensitively, so any spelling of a name replaces the default.
    response = Response(status=status, body=body, headers=_COMMON_FIELDS)
    if headers:
        response.headers.update(headers)
    if not body and status in (204, 304):
        response.headers.pop("Content-Type", None)
    return response
