"""Which Caddy directives and global options this daemon executes, ignores (with a warning)
or rejects. Rejections are for anything that would change security or routing if ignored.
"""

from __future__ import annotations

_NO_PROXY = "this daemon serves Durable Streams only; run it behind Caddy/another proxy for this"
_NO_AUTH = "not implemented; never ignored (use basic_auth, an @matcher + respond 401, or a proxy in front)"
_NO_ACME = "ACME certificates are not supported yet; use tls internal or tls <cert_file> <key_file>"

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
    "acme_dns": _NO_ACME,
    "dns": _NO_ACME,
    "on_demand_tls": _NO_ACME,
    "pki": _NO_ACME,
    "ech": _NO_ACME,
    "events": "not implemented",
    "filesystem": "not implemented",
    "default_sni": "not implemented",
    "fallback_sni": "not implemented",
}

IGNORED_OPTIONS: frozenset[str] = frozenset(
    {
        "persist_config", "skip_install_trust", "storage_check",
        "storage_clean_interval", "ocsp_interval", "ocsp_stapling", "renew_interval", "key_type",
        "acme_eab", "cert_issuer",
        "preferred_chains", "cert_lifetime", "tls_resolvers", "renewal_window_ratio",
    }
)


def ignored_message(kind: str, name: str) -> str:
    return f"{kind} '{name}' accepted but ignored by durable-streams daemon"
