"""Which Caddy directives and global options this daemon executes, ignores (with a warning)
or rejects. Rejections are for anything that would change security or routing if ignored.
"""

from __future__ import annotations

from ...caddyfile.tree import Directive
from ..errors import AdaptError, errf

_NO_PROXY = "this daemon serves Durable Streams only; run it behind Caddy/another proxy for this"
_NO_AUTH = "not implemented; never ignored (use basic_auth, an @matcher + respond 401, or a proxy in front)"
_NO_DNS = "the DNS challenge is not supported (certificates are obtained with HTTP-01 and TLS-ALPN-01)"

REJECTED_DIRECTIVES: dict[str, str] = {
    "reverse_proxy": _NO_PROXY,
    "php_fastcgi": _NO_PROXY,
    "file_server": _NO_PROXY,
    "fs": _NO_PROXY,
    "root": _NO_PROXY,
    "try_files": _NO_PROXY,
    "templates": _NO_PROXY,
    "acme_server": _NO_PROXY,
    "intercept": _NO_PROXY,
    "copy_response": _NO_PROXY,
    "copy_response_headers": _NO_PROXY,
    "map": "not implemented",
    "vars": "not implemented",
    "rewrite": "not implemented (it would change stream paths)",
    "uri": "not implemented (it would change stream paths)",
    "method": "not implemented",
    "request_header": "not implemented",
    "invoke": "named routes are not implemented",
    "handle_errors": "not implemented",
    "forward_auth": _NO_AUTH,
    "timeouts": "not implemented; use the servers { timeouts { ... } } global option",
}

# Handler-ish directives that are safe to skip: they only add observability or compression.
IGNORED_DIRECTIVES: frozenset[str] = frozenset(
    {"tracing", "log_append", "log_name", "push", "encode"}
)

REJECTED_OPTIONS: dict[str, str] = {
    "acme_dns": _NO_DNS,
    "dns": _NO_DNS,
    "on_demand_tls": "on-demand TLS is not supported; name the sites in the Caddyfile",
    "pki": "options of the local CA are not supported (it is Caddy's default 'local' CA)",
    "ech": "Encrypted ClientHello is not supported",
    "events": "not implemented",
    "filesystem": "not implemented",
    "default_sni": "not implemented",
    "fallback_sni": "not implemented",
}

IGNORED_OPTIONS: frozenset[str] = frozenset(
    {
        "persist_config", "skip_install_trust", "storage_check",
        "storage_clean_interval", "ocsp_interval", "ocsp_stapling", "renew_interval", "key_type",
        "preferred_chains", "cert_lifetime", "tls_resolvers", "renewal_window_ratio",
    }
)


def ignored_message(kind: str, name: str) -> str:
    return f"{kind} '{name}' accepted but ignored by durable-streams daemon"


# Options of the `acme` issuer (`issuer acme { ... }`, `cert_issuer acme { ... }`) that we
# do not execute. Refused: a certificate could not be obtained as written (the DNS
# challenge, e.g. for wildcards, or solvers on other ports than our listeners'). Ignored:
# they tune how a certificate is obtained, not whether or for what, and the CA's
# defaults are safe (lifetime/profile: the CA's default lifetime; timeout: ours;
# test_dir: no staging retries; preferred_chains: the CA's default chain; distributed
# false: challenges are answered only by the process that asked for them, which is
# what we do anyway).
REJECTED_ACME_OPTIONS: dict[str, str] = {
    name: _NO_DNS
    for name in ("dns", "propagation_delay", "propagation_timeout", "resolvers", "dns_ttl",
                 "dns_challenge_override_domain")
}
IGNORED_ACME_OPTIONS: frozenset[str] = frozenset(
    {"lifetime", "timeout", "test_dir", "profile", "preferred_chains", "distributed"}
)


def rejected_acme_option(sub: Directive, what: str) -> AdaptError:
    """Refuse a DNS-challenge option; `dns <provider>` keeps Caddy's own error first (a
    stock Caddy has no DNS provider modules either)."""
    reason = f"{what} is not supported by durable-streams-server: {REJECTED_ACME_OPTIONS[sub.name.text]}"
    if sub.name.text == "dns" and sub.args:
        provider = sub.args[0].text
        return errf(sub.args[0], f"getting module named 'dns.providers.{provider}': module not registered:"
                                 f" dns.providers.{provider} ({reason})")
    return errf(sub.name, reason)
