"""Access log lines (the site `log` directive): one structured line per request.

Fields: method, uri, status, size (response bytes), duration (seconds), remote_ip,
client_ip, host, proto and user_id (who `basic_auth` let in). Secrets stay out: no
request header is logged (so never Authorization, Cookie or Proxy-Authorization), the
uri is the request target without scheme, host or userinfo, and the values of query
parameters whose names look like credentials are replaced by "REDACTED".
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, unquote_plus

from ..http import Request, Response, StreamResponse
from .context import CONTEXT_KEY

log = logging.getLogger("durable_streams.server.access")

REDACTED = "REDACTED"
# parameter names that carry credentials in the wild (?token=, ?api_key=, ?X-Amz-Signature=, ...)
_SECRET_PARAM = re.compile(
    r"(token|secret|passw|pwd|api[-_]?key|apikey|access[-_]?key|auth|credential|signature|sig|session|jwt|code)",
    re.IGNORECASE,
)


def loggable_uri(request: Request) -> str:
    """The request target as it may be logged: path (as sent) + query with secrets redacted.
    An absolute-form target loses its scheme, host and userinfo (raw_path is origin-form)."""
    query = request.query_string
    if not query:
        return request.raw_path
    parts = []
    for part in query.split("&"):
        name, sep, _value = part.partition("=")
        parts.append(f"{name}={REDACTED}" if sep and _SECRET_PARAM.search(unquote_plus(name)) else part)
    return request.raw_path + "?" + "&".join(parts)


class AccessLogger:
    def __init__(self, logger: logging.Logger = log) -> None:
        self.logger = logger

    def __call__(self, request: Request, response: Response | StreamResponse, time: float) -> None:
        ctx = request.get(CONTEXT_KEY)
        if ctx is not None and ctx.skip_log:
            return
        fields = {
            "method": request.method,
            "uri": loggable_uri(request),
            "status": response.status,
            "size": response.body_length,
            "duration": round(time, 6),
            "remote_ip": request.remote,
            "client_ip": (ctx.client_ip if ctx is not None else "") or request.remote,
            "host": quote(request.headers.get("Host", ""), safe=":[]"),
            "proto": f"HTTP/{request.version.major}.{request.version.minor}",
        }
        if ctx is not None and ctx.user_id:
            fields["user_id"] = ctx.user_id
        self.logger.info("handled request", extra={"ds_fields": fields})
