"""Global options (the keyless first block), mapped into a plain dict the adapter reads.

Each parser gets the option's Directive and the options dict; it returns nothing and
records what it read. Errors follow Caddy's options.go / serveroptions.go wording.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...caddyfile.tree import Directive, Token
from ..addresses import AddressError, parse_network_address
from ..durations import DurationError, parse_duration
from ..errors import AdaptError, arg_error, errf
from ..matchers import MatcherError, parse_ip_range
from ..model import LogConfig, Timeouts
from ..sizes import parse_size
from . import policy
from .base import CADDY_DIRECTIVES, Scope, all_args
from .issuers import parse_issuer

OptionFunc = Callable[[Directive, dict[str, Any], Scope], None]
GLOBAL_OPTIONS: dict[str, OptionFunc] = {}


def option(name: str) -> Callable[[OptionFunc], OptionFunc]:
    def register(fn: OptionFunc) -> OptionFunc:
        GLOBAL_OPTIONS[name] = fn
        return fn

    return register


def _single(d: Directive) -> Token:
    return all_args(d, 1)[0]


@option("debug")
def _debug(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    opts["debug"] = True  # Caddy's parseOptTrue ignores any arguments


def _port(d: Directive) -> int:
    token = _single(d)
    text = token.text
    body = text[1:] if text[:1] in "+-" else text
    if not (body.isascii() and body.isdigit()):
        raise errf(token, f"converting port '{text}' to integer value: strconv.Atoi: parsing \"{text}\": invalid syntax")
    return int(text)


@option("http_port")
def _http_port(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    opts["http_port"] = _port(d)


@option("https_port")
def _https_port(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    opts["https_port"] = _port(d)


@option("default_bind")
def _default_bind(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    for sub in d.block or ():
        if sub.name.text == "protocols":
            if not sub.args:
                raise errf(sub.name, "protocols requires one or more arguments")
        else:
            raise errf(sub.name, f"unknown subdirective: {sub.name.text}")
    opts.setdefault("default_bind", []).extend(a.text for a in d.args)


def _duration_option(key: str) -> OptionFunc:
    def parse(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
        if not d.args:
            raise arg_error(d.name)
        try:
            opts[key] = parse_duration(d.args[0].text)
        except DurationError as exc:
            raise AdaptError(str(exc), d.file, d.line) from None

    return parse


GLOBAL_OPTIONS["grace_period"] = _duration_option("grace_period")
GLOBAL_OPTIONS["shutdown_delay"] = _duration_option("shutdown_delay")


@option("admin")
def _admin(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    if d.args and d.args[0].text == "off":
        if len(d.args) > 1 or d.block:
            raise errf(d.args[0], "No more option is allowed after turning off admin config")
        opts["admin_off"] = True
        return
    # No config API: the admin address serves the operations endpoints only
    # (/metrics, /healthz, /readyz). Caddy's default address when none is given.
    if len(d.args) > 1:
        raise arg_error(d.args[-1])
    text = d.args[0].text if d.args else "localhost:2019"
    try:
        opts["admin"] = parse_network_address(text)
    except AddressError as exc:
        raise errf(d.args[0] if d.args else d.name, f"invalid admin address {text}: {exc}") from None
    for sub in d.block or ():
        if sub.name.text in ("origins", "enforce_origin"):
            scope.warn(sub.name, policy.ignored_message("admin option", sub.name.text))
        else:
            raise errf(sub.name, f"unrecognized parameter '{sub.name.text}'")


@option("metrics")
def _metrics(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    for sub in d.block or ():
        if sub.name.text != "per_host":
            raise errf(sub.name, f"unrecognized servers option '{sub.name.text}'")
        scope.warn(sub.name, policy.ignored_message("metrics option", "per_host"))
    opts["metrics"] = True


_AUTO_HTTPS = ("off", "disable_redirects", "disable_certs", "ignore_loaded_certs")


@option("auto_https")
def _auto_https(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    if not d.args:
        raise arg_error(d.name)
    for a in d.args:
        if a.text not in _AUTO_HTTPS:
            raise errf(a, "auto_https must be one of 'off', 'disable_redirects', 'disable_certs', or 'ignore_loaded_certs'")
    opts["auto_https"] = tuple(a.text for a in d.args)


@option("local_certs")
def _local_certs(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    opts["local_certs"] = True  # Caddy's parseOptTrue ignores any arguments


@option("email")
def _email(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    opts["email"] = _single(d).text  # the ACME account's contact (Caddy: parseOptSingleString)


@option("acme_ca")
def _acme_ca(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    opts["acme_ca"] = _single(d).text  # ACME directory URL of every ACME issuer


@option("acme_ca_root")
def _acme_ca_root(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    opts["acme_ca_root"] = _single(d).text  # PEM file trusted for the CA's HTTPS


@option("acme_eab")
def _acme_eab(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    """`acme_eab { key_id <id> mac_key <key> }`: External Account Binding of every ACME issuer."""
    if d.args:
        raise arg_error(d.args[0])
    fields = {"key_id": "", "mac_key": ""}
    for sub in d.block or ():
        if sub.name.text not in fields:
            raise errf(sub.name, f"unrecognized parameter '{sub.name.text}'")
        if not sub.args:
            raise arg_error(sub.name)
        fields[sub.name.text] = sub.args[0].text
    opts["acme_eab"] = (fields["key_id"], fields["mac_key"])


@option("cert_issuer")
def _cert_issuer(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    """`cert_issuer <module> ...`, repeatable: the default issuers, tried in order."""
    if not d.args:
        raise arg_error(d.name)
    opts.setdefault("cert_issuer", []).append(parse_issuer(d, d.args[0], d.args[1:], scope))


@option("storage")
def _storage(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    """`storage file_system <root>` or `storage file_system { root <root> }`."""
    if not d.args:
        raise arg_error(d.name)
    module = d.args[0].text
    if module != "file_system":
        raise errf(d.args[0], f"getting storage module '{module}': module not registered: caddy.storage.{module}")
    root = d.args[1].text if len(d.args) > 1 else None
    if len(d.args) > 2:
        raise arg_error(d.args[2])
    for sub in d.block or ():
        if sub.name.text != "root":
            raise errf(sub.name, f"unrecognized parameter '{sub.name.text}'")
        if root is not None:
            raise errf(sub.name, "root already set")
        if len(sub.args) != 1:
            raise arg_error(sub.args[1] if sub.args else sub.name)
        root = sub.args[0].text
    if root is None:
        raise arg_error(d.name)
    opts["storage"] = root


@option("order")
def _order(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    args = list(d.args)
    if not args:
        raise arg_error(d.name)
    name = args[0].text
    if name not in CADDY_DIRECTIVES:
        raise errf(args[0], f"{name} is not a registered directive")
    if len(args) < 2:
        raise arg_error(args[0])
    position = args[1].text
    order = [x for x in scope.order if x != name]
    if position in ("first", "last"):
        if len(args) > 2:
            raise arg_error(args[2])
        order = [name, *order] if position == "first" else [*order, name]
    elif position in ("before", "after"):
        if len(args) != 3:
            raise arg_error(args[-1])
        other = args[2].text
        if other not in order:
            raise errf(args[2], f"directive '{other}' not found")
        index = order.index(other) + (1 if position == "after" else 0)
        order.insert(index, name)
    else:
        raise errf(args[1], f"unknown positional '{position}'")
    scope.order[:] = order


_LOG_LEVELS = {"DEBUG", "INFO", "WARN", "WARNING", "ERROR", "PANIC", "FATAL"}


@option("log")
def _log(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    if len(d.args) > 1:
        raise arg_error(d.args[-1])
    name = d.args[0].text if d.args else "default"
    logs: list[LogConfig] = opts.setdefault("logs", [])
    if any(log.name == name for log in logs):
        raise errf(d.args[0] if d.args else d.name, f"duplicate global log option for: {name}")
    output, path, fmt, level = "stderr", None, None, "INFO"
    for sub in d.block or ():
        key = sub.name.text
        if key == "output":
            if not sub.args:
                raise arg_error(sub.name)
            output = sub.args[0].text
            if output == "file":
                if len(sub.args) < 2:
                    raise arg_error(sub.args[0])
                path = sub.args[1].text
                if sub.block:
                    scope.warn(sub.name, policy.ignored_message("log file option", "roll_*"))
            elif output not in ("stdout", "stderr", "discard"):
                raise errf(sub.args[0], f"log output '{output}' is not supported by durable-streams-server")
        elif key == "format":
            if not sub.args:
                raise arg_error(sub.name)
            fmt = sub.args[0].text
            if fmt not in ("json", "console"):
                raise errf(sub.args[0], f"log format '{fmt}' is not supported by durable-streams-server")
            if len(sub.args) > 1 or sub.block:
                scope.warn(sub.name, policy.ignored_message("log format option", fmt))
        elif key == "level":
            if len(sub.args) != 1:
                raise arg_error(sub.args[-1] if sub.args else sub.name)
            level = sub.args[0].text.upper()
            if level not in _LOG_LEVELS:
                raise errf(sub.args[0], f"unrecognized log level: {sub.args[0].text}")
            level = "WARNING" if level == "WARN" else level
        elif key in ("include", "exclude", "sampling"):
            scope.warn(sub.name, policy.ignored_message("log option", key))
        else:
            raise errf(sub.name, f"unrecognized subdirective: {key}")
    if name != "default":
        scope.warn(d.args[0], f"log '{name}' accepted but ignored by durable-streams daemon: only the default log is used")
    logs.append(LogConfig(name=name, output=output, file_path=path, format=fmt, level=level))


_TIMEOUT_KEYS = ("read_body", "read_header", "write", "idle")
_IGNORED_SERVER_OPTIONS = {
    "keepalive_interval", "keepalive_idle", "keepalive_count", "trace", "log_credentials",
    "strict_sni_host", "enable_full_duplex", "0rtt", "trusted_proxies_strict",
    "name",
}


@option("servers")
def _servers(d: Directive, opts: dict[str, Any], scope: Scope) -> None:
    if len(d.args) > 1:
        raise arg_error(d.args[-1])
    listener = d.args[0].text if d.args else None
    found: dict[str, Any] = {"listener": listener}
    for sub in d.block or ():
        key = sub.name.text
        if key == "timeouts":
            values: dict[str, float] = {}
            for t in sub.block or ():
                if t.name.text not in _TIMEOUT_KEYS:
                    if t.name.text in ("read_body_idle", "write_idle", "write_max_chunk"):
                        scope.warn(t.name, policy.ignored_message("servers timeouts option", t.name.text))
                        continue
                    raise errf(t.name, f"unrecognized timeouts option '{t.name.text}'")
                if len(t.args) != 1:
                    raise arg_error(t.args[-1] if t.args else t.name)
                try:
                    values[t.name.text] = parse_duration(t.args[0].text)
                except DurationError as exc:
                    raise errf(t.args[0], f"parsing {t.name.text} timeout duration: {exc}") from None
                if t.name.text == "write":
                    # no write deadline (SSE responses stay open by design); the rest are enforced
                    scope.warn(t.name, f"servers timeouts option '{t.name.text}' is not enforced by durable-streams daemon")
            found["timeouts"] = Timeouts(**values)
        elif key == "max_header_size":
            if len(sub.args) != 1:
                raise arg_error(sub.args[-1] if sub.args else sub.name)
            try:
                found["max_header_size"] = parse_size(sub.args[0].text)
            except ValueError as exc:
                raise errf(sub.args[0], f"parsing max_header_size: {exc}") from None
        elif key in ("max_header_fields", "max_connections"):  # extensions
            if len(sub.args) != 1:
                raise arg_error(sub.args[-1] if sub.args else sub.name)
            text = sub.args[0].text
            if not text.isascii() or not text.isdigit() or int(text) < 1:
                raise errf(sub.args[0], f"{key} must be a positive integer, got '{text}'")
            found[key] = int(text)
        elif key == "min_body_rate":  # extension: bytes per second, Caddy's size syntax
            if len(sub.args) != 1:
                raise arg_error(sub.args[-1] if sub.args else sub.name)
            try:
                found[key] = parse_size(sub.args[0].text)
            except ValueError as exc:
                raise errf(sub.args[0], f"parsing min_body_rate: {exc}") from None
        elif key == "protocols":
            if not sub.args:
                raise arg_error(sub.name)
            protos = []
            for a in sub.args:
                if a.text not in ("h1", "h2", "h2c", "h3"):
                    raise errf(a, f"unknown protocol '{a.text}': expected h1, h2, h2c, or h3")
                if a.text in protos:
                    raise errf(a, f"protocol {a.text} specified more than once")
                protos.append(a.text)
            if "h1" not in protos:
                raise errf(sub.name, "protocols without h1 are not supported by durable-streams-server")
            ignored = [p for p in protos if p in ("h2c", "h3")]
            if ignored:
                scope.warn(sub.name, f"durable-streams-server serves h1, and h2 over TLS; {'/'.join(ignored)} ignored")
            found["protocols"] = tuple(protos)
        elif key == "trusted_proxies":
            if not sub.args:
                raise errf(sub.name, "trusted_proxies expects an IP range source module name as its first argument")
            if sub.args[0].text != "static":
                raise errf(sub.args[0], f"trusted_proxies source '{sub.args[0].text}' is not supported by durable-streams-server")
            ranges: list[str] = []
            for a in sub.args[1:]:
                if a.text == "private_ranges":
                    from ..matchers import PRIVATE_RANGES

                    ranges.extend(PRIVATE_RANGES)
                    continue
                try:
                    parse_ip_range(a.text)
                except MatcherError as exc:
                    raise errf(a, str(exc)) from None
                ranges.append(a.text)
            found["trusted_proxies"] = tuple(ranges)
        elif key == "client_ip_headers":
            if not sub.args:
                raise arg_error(sub.name)
            found["client_ip_headers"] = tuple(a.text for a in sub.args)
        elif key == "metrics":
            opts["metrics"] = True  # Caddy's older spelling of the global `metrics` option
        elif key in _IGNORED_SERVER_OPTIONS:
            scope.warn(sub.name, policy.ignored_message("servers option", key))
        elif key in ("listener_wrappers", "packet_conn_wrappers"):
            raise errf(sub.name, f"servers option '{key}' is not supported by durable-streams-server")
        else:
            raise errf(sub.name, f"unrecognized servers option '{key}'")
    opts.setdefault("servers", []).append(found)


def evaluate_global_options(block_lines: tuple[Directive, ...], scope: Scope) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for d in block_lines:
        name = d.name.text
        fn = GLOBAL_OPTIONS.get(name)
        if fn is None:
            if name in policy.IGNORED_OPTIONS:
                scope.warn(d.name, policy.ignored_message("global option", name))
                continue
            if name in policy.REJECTED_OPTIONS:
                raise AdaptError(
                    f"{d.file}:{d.line}: unsupported global option: {name} - {policy.REJECTED_OPTIONS[name]}", d.file, d.line
                )
            raise AdaptError(f"{d.file}:{d.line}: unrecognized global option: {name}", d.file, d.line)
        try:
            fn(d, opts, scope)
        except AdaptError as exc:
            raise AdaptError(f"parsing caddyfile tokens for '{name}': {exc.text}", exc.file, exc.line) from None
    return opts
