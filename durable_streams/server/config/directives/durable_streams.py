"""The `durable_streams` handler directive, as the official Caddy plugin parses it.

The plugin registers no directive order, so like real Caddy it must sit inside `route`
unless the global `order` option places it. Defaults are the plugin's Provision defaults.

Extensions (the official plugin would reject them as unknown subdirectives):
- `max_live_readers <n>`: long-polls + SSE connections at once, per handler; default 10000.
- `catch_up_page_size <size>`: page catch-up reads (`1MiB`, Caddy's size syntax). Off by
  default: a catch-up read answers everything up to the tail in one streamed response,
  which the official clients rely on (they make one GET when not live).
- `retention [<pattern>] { max_age <duration>; max_size <size> }`: drop a stream's
  oldest appends past an age or a size (reads below get 410); repeatable, the first
  block whose pattern (`*` one path segment, `**` any) matches a stream applies.
- `postgres <dsn> [{ pool_size <n> }]`: the PostgreSQL store, shared by any number of
  server nodes. Not with `data_dir`. The DSN's syntax is checked here; the connection
  and the schema version when the server starts.
"""

from __future__ import annotations

import re

from ...caddyfile.tree import Directive, Token
from ..durations import DurationError, parse_duration
from ..errors import arg_error, errf
from ..model import DEFAULT_POSTGRES_POOL_SIZE as DEFAULT_POOL_SIZE, DurableStreams, Handler, Postgres, Retention
from ..sizes import parse_size
from .base import Scope, handler_directive

_SCANF_INT = re.compile(r"^\s*([+-]?[0-9]+)")


def _scanf_int(text: str) -> int | None:
    """Go's fmt.Sscanf("%d"): leading integer, trailing garbage ignored."""
    m = _SCANF_INT.match(text)
    return int(m.group(1)) if m else None


def _strict_int(text: str) -> int | None:
    """A whole decimal integer: our own option has no plugin quirks to mimic."""
    return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else None


def _one_value(line: Directive) -> Token:
    """`d.Args(&v)`: one value; a surplus token is read by the plugin as the next sub-directive."""
    if not line.args:
        raise arg_error(line.name)
    if len(line.args) > 1:
        extra = line.args[1]
        raise errf(extra, f"unknown subdirective: {extra.text}")
    return line.args[0]


def _duration(token: Token) -> float:
    try:
        return parse_duration(token.text)
    except DurationError as exc:
        raise errf(token, f"invalid duration: {exc}") from None


@handler_directive("durable_streams")
def durable_streams(d: Directive, args: list[Token], scope: Scope) -> Handler:
    # Extra arguments on the directive line are ignored by the plugin; so are they here.
    # What is not given (or zero, as in the plugin) keeps the model's default.
    data_dir: str | None = None
    max_file_handles = 0
    long_poll = 0.0
    sse_interval = 0.0
    webhook: str | None = None
    subscriptions = False
    max_live_readers = 0
    catch_up_page_size = 0
    postgres: Postgres | None = None
    retention: list[Retention] = []
    data_dir_line: Directive | None = None
    for line in d.block or ():
        name = line.name.text
        if name == "data_dir":
            data_dir = _one_value(line).text
            data_dir_line = line
        elif name == "postgres":
            postgres = _postgres(line)
            continue  # its block holds its own options
        elif name == "retention":
            retention.append(_retention(line))
            continue
        elif name == "max_file_handles":
            token = _one_value(line)
            value = _scanf_int(token.text)
            if value is None:
                raise errf(token, "invalid max_file_handles: expected integer")
            if value < 0:
                # the plugin would pass a negative limit on; refusing it is stricter, never looser
                raise errf(token, "invalid max_file_handles: must not be negative")
            max_file_handles = value
        elif name == "max_live_readers":
            token = _one_value(line)
            value = _strict_int(token.text)
            if value is None:
                raise errf(token, "invalid max_live_readers: expected integer")
            if value < 1:
                raise errf(token, "invalid max_live_readers: must be at least 1")
            max_live_readers = value
        elif name == "catch_up_page_size":
            token = _one_value(line)
            try:
                catch_up_page_size = parse_size(token.text)
            except ValueError as exc:
                raise errf(token, f"invalid catch_up_page_size: {exc}") from None
            if catch_up_page_size < 1:
                raise errf(token, "invalid catch_up_page_size: must be at least 1 byte")
        elif name == "long_poll_timeout":
            long_poll = _duration(_one_value(line))
        elif name == "sse_reconnect_interval":
            sse_interval = _duration(_one_value(line))
        elif name == "webhook_callback_url":
            token = _one_value(line)
            webhook = token.text
            problem = _callback_url_problem(webhook)
            if problem is not None:
                raise errf(token, f"invalid webhook_callback_url: {problem}")
            subscriptions = True
        elif name == "subscriptions":
            if line.args:
                raise errf(line.args[0], "subscriptions takes no arguments")
            subscriptions = True
        else:
            raise errf(line.name, f"unknown subdirective: {name}")
        if line.block:
            first = line.block[0].name
            raise errf(first, f"unknown subdirective: {first.text}")
    if postgres is not None and data_dir_line is not None:
        raise errf(data_dir_line.name, "data_dir and postgres cannot be used together: choose one store")
    if long_poll < 0 or sse_interval < 0:
        where = d.name
        raise errf(where, "invalid duration: negative durations are not supported by durable-streams-server")
    given = dict(
        data_dir=data_dir,
        max_file_handles=max_file_handles,
        long_poll_timeout=long_poll,
        sse_reconnect_interval=sse_interval,
        webhook_callback_url=webhook,
        subscriptions=subscriptions,
        max_live_readers=max_live_readers,
        catch_up_page_size=catch_up_page_size,
        postgres=postgres,
        retention=tuple(retention),
    )
    return DurableStreams(**{name: value for name, value in given.items() if value})


def _callback_url_problem(url: str) -> str | None:
    """The public base of callback and JWKS URLs: an absolute http(s) URL, no query."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "expected an absolute http:// or https:// URL"
    if parts.query or parts.fragment:
        return "must not have a query or fragment"
    return None


def _postgres(line: Directive) -> Postgres:
    from ..dsn import check_dsn

    token = _one_value(line)
    problem = check_dsn(token.text)
    if problem is not None:
        raise errf(token, f"invalid postgres connection string: {problem}")
    pool_size = DEFAULT_POOL_SIZE
    for option in line.block or ():
        if option.name.text != "pool_size":
            raise errf(option.name, f"unknown subdirective: {option.name.text}")
        value_token = _one_value(option)
        value = _strict_int(value_token.text)
        if value is None or value < 2:
            raise errf(value_token, "invalid pool_size: expected an integer of at least 2 (the flusher keeps one)")
        pool_size = value
    return Postgres(token.text, pool_size)


def _retention(line: Directive) -> Retention:
    if len(line.args) > 1:
        raise errf(line.args[1], f"unknown subdirective: {line.args[1].text}")
    pattern = line.args[0].text if line.args else None
    if pattern is not None and not pattern.startswith(("/", "*")):
        raise errf(line.args[0], "invalid retention pattern: must start with / or * (it matches stream paths)")
    if not line.block:
        raise errf(line.name, "retention needs a block with max_age and/or max_size")
    max_age: float | None = None
    max_size: int | None = None
    for option in line.block:
        name = option.name.text
        value = _one_value(option)
        if name == "max_age":
            max_age = _duration(value)
            if max_age <= 0:
                raise errf(value, "invalid max_age: must be positive")
        elif name == "max_size":
            try:
                max_size = parse_size(value.text)
            except ValueError as exc:
                raise errf(value, f"invalid max_size: {exc}") from None
            if max_size < 1:
                raise errf(value, "invalid max_size: must be at least 1 byte")
        else:
            raise errf(option.name, f"unknown subdirective: {name}")
    if max_age is None and max_size is None:
        raise errf(line.name, "retention needs max_age and/or max_size")
    return Retention(pattern, max_age, max_size)
