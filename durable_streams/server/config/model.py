"""The configuration model: what the adapter produces and the runtime executes.

Frozen dataclasses, shaped like Caddy's JSON config (servers -> routes -> matcher sets +
handlers) so `adapt` output reads like `caddy adapt`. Durations are float seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .addresses import ListenAddress
from .certnames import is_internal as _is_internal
from .certnames import match_wildcard
from .durations import format_duration
from .matchers import MatcherSet


def _dur(value: float | None) -> str | None:
    return None if value is None else format_duration(value)


def _compact(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop empty/None values so the JSON stays as terse as Caddy's."""
    return {k: v for k, v in obj.items() if v not in (None, (), [], {}, False, "")}


# --------------------------------------------------------------------------- handlers


class Handler:
    """A route handler. `name` is Caddy's module name (the "handler" key in JSON)."""

    name = ""
    terminal = False  # True: never calls the next handler

    def config(self) -> dict[str, Any]:
        return {"handler": self.name}


@dataclass(frozen=True, slots=True)
class Route:
    match: tuple[MatcherSet, ...] = ()  # ORed; empty = every request
    handle: tuple[Handler, ...] = ()
    group: str | None = None  # only the first matching route of a group runs
    terminal: bool = False  # stop evaluating the enclosing route list after this route

    def config(self) -> dict[str, Any]:
        return _compact(
            {
                "group": self.group,
                "match": [s.config() for s in self.match],
                "handle": [h.config() for h in self.handle],
                "terminal": self.terminal,
            }
        )


@dataclass(frozen=True, slots=True)
class Subroute(Handler):
    routes: tuple[Route, ...] = ()
    name = "subroute"

    def config(self) -> dict[str, Any]:
        return {"handler": self.name, "routes": [r.config() for r in self.routes]}


@dataclass(frozen=True, slots=True)
class StaticResponse(Handler):
    """`respond`, `abort`, `error` (without handle_errors) and redirects."""

    status: int | None = None
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False
    abort: bool = False
    name = "static_response"
    terminal = True

    def config(self) -> dict[str, Any]:
        return _compact(
            {
                "handler": self.name,
                "status_code": self.status,
                "body": self.body,
                "headers": {k: [v] for k, v in self.headers},
                "close": self.close,
                "abort": self.abort,
            }
        )


@dataclass(frozen=True, slots=True)
class HeaderOp:
    action: str  # "set" | "add" | "delete" | "replace" | "default"
    field: str
    value: str = ""
    search: str | None = None  # for "replace": substring or regex to find
    regex: bool = False


@dataclass(frozen=True, slots=True)
class Headers(Handler):
    """`header`: response header manipulation. `deferred` ops apply when the response starts."""

    ops: tuple[HeaderOp, ...] = ()
    deferred: bool = False
    name = "headers"

    def config(self) -> dict[str, Any]:
        ops: dict[str, Any] = {}
        for op in self.ops:
            ops.setdefault(op.action, {})
            if op.action == "delete":
                ops["delete"] = [*ops["delete"], op.field] if isinstance(ops["delete"], list) else [op.field]
            elif op.action == "replace":
                ops["replace"].setdefault(op.field, []).append(
                    {"search_regexp" if op.regex else "search": op.search, "replace": op.value}
                )
            else:
                ops[op.action].setdefault(op.field, []).append(op.value)
        return {"handler": self.name, "response": _compact({**ops, "deferred": self.deferred})}


@dataclass(frozen=True, slots=True)
class RequestBody(Handler):
    max_size: int = 0
    name = "request_body"

    def config(self) -> dict[str, Any]:
        return {"handler": self.name, "max_size": self.max_size}


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    password_hash: bytes = field(repr=False)  # bcrypt, Modular Crypt Format ($2a$/$2b$/$2y$)
    password: str = field(repr=False)  # as written in the Caddyfile (MCF or base64 of it)


@dataclass(frozen=True, slots=True)
class BasicAuth(Handler):
    """`basic_auth`: Caddy's `authentication` handler with the `http_basic` provider."""

    accounts: tuple[Account, ...] = ()
    realm: str = ""  # "" -> "restricted", Caddy's default
    algorithm: str = "bcrypt"
    name = "authentication"

    def config(self) -> dict[str, Any]:
        basic: dict[str, Any] = {
            "accounts": [{"password": a.password, "username": a.username} for a in self.accounts],
            "hash": {"algorithm": self.algorithm},
            "hash_cache": {},  # Caddy's Caddyfile adapter always enables the cache
        }
        if self.realm:
            basic["realm"] = self.realm
        if not self.accounts:
            del basic["accounts"]
        return {"handler": self.name, "providers": {"http_basic": basic}}


@dataclass(frozen=True, slots=True)
class SkipLog(Handler):
    """`log_skip`: matched requests are left out of the access log."""

    name = "vars"

    def config(self) -> dict[str, Any]:
        return {"handler": self.name, "log_skip": True}


@dataclass(frozen=True, slots=True)
class MetricsEndpoint(Handler):
    """Caddy's `metrics` directive: serve the Prometheus exposition here."""

    openmetrics: bool = True
    name = "metrics"
    terminal = True

    def config(self) -> dict[str, Any]:
        return _compact({"handler": self.name, "disable_openmetrics": not self.openmetrics})


@dataclass(frozen=True, slots=True)
class StripPathPrefix(Handler):
    """The rewrite that `handle_path` puts in front of its handlers."""

    prefix: str = ""
    name = "rewrite"

    def config(self) -> dict[str, Any]:
        return {"handler": self.name, "strip_path_prefix": self.prefix}


DEFAULT_MAX_LIVE_READERS = 10000
DEFAULT_POSTGRES_POOL_SIZE = 10


@dataclass(frozen=True, slots=True)
class Retention:
    """Extension: one `retention [<pattern>] { max_age, max_size }` block; the first block
    whose pattern matches a stream's path applies to it."""

    pattern: str | None = None  # None: every stream
    max_age: float | None = None  # seconds
    max_size: int | None = None  # bytes

    def config(self) -> dict[str, Any]:
        return _compact({
            "match": self.pattern,
            "max_age": format_duration(self.max_age) if self.max_age is not None else None,
            "max_size": self.max_size,
        })


@dataclass(frozen=True, slots=True)
class Postgres:
    """Extension: the `postgres` subdirective of `durable_streams` (a shared store)."""

    dsn: str
    pool_size: int = DEFAULT_POSTGRES_POOL_SIZE

    def config(self) -> dict[str, Any]:
        return {"dsn": self.dsn, "pool_size": self.pool_size}


@dataclass(frozen=True, slots=True)
class DurableStreams(Handler):
    """The `durable_streams` handler, with the plugin's defaults applied (Provision)."""

    data_dir: str | None = None  # None -> in-memory store (unless `postgres`)
    max_file_handles: int = 100
    long_poll_timeout: float = 30.0
    sse_reconnect_interval: float = 60.0
    webhook_callback_url: str | None = None
    # Extension: the reserved subscription APIs (PROTOCOL §6–7); `webhook_callback_url`
    # turns them on too, as it turns on the plugin's webhooks.
    subscriptions: bool = False
    # Extension (the plugin has no such option): long-polls + SSE at once, per handler.
    max_live_readers: int = DEFAULT_MAX_LIVE_READERS
    # Extension: page catch-up reads at this many bytes (None: one response to the tail).
    catch_up_page_size: int | None = None
    # Extension: the PostgreSQL store (a shared store for many nodes) instead of data_dir.
    postgres: Postgres | None = None
    # Extension: retention rules, in file order (none: nothing is ever dropped).
    retention: tuple[Retention, ...] = ()
    # Tunables without a Caddyfile option (tests and embedders set them); not adapted.
    max_read_bytes: int = 1 << 20  # page of a live read; piece of a streamed catch-up read
    max_body_size: int = 64 << 20  # request body limit unless `request_body` sets one
    slow_reader_timeout: float = 10.0  # seconds a live frame may sit in a full buffer
    name = "durable_streams"
    terminal = True

    def config(self) -> dict[str, Any]:
        return _compact(
            {
                "handler": self.name,
                "data_dir": self.data_dir,
                "postgres": self.postgres.config() if self.postgres else None,
                "retention": [rule.config() for rule in self.retention],
                "max_file_handles": self.max_file_handles,
                "long_poll_timeout": format_duration(self.long_poll_timeout),
                "sse_reconnect_interval": format_duration(self.sse_reconnect_interval),
                "webhook_callback_url": self.webhook_callback_url,
                "subscriptions": self.subscriptions or None,
                # only when set, so configs without the extension adapt like the plugin's
                "max_live_readers": None if self.max_live_readers == DEFAULT_MAX_LIVE_READERS else self.max_live_readers,
                "catch_up_page_size": self.catch_up_page_size,
            }
        )


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True, slots=True)
class Certificate:
    cert_file: str
    key_file: str
    hosts: tuple[str, ...] = ()  # SNI names this certificate serves (empty: any)
    # None: files the operator gave (`tls cert key`). "internal": a certificate the
    # runtime issues from the local CA into these storage paths. "acme": one the runtime
    # obtains from the issuers `Config.issuers_for(host)` names; its files are found at
    # run time (certmagic stores a certificate under the issuer that issued it), so
    # cert_file and key_file are empty.
    issuer: str | None = None

    @property
    def managed(self) -> bool:
        return self.issuer is not None


LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
ZEROSSL_DIRECTORY = "https://acme.zerossl.com/v2/DV90"


@dataclass(frozen=True, slots=True)
class AcmeIssuerConfig:
    """Caddy's `acme` issuer module (certmagic's ACMEIssuer), as far as we execute it."""

    ca: str = ""  # ACME directory URL; "" = Let's Encrypt production (Caddy leaves it out)
    email: str = ""
    trusted_roots: tuple[str, ...] = ()  # PEM files trusted for the CA's own HTTPS
    eab: tuple[str, str] | None = None  # External Account Binding: (key_id, mac_key)
    disable_http_challenge: bool = False
    disable_tlsalpn_challenge: bool = False
    # The ports the CA validates on (Caddy fills them in from the global http_port and
    # https_port). They are always the ports of our own listeners: the adapter refuses
    # anything else, so the runtime answers HTTP-01 on http_port and TLS-ALPN-01 on the
    # site's TLS listener and needs no solver listener of its own. 0 = the default port.
    alt_http_port: int = 0
    alt_tlsalpn_port: int = 0
    # Caddy binds its challenge solvers to this host (from `bind` / `default_bind`);
    # shown as Caddy shows it. Our challenges are answered by the site's own listeners.
    bind_host: str = ""

    @property
    def directory(self) -> str:
        return self.ca or LETS_ENCRYPT_DIRECTORY

    @property
    def challenges(self) -> tuple[str, ...]:
        """The challenge types this issuer may use, in certmagic's order of preference."""
        return tuple(name for name, off in (("tls-alpn-01", self.disable_tlsalpn_challenge),
                                            ("http-01", self.disable_http_challenge)) if not off)

    def config(self) -> dict[str, Any]:
        challenges = _compact({
            "http": _compact({"disabled": self.disable_http_challenge, "alternate_port": self.alt_http_port}) or None,
            "tls-alpn": _compact({"disabled": self.disable_tlsalpn_challenge,
                                  "alternate_port": self.alt_tlsalpn_port}) or None,
            "bind_host": self.bind_host,
        })
        return _compact({
            "ca": self.ca or None,
            "challenges": challenges or None,
            "email": self.email or None,
            "external_account": {"key_id": self.eab[0], "mac_key": self.eab[1]} if self.eab else None,
            "module": "acme",
            "trusted_roots_pem_files": list(self.trusted_roots) or None,
        })

    def describe(self) -> str:
        return f"ACME {self.directory}"


@dataclass(frozen=True, slots=True)
class InternalIssuerConfig:
    """Caddy's `internal` issuer: the local CA ("local")."""

    def config(self) -> dict[str, Any]:
        return {"module": "internal"}

    def describe(self) -> str:
        return "local CA"


IssuerConfig = AcmeIssuerConfig | InternalIssuerConfig


def default_issuers(email: str = "") -> tuple[IssuerConfig, ...]:
    """caddytls.DefaultIssuers: Let's Encrypt, then ZeroSSL's ACME CA when an email is known."""
    if email.strip():
        return (AcmeIssuerConfig(email=email), AcmeIssuerConfig(ca=ZEROSSL_DIRECTORY, email=email))
    return (AcmeIssuerConfig(),)


@dataclass(frozen=True, slots=True)
class AutomationPolicy:
    """One of Caddy's `apps.tls.automation.policies`: which issuers serve which subjects.

    No subjects: a catch-all, for every name no earlier policy covers. No issuers: Caddy's
    run-time defaults (the local CA when every subject is internal, else Let's Encrypt)."""

    subjects: tuple[str, ...] = ()
    issuers: tuple[IssuerConfig, ...] = ()

    def covers(self, subject: str) -> bool:
        """Whether certmagic picks this policy for `subject` (catch-all: always)."""
        return not self.subjects or any(match_wildcard(subject, s) for s in self.subjects)

    def config(self) -> dict[str, Any]:
        return _compact({"subjects": list(self.subjects), "issuers": [i.config() for i in self.issuers]})


@dataclass(frozen=True, slots=True)
class Timeouts:
    read_body: float | None = None
    read_header: float | None = None
    write: float | None = None
    idle: float | None = None

    def config(self) -> dict[str, Any]:
        return _compact({k: _dur(getattr(self, k)) for k in ("read_body", "read_header", "write", "idle")})


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    listen: tuple[ListenAddress, ...]
    routes: tuple[Route, ...] = ()
    certificates: tuple[Certificate, ...] = ()  # non-empty -> TLS on every listener
    tls_min_version: str | None = None  # "tls1.2" | "tls1.3"
    tls_max_version: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_header_size: int | None = None
    # Extensions (Caddy has no such options); None: the HTTP layer's defaults.
    max_header_fields: int | None = None
    max_connections: int | None = None
    min_body_rate: int | None = None  # bytes per second
    trusted_proxies: tuple[str, ...] = ()
    client_ip_headers: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()
    access_log: bool = False
    # Automatic HTTPS redirects. Caddy adds them when it starts, so `adapt` does not show
    # them; they run before the server's own routes.
    https_redirects: tuple[Route, ...] = ()

    # The name Caddy gives the server it creates at run time for redirects alone.
    REDIRECT_ONLY_NAME = "remaining_auto_https_redirects"

    @property
    def runtime_routes(self) -> tuple[Route, ...]:
        return self.https_redirects + self.routes

    @property
    def adapted(self) -> bool:
        """False for the redirect-only server, which `caddy adapt` never prints."""
        return self.name != self.REDIRECT_ONLY_NAME

    @property
    def tls(self) -> bool:
        return bool(self.certificates)

    def config(self) -> dict[str, Any]:
        return _compact(
            {
                "listen": [str(a) for a in self.listen],
                "routes": [r.config() for r in self.routes],
                "tls_certificates": [
                    _compact({"certificate": c.cert_file, "key": c.key_file, "hosts": list(c.hosts)})
                    for c in self.certificates
                    if not c.managed
                ],
                "tls_protocols": [v for v in (self.tls_min_version, self.tls_max_version) if v],
                "timeouts": self.timeouts.config(),
                "max_header_bytes": self.max_header_size,
                "max_header_fields": self.max_header_fields,
                "max_connections": self.max_connections,
                "min_body_rate": self.min_body_rate,
                "trusted_proxies": list(self.trusted_proxies),
                "client_ip_headers": list(self.client_ip_headers),
                "protocols": list(self.protocols),
                "logs": {} if not self.access_log else {"enabled": True},
            }
        )


@dataclass(frozen=True, slots=True)
class LogConfig:
    name: str = "default"
    output: str = "stderr"  # stderr | stdout | discard | file
    file_path: str | None = None
    format: str | None = None  # json | console | None (auto: console on a TTY)
    level: str = "INFO"

    def config(self) -> dict[str, Any]:
        writer: dict[str, Any] = {"output": self.output}
        if self.file_path:
            writer["filename"] = self.file_path
        return _compact({"writer": writer, "encoder": {"format": self.format} if self.format else None, "level": self.level})


@dataclass(frozen=True, slots=True)
class Config:
    servers: tuple[Server, ...] = ()
    admin_off: bool = False
    # operations endpoint (/metrics, /healthz, /readyz); only when `admin <addr>` is given
    admin: ListenAddress | None = None
    metrics: bool = False  # per-request HTTP metrics (global `metrics` / servers { metrics })
    auto_https: tuple[str, ...] = ()
    http_port: int = 80
    https_port: int = 443
    grace_period: float | None = None
    shutdown_delay: float | None = None
    debug: bool = False
    logs: tuple[LogConfig, ...] = ()
    warnings: tuple[str, ...] = ()
    # `storage file_system <path>` as written (None: Caddy's default location), and the
    # storage root actually used for certificates and the local CA.
    storage: str | None = None
    storage_root: str = ""
    tls_policies: tuple[AutomationPolicy, ...] = ()
    # apps.tls.certificates.automate: names Caddy manages although no route matcher names
    # them (a site with a key without host and keys with hosts); shown as Caddy shows them.
    # Such a site serves its own `tls <cert> <key>` (we refuse it without one), so the
    # runtime need not obtain these: Caddy would, and never serve them.
    tls_automate: tuple[str, ...] = ()

    def policy_for(self, subject: str) -> AutomationPolicy | None:
        """The policy certmagic's getAutomationPolicyForName picks: the first, in order,
        that covers `subject` (the adapter puts catch-alls last)."""
        return next((p for p in self.tls_policies if p.covers(subject)), None)

    def issuers_for(self, subject: str, internal: bool) -> tuple[IssuerConfig, ...]:
        """The issuers tried in order for `subject` (`internal`: a name no public CA serves,
        certnames.is_internal), as Caddy's automatic HTTPS settles them at start-up:

        - an internal name that no policy lists by name gets a policy of its own with the
          local CA, placed before any policy that would cover it otherwise;
        - otherwise the policy certmagic picks decides; one without issuers means the
          local CA if all its subjects are internal, else Let's Encrypt alone;
        - no policy: the local CA for internal names, Let's Encrypt (no email) for others.

        An ACME issuer's alt_*_port, when set, is always this config's http_port or
        https_port (the adapter refuses others), so challenges are answered there.
        """
        listed = any(subject == s for p in self.tls_policies for s in p.subjects)
        if internal and not listed:
            return (InternalIssuerConfig(),)
        policy = self.policy_for(subject)
        if policy is None:
            return (InternalIssuerConfig(),) if internal else default_issuers()
        if policy.issuers:
            return policy.issuers
        if policy.subjects and all(_is_internal(s) for s in policy.subjects):
            return (InternalIssuerConfig(),)
        return default_issuers()

    @property
    def ignore_loaded_certs(self) -> bool:
        """`auto_https ignore_loaded_certs`: Caddy manages a site's name even when a
        certificate loaded from files (`tls <cert> <key>`) already covers it. Without it,
        a managed certificate whose name a loaded certificate covers (by its SANs, which
        only the runtime reads) is not obtained, and the loaded one is served."""
        return "ignore_loaded_certs" in self.auto_https

    @property
    def managed_certificates(self) -> tuple[Certificate, ...]:
        """Every certificate the runtime issues itself, once each."""
        out: dict[str, Certificate] = {}
        for server in self.servers:
            for cert in server.certificates:
                if cert.managed:
                    out.setdefault(cert.cert_file or cert.hosts[0], cert)
        return tuple(out.values())

    @property
    def log_level(self) -> str:
        if self.debug:
            return "DEBUG"  # like Caddy, `debug` wins over the default logger's level
        for log in self.logs:
            if log.name == "default":
                return log.level
        return "INFO"

    def to_json(self) -> dict[str, Any]:
        http = _compact(
            {
                "http_port": self.http_port if self.http_port != 80 else None,
                "https_port": self.https_port if self.https_port != 443 else None,
                "grace_period": _dur(self.grace_period),
                "shutdown_delay": _dur(self.shutdown_delay),
                "servers": {s.name: s.config() for s in self.servers if s.adapted},
            }
        )
        out: dict[str, Any] = {}
        if self.admin_off:
            out["admin"] = {"disabled": True}
        elif self.admin is not None:
            out["admin"] = {"listen": str(self.admin)}
        if self.storage is not None:
            out["storage"] = {"module": "file_system", "root": self.storage}
        if self.metrics:
            http["metrics"] = {}
        if self.logs or self.debug:
            logs = {log.name: log.config() for log in self.logs}
            if self.debug and "default" not in logs:
                logs["default"] = {"level": "DEBUG"}
            out["logging"] = {"logs": logs}
        if self.auto_https:
            http["automatic_https"] = list(self.auto_https)
        out["apps"] = {"http": http}
        tls: dict[str, Any] = {}
        if self.tls_automate:
            tls["certificates"] = {"automate": list(self.tls_automate)}
        if self.tls_policies:
            tls["automation"] = {"policies": [p.config() for p in self.tls_policies]}
        if tls:
            out["apps"]["tls"] = tls
        return out
