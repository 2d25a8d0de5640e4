"""Certificate issuers as the Caddyfile writes them: `issuer <module> ...` in a site's
`tls` block and the global `cert_issuer <module> ...` (Caddy's tls.issuance modules and
their UnmarshalCaddyfile), and what a site's `tls` directive says about issuers.

Of the `acme` issuer's options we execute dir, email, trusted_roots, eab and the
disable_*_challenge switches; the others are refused or ignored, see policy.ACME_OPTIONS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...caddyfile.tree import Directive, Token
from ..durations import DurationError, parse_duration
from ..errors import arg_error, errf
from ..model import AcmeIssuerConfig, InternalIssuerConfig, IssuerConfig
from . import policy
from .base import Scope


@dataclass(frozen=True, slots=True)
class SiteIssuers:
    """What a site's `tls` directive says about its certificate's issuers.

    `explicit`: `tls internal` or `issuer ...` lines, used as they are. `acme_shortcut`:
    the shortcuts (`tls <email>`, `ca`, `ca_root`, `eab`), settings laid over Caddy's
    implicit ACME issuers (the global `cert_issuer acme` ones, else the defaults)."""

    explicit: tuple[IssuerConfig, ...] = ()
    acme_shortcut: AcmeIssuerConfig | None = None

    def __bool__(self) -> bool:
        return bool(self.explicit) or self.acme_shortcut is not None


def parse_issuer(line: Directive, module: Token, rest: tuple[Token, ...], scope: Scope) -> IssuerConfig:
    """`<module> [args] { ... }` of `issuer` / `cert_issuer`; `line` holds the block."""
    name = module.text
    if name == "acme":
        return _acme(line, rest, scope)
    if name == "internal":
        if rest or line.block:
            token = rest[0] if rest else line.block[0].name
            raise errf(token, "options of the internal issuer (ca, lifetime, sign_with_root) are not supported"
                              " by durable-streams-server")
        return InternalIssuerConfig()
    if name == "zerossl":
        raise errf(module, "issuer zerossl (ZeroSSL's API, with an API key) is not supported by"
                           " durable-streams-server; use 'issuer acme' (with an email, Caddy's defaults already"
                           " fall back to ZeroSSL's ACME CA) or 'issuer acme { dir https://acme.zerossl.com/v2/DV90"
                           " eab <key_id> <mac_key> }'")
    # Caddy's error for a module it does not have
    raise errf(module, f"getting module named 'tls.issuance.{name}': module not registered: tls.issuance.{name}")


def _single_arg(sub: Directive) -> str:
    """Caddy's d.AllArgs(&one): exactly one argument."""
    if len(sub.args) != 1:
        raise arg_error(sub.args[-1] if sub.args else sub.name)
    return sub.args[0].text


def _port_arg(sub: Directive) -> int:
    if not sub.args:
        raise arg_error(sub.name)
    text = sub.args[0].text
    body = text[1:] if text[:1] in "+-" else text
    if not (body.isascii() and body.isdigit()):
        raise errf(sub.args[0], f"invalid port {text}: strconv.Atoi: parsing \"{text}\": invalid syntax")
    return int(text)


def _acme(line: Directive, rest: tuple[Token, ...], scope: Scope) -> AcmeIssuerConfig:
    """certmagic's ACMEIssuer.UnmarshalCaddyfile: `acme [<dir>] { ... }`."""
    fields: dict[str, Any] = {}
    if rest:
        fields["ca"] = rest[0].text
        if len(rest) > 1:
            raise arg_error(rest[1])
    for sub in line.block or ():
        name = sub.name.text
        if name == "dir":
            if fields.get("ca"):
                raise errf(sub.name, f"directory is already specified: {fields['ca']}")
            fields["ca"] = _single_arg(sub)
        elif name == "email":
            fields["email"] = _single_arg(sub)
        elif name == "trusted_roots":
            fields["trusted_roots"] = tuple(a.text for a in sub.args)
        elif name == "eab":
            if len(sub.args) != 2:
                raise arg_error(sub.args[-1] if sub.args else sub.name)
            fields["eab"] = (sub.args[0].text, sub.args[1].text)
        elif name in ("disable_http_challenge", "disable_tlsalpn_challenge"):
            if sub.args:
                raise arg_error(sub.args[0])
            fields[name] = True
        elif name == "alt_http_port":
            fields["alt_http_port"] = _port_arg(sub)
        elif name == "alt_tlsalpn_port":
            fields["alt_tlsalpn_port"] = _port_arg(sub)
        elif name in ("lifetime", "timeout"):
            text = _single_arg(sub)
            try:
                parse_duration(text)
            except DurationError as exc:
                what = "lifetime" if name == "lifetime" else "timeout duration"
                raise errf(sub.args[0], f"invalid {what} {text}: {exc}") from None
            scope.warn(sub.name, policy.ignored_message("acme issuer option", name))
        elif name == "distributed":
            if not sub.args:
                raise arg_error(sub.name)
            if sub.args[0].text != "false":
                raise errf(sub.args[0], "only accepted value is 'false'")
            scope.warn(sub.name, policy.ignored_message("acme issuer option", name))
        elif name in policy.IGNORED_ACME_OPTIONS:
            scope.warn(sub.name, policy.ignored_message("acme issuer option", name))
        elif name in policy.REJECTED_ACME_OPTIONS:
            raise policy.rejected_acme_option(sub, f"acme issuer option '{name}'")
        else:
            raise errf(sub.name, f"unrecognized ACME issuer property: {name}")
    return AcmeIssuerConfig(**fields)
