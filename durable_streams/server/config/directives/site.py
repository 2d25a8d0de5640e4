"""Site-level directives: route/handle/handle_path, respond/abort/error/redir, header,
request_body, tls, bind, log, and the accepted-but-ignored observability directives."""

from __future__ import annotations

from typing import Any

from ...caddyfile.tree import Directive, Token
from ..errors import AdaptError, arg_error, at, errf
from ..model import (
    AcmeIssuerConfig,
    Certificate,
    InternalIssuerConfig,
    IssuerConfig,
    Handler,
    HeaderOp,
    Headers,
    MetricsEndpoint,
    SkipLog,
    RequestBody,
    Route,
    StaticResponse,
    StripPathPrefix,
    Subroute,
)
from ..matchers import MatcherSet, PathMatcher
from ..sizes import parse_size
from . import policy
from .issuers import SiteIssuers, parse_issuer
from .base import (
    DIRECTIVES,
    Scope,
    Value,
    all_args,
    block_end,
    build_subroute,
    directive,
    expand_shorthands,
    handler_directive,
    parse_block,
)

# --------------------------------------------------------------------------- grouping directives


@handler_directive("route")
def route(d: Directive, args: list[Token], scope: Scope) -> Handler:
    values = parse_block(d, args, scope)
    for v in values:
        if v.kind != "route":
            raise AdaptError(
                f"{v.directive} directive returned something other than an HTTP route or subroute"
                f" (only handler directives can be used in routes){at(block_end(d))}"
            )
    return build_subroute(values, scope, sort=False)


@handler_directive("handle")
def handle(d: Directive, args: list[Token], scope: Scope) -> Handler:
    return build_subroute(parse_block(d, args, scope), scope, sort=True)


@directive("handle_path")
def handle_path(d: Directive, scope: Scope) -> list[Value]:
    if not d.args:
        raise arg_error(d.name)
    token = d.args[0]
    if not token.text.startswith("/"):
        raise errf(token, f"path matcher must begin with '/', got {token.text}")
    prefix = token.text
    if prefix.endswith("/*"):
        prefix = prefix[:-2]
    elif prefix.endswith("*"):
        prefix = prefix[:-1]
    inner = build_subroute(parse_block(d, list(d.args[1:]), scope), scope, sort=True)
    # like Caddy: the rewrite route first, then the block's own routes in the same subroute
    sub = Subroute(routes=(Route(handle=(StripPathPrefix(prefix),)),) + inner.routes)
    match = (MatcherSet((PathMatcher((token.text,)),)),)
    return [Value("route", Route(match=match, handle=(sub,)))]


# --------------------------------------------------------------------------- responses


def _status_or_text(args: list[Token], d: Directive) -> tuple[int | None, str | None]:
    """respond/error's shared first line: `<status>|<text> [<status>]`."""
    if len(args) == 1:
        text = args[0].text
        if len(text) == 3 and text.isdigit() and int(text) > 0:
            return int(text), None
        return None, expand_shorthands(text)
    if len(args) == 2:
        return _status_code(args[1]), expand_shorthands(args[0].text)
    raise arg_error(args[-1] if args else d.name)


def _status_code(token: Token) -> int:
    text = token.text
    if not (text.isascii() and text.isdigit()) or not (100 <= int(text) <= 999):
        raise errf(token, f"invalid status code: {text}")
    return int(text)


@handler_directive("respond")
def respond(d: Directive, args: list[Token], scope: Scope) -> Handler:
    status, body = _status_or_text(args, d)
    close = False
    for sub in d.block or ():
        if sub.name.text == "body":
            if body is not None:
                raise errf(sub.name, "body already specified")
            body = expand_shorthands(all_args(sub, 1)[0].text)
        elif sub.name.text == "close":
            if close:
                raise errf(sub.name, "close already specified")
            close = True
        else:
            raise errf(sub.name, f"unrecognized subdirective '{sub.name.text}'")
    return StaticResponse(status=status, body=body, close=close)


@handler_directive("abort")
def abort(d: Directive, args: list[Token], scope: Scope) -> Handler:
    if args:
        raise arg_error(args[0])
    if d.block:
        raise arg_error(d.block[0].name)
    return StaticResponse(abort=True)


@handler_directive("error")
def error(d: Directive, args: list[Token], scope: Scope) -> Handler:
    status, message = _status_or_text(args, d)
    for sub in d.block or ():
        if sub.name.text != "message":
            raise errf(sub.name, f"unrecognized subdirective '{sub.name.text}'")
        if message is not None:
            raise errf(sub.name, "message already specified")
        message = all_args(sub, 1)[0].text
    # Without handle_errors, Caddy answers an error with its status and an empty body.
    return StaticResponse(status=status or 500, body="")


_REDIR_CODES = {"permanent": 301, "temporary": 302}
_REDIR_HTML = """<!DOCTYPE html>
<html>
	<head>
		<title>Redirecting...</title>
		<script>window.location.replace("{to}");</script>
		<meta http-equiv="refresh" content="0; URL='{to}'">
	</head>
	<body>Redirecting to <a href="{to}">{to}</a>...</body>
</html>
"""


@handler_directive("redir")
def redir(d: Directive, args: list[Token], scope: Scope) -> Handler:
    if not args or len(args) > 2:
        raise arg_error(args[-1] if args else d.name)
    target = expand_shorthands(args[0].text)
    word = args[1].text if len(args) == 2 else "temporary"
    if word == "html":
        # a page that redirects browsers; other clients get a 200 (as in Caddy)
        import html

        body = _REDIR_HTML.format(to=html.escape(target))
        return StaticResponse(status=200, body=body, headers=(("Content-Type", "text/html; charset=utf-8"),))
    if word in _REDIR_CODES:
        code = _REDIR_CODES[word]
    else:
        body = word[1:] if word[:1] in "+-" else word
        if not (body.isascii() and body.isdigit()):
            raise errf(args[1], f"Not a supported redir code type or not valid integer: '{word}'")
        code = int(word)
        if code < 300 or (code > 399 and code != 401):
            raise errf(args[1], f"Redir code not in the 3xx range or 401: '{code}'")
    return StaticResponse(status=code, headers=(("Location", target),))


# --------------------------------------------------------------------------- header


def canonical_header(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey (what Caddy's http.Header.Set/Add store)."""
    if not name or any(c in name for c in " \t\r\n:") or not name.isascii():
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _header_op(token: Token, field: str, value: str | None, replacement: str | None) -> tuple[HeaderOp, bool]:
    """One header operation + whether it forces deferral (Caddy's applyHeaderOp)."""
    value = expand_shorthands(value or "")
    if field.startswith("+"):
        return HeaderOp("add", canonical_header(field[1:]), value), False
    if field.startswith("-"):
        return HeaderOp("delete", field[1:]), True
    if field.startswith("?"):
        return HeaderOp("default", canonical_header(field[1:]), value), True
    if replacement is not None:
        return HeaderOp("replace", field.lstrip("+-?>"), expand_shorthands(replacement), search=value, regex=True), field.startswith(">")
    if field.startswith(">"):
        return HeaderOp("set", canonical_header(field[1:]), value), True
    return HeaderOp("set", canonical_header(field), value), False


@handler_directive("header")
def header(d: Directive, args: list[Token], scope: Scope) -> list[Handler]:
    ops: list[HeaderOp] = []
    deferred = False
    if args:
        # `<field> [<value>] [<replacement>]`; Caddy never reads further arguments
        op, defer = _header_op(args[0], args[0].text, *(a.text for a in args[1:3]), *([None] * (3 - len(args[:3]))))
        ops.append(op)
        deferred = deferred or defer
    for field_token, values in _header_block_entries(d):
        field = field_token.text
        if field == "defer":
            deferred = True
            continue
        if field == "match":
            raise errf(field_token, "response matchers in 'header' are not supported by durable-streams-server")
        if args:
            raise errf(field_token, "cannot specify headers in both arguments and block")
        field = field.removesuffix(":")
        op, defer = _header_op(field_token, field, *values, *([None] * (2 - len(values))))
        ops.append(op)
        deferred = deferred or defer
    if not ops:
        return []
    return [Headers(ops=tuple(ops), deferred=deferred)]


def _header_block_entries(d: Directive) -> list[tuple[Token, list[str]]]:
    """The block's (field, values) entries as Caddy's loop reads them: a field takes at most
    two more tokens of its line, and a token beyond that starts the next field
    (`X a b c` = replace in X, then set C to "")."""
    entries: list[tuple[Token, list[str]]] = []
    for sub in d.block or ():
        tokens = [sub.name, *sub.args]
        for i in range(0, len(tokens), 3):
            entries.append((tokens[i], [t.text for t in tokens[i + 1:i + 3]]))
    return entries


# --------------------------------------------------------------------------- request_body

@handler_directive("request_body")
def request_body(d: Directive, args: list[Token], scope: Scope) -> Handler | None:
    max_size = 0
    for sub in d.block or ():
        if sub.name.text == "max_size":
            value = all_args(sub, 1)[0]
            try:
                max_size = parse_size(value.text)
            except ValueError as exc:
                raise errf(sub.args[0], f"parsing max_size: {exc}") from None
        elif sub.name.text == "set":
            raise errf(sub.name, "request_body 'set' is not supported by durable-streams-server")
        else:
            raise errf(sub.name, f"unrecognized request_body subdirective '{sub.name.text}'")
    return RequestBody(max_size=max_size)


def _log_skip(d: Directive, args: list[Token], scope: Scope) -> Handler:
    if args:
        raise arg_error(args[0])
    if d.block:
        raise arg_error(d.block[0].name)
    return SkipLog()


handler_directive("log_skip")(_log_skip)
handler_directive("skip_log")(_log_skip)  # Caddy's older name


@handler_directive("metrics")
def metrics(d: Directive, args: list[Token], scope: Scope) -> Handler:
    if args:
        raise arg_error(args[0])
    openmetrics = True
    for sub in d.block or ():
        if sub.name.text == "disable_openmetrics":
            if sub.args:
                raise arg_error(sub.args[0])
            openmetrics = False
        else:
            raise errf(sub.name, f"unrecognized subdirective '{sub.name.text}'")
    return MetricsEndpoint(openmetrics=openmetrics)


# --------------------------------------------------------------------------- site settings


@directive("tls")
def tls(d: Directive, scope: Scope) -> list[Value]:
    """The value is (cert, min_version, max_version, SiteIssuers): the site's own word on
    its issuers (empty: the global settings and defaults decide). Caddy's parseTLS."""
    args = d.args
    explicit: list[IssuerConfig] = []
    internal = False
    shortcut: dict[str, Any] | None = None  # `tls <email>`, `ca`, `ca_root`, `eab`: the implicit ACME issuers
    if len(args) == 1:
        word = args[0].text
        if word == "internal":
            internal = True  # a certificate from the local CA, for any name
        elif word == "force_automate":
            raise errf(args[0], "tls force_automate is not supported by durable-streams-server")
        elif "@" not in word:
            raise errf(args[0], "single argument must either be 'internal', 'force_automate', or an email address")
        else:
            shortcut = {"email": word}
    if len(args) > 2:
        raise arg_error(args[-1])
    min_version = max_version = None
    for sub in d.block or ():
        name = sub.name.text
        if name == "issuer":
            if not sub.args:
                raise arg_error(sub.name)
            explicit.append(parse_issuer(sub, sub.args[0], sub.args[1:], scope))
        elif name in ("ca", "ca_root"):
            if len(sub.args) != 1:
                raise arg_error(sub.args[-1] if sub.args else sub.name)
            shortcut = shortcut or {}
            if name == "ca":
                shortcut["ca"] = sub.args[0].text
            else:
                shortcut["trusted_roots"] = (*shortcut.get("trusted_roots", ()), sub.args[0].text)
        elif name == "eab":
            if len(sub.args) != 2:
                raise arg_error(sub.args[-1] if sub.args else sub.name)
            shortcut = shortcut or {}
            shortcut["eab"] = (sub.args[0].text, sub.args[1].text)
        elif name == "protocols":
            if not 1 <= len(sub.args) <= 2:
                raise arg_error(sub.args[-1] if sub.args else sub.name)
            versions = [a.text for a in sub.args]
            for v, tok in zip(versions, sub.args):
                if v not in ("tls1.2", "tls1.3"):
                    raise errf(tok, f"wrong protocol name or protocol not supported: '{v}'")
            min_version = versions[0]
            max_version = versions[1] if len(versions) == 2 else None
        elif name in ("ciphers", "curves", "alpn"):
            scope.warn(sub.name, policy.ignored_message("tls option", name))
        elif name in policy.REJECTED_ACME_OPTIONS:
            raise policy.rejected_acme_option(sub, f"tls option '{name}'")
        else:
            raise errf(sub.name, f"tls option '{name}' is not supported by durable-streams-server")
    if not args and not d.block:
        raise arg_error(d.name)  # Caddy: a naked tls directive is not allowed
    if explicit and (shortcut is not None or internal):
        raise errf(block_end(d),
                   "cannot mix issuer subdirective (explicit issuers) with other issuer-specific subdirectives"
                   " (implicit issuers)")
    if shortcut is not None and internal:
        raise errf(block_end(d), "cannot create both ACME and internal certificate issuers")
    issuers = SiteIssuers(
        explicit=tuple(explicit) or ((InternalIssuerConfig(),) if internal else ()),
        acme_shortcut=AcmeIssuerConfig(**shortcut) if shortcut is not None else None,
    )
    if len(args) == 2:
        cert = Certificate(args[0].text, args[1].text)
        return [Value("tls", (cert, min_version, max_version, issuers))]
    return [Value("tls", (None, min_version, max_version, issuers))]


@directive("bind")
def bind(d: Directive, scope: Scope) -> list[Value]:
    protocols: tuple[str, ...] = ()
    for sub in d.block or ():
        if sub.name.text == "protocols":
            if not sub.args:
                raise errf(sub.name, "protocols requires one or more arguments")
            protocols = tuple(a.text for a in sub.args)
        else:
            raise errf(sub.name, f"unknown subdirective: {sub.name.text}")
    return [Value("bind", (tuple(a for a in d.args), protocols))]


@directive("log")
def access_log(d: Directive, scope: Scope) -> list[Value]:
    if d.args or d.block:
        scope.warn(d.name, "access log options ignored: access logs go to the default log")
    return [Value("log", True)]


def _ignored(d: Directive, scope: Scope) -> list[Value]:
    scope.warn(d.name, policy.ignored_message("directive", d.name.text))
    return []


for _name in policy.IGNORED_DIRECTIVES:
    DIRECTIVES[_name] = _ignored
