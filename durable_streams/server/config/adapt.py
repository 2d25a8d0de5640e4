"""The mapping layer: Caddyfile syntax tree -> Config model (Caddy's httpcaddyfile, in Python).

Steps follow Caddy's Setup: global options; per site, matcher definitions then each
directive; site keys -> listener addresses; sites sharing a listener form one server,
ordered most-specific first; each site's handler routes are sorted and grouped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..caddyfile.tree import Caddyfile, Directive, ServerBlock, Token
from .addresses import AddressError, ListenAddress, SiteAddress, listener_port, parse_address, parse_bind_host
from .directives import DEFAULT_ORDER, GroupCounter, Scope, Value, build_subroute, lookup_directive
from .directives.base import CADDY_DIRECTIVES, normalize_directive_name
from .directives.global_options import evaluate_global_options
from .errors import AdaptError, prefix_error
from .matcher_defs import collect_matcher_definitions
from .matchers import HostMatcher, MatcherSet, PathMatcher
from .certnames import (
    ACME_ISSUER, INTERNAL_ISSUER, default_storage_root, is_internal, leaf_paths, match_wildcard, qualifies_for_cert,
)
from .model import InternalIssuerConfig, IssuerConfig
from .tls_automation import Pairing, SiteBlock, build_tls_automation
from .model import Certificate, Config, DurableStreams, Route, Server, StaticResponse, Subroute, Timeouts


@dataclass
class _Site:
    block: ServerBlock
    scope: Scope
    values: list[Value]
    addresses: list[SiteAddress] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Any]:
        return [v.value for v in self.values if v.kind == kind]


def _glue_trailing_tokens(d: Directive) -> Directive:
    """Tokens after a block's closing brace (`} respond b`) are read by Caddy's dispenser
    as one more line of that block; make them one, so every directive sees what Caddy sees."""
    block = d.block
    if block is not None:
        block = tuple(_glue_trailing_tokens(x) for x in block)
    if d.after:
        extra = Directive(d.after[0], tuple(d.after[1:]))
        block = (block or ()) + (extra,)
        return replace(d, block=block, after=())
    return d if block is d.block else replace(d, block=block)


def adapt(tree: Caddyfile) -> Config:
    tree = replace(
        tree,
        blocks=tuple(replace(b, directives=tuple(_glue_trailing_tokens(d) for d in b.directives)) for b in tree.blocks),
    )
    warnings: list[str] = list(tree.warnings)
    scope = Scope(matcher_defs={}, order=list(DEFAULT_ORDER), warnings=warnings, groups=GroupCounter())
    blocks = list(tree.blocks)
    opts: dict[str, Any] = {}
    if blocks and blocks[0].is_global_options:
        opts = evaluate_global_options(blocks[0].directives, scope)
        blocks = blocks[1:]

    sites: list[_Site] = []
    for block in blocks:
        if block.named_route:
            if block.keys:
                scope.warn(block.keys[0], "named route defined but never used: 'invoke' is not supported")
            continue
        if block.is_global_options:
            raise AdaptError("server block without any key is global configuration, and if used, it must be first")
        sites.append(_evaluate_site(block, scope))

    opts["storage_root"] = opts.get("storage") or default_storage_root()
    http_port = opts.get("http_port", 80)
    https_port = opts.get("https_port", 443)
    for i, site in enumerate(sites):
        for key in site.block.keys:
            try:
                site.addresses.append(parse_address(key.text))
            except AddressError as exc:
                raise AdaptError(f"parsing key: {exc}", key.file, key.line) from None
        for addr in site.addresses:
            if addr.path:
                scope.warn(site.block.keys[0], f"Using a path in a site address is deprecated; please use the 'handle' directive instead ({addr})")

    groups = _group_listeners(sites, opts, http_port, https_port)
    # in Caddy's order: pairings by listener address, their sites most specific first (as
    # serversFromPairings leaves them); the policies' order follows it
    automation = build_tls_automation(
        [Pairing(tuple(la.port for la in listens),
                 tuple(_site_block(site, keys) for site, keys in sorted(entries, key=_site_specificity)))
         for listens, entries in sorted(groups, key=lambda group: min(str(la) for la in group[0]))],
        opts,
    )
    opts["tls_policies"] = automation.policies
    opts["loaded_certificates"] = _loaded_certificates(sites)
    servers = _build_servers(groups, opts, scope, http_port, https_port)
    _check_data_dirs(sites)
    return Config(
        servers=tuple(servers),
        admin_off=opts.get("admin_off", False),
        admin=opts.get("admin"),
        metrics=opts.get("metrics", False),
        auto_https=tuple(opts.get("auto_https", ())),
        http_port=http_port,
        https_port=https_port,
        grace_period=opts.get("grace_period"),
        shutdown_delay=opts.get("shutdown_delay"),
        debug=opts.get("debug", False),
        logs=tuple(opts.get("logs", ())),
        warnings=tuple(warnings),
        storage=opts.get("storage"),
        storage_root=opts["storage_root"],
        tls_policies=opts["tls_policies"],
        tls_automate=automation.automate,
    )


def _loaded_certificates(sites: list[_Site]) -> tuple[Certificate, ...]:
    out = []
    for site in sites:
        cert = next((c for c, *_rest in site.of_kind("tls") if c is not None), None)
        hosts = tuple(dict.fromkeys(a.host for a in site.addresses if a.host and a.scheme != "http"))
        if cert is not None and hosts:
            out.append(Certificate(cert.cert_file, cert.key_file, hosts))
    return tuple(out)


def _site_block(site: _Site, keys: list[tuple[Token, SiteAddress]]) -> SiteBlock:
    return SiteBlock(
        site=site,
        addresses=tuple(a for _k, a in keys),
        issuers=tuple(issuers for *_rest, issuers in site.of_kind("tls")),
        bind_hosts=tuple(hosts[0].text for hosts, _protocols in site.of_kind("bind") if hosts),
    )


def _check_data_dirs(sites: list[_Site]) -> None:
    """Two `durable_streams` blocks on one data_dir would corrupt each other's store.

    Real Caddy accepts this (and breaks at run time); refusing it is stricter, never looser.
    A block shared by several listeners is one handler and one store, so it is fine.
    """
    seen: dict[str, Token] = {}
    for site in sites:
        for handler, token in _durable_streams_in(site.values):
            if handler.data_dir is None:
                continue
            key = os.path.normpath(handler.data_dir)
            if key in seen:
                raise AdaptError(
                    f"{token.file}:{token.line}: data_dir {handler.data_dir} is already used by another durable_streams"
                    f" block (in the directive at {seen[key].file}:{seen[key].line}); give each block its own data_dir",
                    token.file,
                    token.line,
                )
            seen[key] = token


def _durable_streams_in(values: list[Value]):
    def walk(routes):
        for route in routes:
            for h in route.handle:
                if isinstance(h, DurableStreams):
                    yield h
                yield from walk(getattr(h, "routes", ()))

    for v in values:
        if v.kind == "route":
            for h in walk((v.value,)):
                yield h, v.token


def _evaluate_site(block: ServerBlock, scope: Scope) -> _Site:
    for key in block.keys:
        if key.text in CADDY_DIRECTIVES:
            raise prefix_error(
                key, f"parsed '{key.text}' as a site address, but it is a known directive; directives must appear in a site block"
            )
    defs: dict[str, MatcherSet] = {}
    collect_matcher_definitions([d for d in block.directives if d.name.text.startswith("@")], defs)
    site_scope = scope.child(defs)
    values: list[Value] = []
    for d in block.directives:
        name = d.name.text
        if name.startswith("@"):
            continue
        fn = lookup_directive(d, nested=False, braces=block.has_braces)
        try:
            results = fn(d, site_scope)
        except AdaptError as exc:
            raise AdaptError(f"parsing caddyfile tokens for '{name}': {exc.text}", exc.file, exc.line) from None
        for v in results:
            v.directive = normalize_directive_name(name)
            v.token = d.name
            values.append(v)
    return _Site(block, site_scope, values)


# --------------------------------------------------------------------------- listeners -> servers


def _listeners_for_site(index: int, site: _Site, opts: dict[str, Any], http_port: int, https_port: int) -> dict[ListenAddress, list[tuple[Token, SiteAddress]]]:
    binds: list[str] = [h for hosts, _protos in site.of_kind("bind") for h in (t.text for t in hosts)]
    if not site.of_kind("bind") and opts.get("default_bind"):
        binds = list(opts["default_bind"])
    if not binds:
        binds = [""]
    out: dict[ListenAddress, list[tuple[Token, SiteAddress]]] = {}
    for j, (key, addr) in enumerate(zip(site.block.keys, site.addresses)):
        try:
            port = listener_port(addr, http_port, https_port)
            listeners = [parse_bind_host(b, port) for b in binds]
        except AddressError as exc:
            raise AdaptError(
                f"server block {index}, key {j} ({key.text}): determining listener address: {exc}", key.file, key.line
            ) from None
        for la in listeners:
            out.setdefault(la, []).append((key, addr))
    return out


_Group = tuple[list[ListenAddress], list[tuple[_Site, list[tuple[Token, SiteAddress]]]]]


def _group_listeners(sites: list[_Site], opts: dict[str, Any], http_port: int, https_port: int) -> list[_Group]:
    """Listeners serving exactly the same sites (and keys): one server each (Caddy's pairings)."""
    # listener -> [(site, keys of that site served there)], in order of appearance
    by_listener: dict[ListenAddress, list[tuple[_Site, list[tuple[Token, SiteAddress]]]]] = {}
    for i, site in enumerate(sites):
        for la, keys in sorted(_listeners_for_site(i, site, opts, http_port, https_port).items(), key=lambda kv: str(kv[0])):
            by_listener.setdefault(la, []).append((site, keys))

    for la, entries in by_listener.items():
        seen: set[str] = set()
        for _site, keys in entries:
            for key, addr in keys:
                ident = f"{addr.scheme}|{addr.host}|{addr.port}|{addr.path}"
                if ident in seen:
                    raise AdaptError(f"ambiguous site definition: {key.text}", key.file, key.line)
                seen.add(ident)

    # listeners serving exactly the same sites (and keys) become one server
    groups: list[tuple[list[ListenAddress], list[tuple[_Site, list[tuple[Token, SiteAddress]]]]]] = []
    for la, entries in by_listener.items():
        signature = [(id(s), [k.text for k, _ in keys]) for s, keys in entries]
        for listens, other in groups:
            if [(id(s), [k.text for k, _ in keys]) for s, keys in other] == signature:
                listens.append(la)
                break
        else:
            groups.append(([la], entries))
    return groups


def _build_servers(groups: list[_Group], opts: dict[str, Any], scope: Scope, http_port: int, https_port: int) -> list[Server]:
    auto_https = set(opts.get("auto_https", ()))
    servers: list[Server] = []
    redirect_hosts: list[tuple[str, int]] = []
    for n, (listens, entries) in enumerate(groups):
        server = _server(f"srv{n}", listens, entries, opts, scope, http_port, https_port)
        servers.append(server)
        if server.tls and not auto_https & {"off", "disable_redirects"}:
            for _site, keys in entries:
                for _key, addr in keys:
                    if addr.host and "{" not in addr.host:
                        redirect_hosts.append((addr.host, listens[0].port))
    if redirect_hosts:
        servers = _add_https_redirects(servers, redirect_hosts, opts, http_port, https_port)
    return servers


def _site_specificity(entry: tuple[_Site, list[tuple[Token, SiteAddress]]]) -> tuple[bool, bool, int, int]:
    _site, keys = entry
    hosts = [a.host for _k, a in keys]
    paths = [a.path for _k, a in keys]
    catch_all = any(h == "" for h in hosts)
    wildcard = catch_all or any("*" in h for h in hosts)
    return (catch_all, wildcard, -max(len(h) for h in hosts), -max(len(p) for p in paths))


def _site_matchers(keys: list[tuple[Token, SiteAddress]]) -> tuple[MatcherSet, ...]:
    if any(a.host == "" and not a.path for _k, a in keys):
        return ()
    by_path: dict[str, list[str]] = {}
    for _k, a in keys:
        hosts = by_path.setdefault(a.path, [])
        if a.host and a.host not in hosts:
            hosts.append(a.host)
    sets = []
    for path, hosts in by_path.items():
        matchers = []
        if hosts:
            matchers.append(HostMatcher(tuple(hosts)))
        if path:
            matchers.append(PathMatcher((path,)))
        sets.append(MatcherSet(tuple(matchers)))
    return tuple(sets)


def _needs_tls(addr: SiteAddress, port: int, has_cert: bool, http_port: int, https_port: int) -> bool:
    if addr.scheme == "https":
        return True
    if addr.scheme == "http" or port == http_port:
        return False
    return bool(addr.host) or has_cert or port == https_port


@dataclass(frozen=True)
class _Automation:
    """What automatic HTTPS may do for sites without `tls <cert> <key>`."""

    storage_root: str
    certs: bool  # False under `auto_https off` / `disable_certs`
    issuers_for: Callable[[str, bool], tuple[IssuerConfig, ...]]  # Config.issuers_for, from the policies
    # `tls <cert> <key>` of every site, with that site's names; Caddy manages no name that a
    # loaded certificate covers, and serves the loaded one (unless ignore_loaded_certs)
    loaded: tuple[Certificate, ...] = ()
    ignore_loaded: bool = False

    def loaded_covering(self, host: str) -> Certificate | None:
        """The loaded certificate that serves `host` instead of a managed one. Caddy asks
        the certificates' SANs; here a site's names stand for its certificate's SANs."""
        if self.ignore_loaded or not host:
            return None
        return next((c for c in self.loaded if any(match_wildcard(host, h) for h in c.hosts)), None)


def _needs_https_error(key: Token, reason: str) -> AdaptError:
    return AdaptError(
        f"{key.file}:{key.line}: site {key.text} needs HTTPS, but {reason}: add 'tls <cert_file> <key_file>' to the"
        " site, or serve plain HTTP with an http:// address or a ':port' address without a host",
        key.file,
        key.line,
    )


def _managed_certificate(key: Token, addr: SiteAddress, own_issuers: bool, auto: _Automation) -> Certificate:
    """The certificate automatic HTTPS gives this site address, or why it cannot.

    Caddy's rules: unless auto_https turns certificates off (then only a site's own
    `tls internal` / `tls { issuer ... }` still gets one, which Caddy would not do: it
    serves TLS that no handshake completes), the automation policies decide, as at
    Caddy's start-up (Config.issuers_for): names no public CA issues for (localhost,
    *.localhost, *.local, *.internal, *.home.arpa, IP addresses) get the local CA unless
    a policy names them, every other name the policy covering it, else Let's Encrypt."""
    host = addr.host
    if not host:
        raise _needs_https_error(
            key, "the address has no host name to issue a certificate for (automatic HTTPS needs one)"
        )
    if not qualifies_for_cert(host):
        raise _needs_https_error(key, f"subject does not qualify for certificate: '{host}'")
    if not own_issuers and not auto.certs:
        # Caddy accepts this and serves TLS that no handshake can complete (no certificate)
        raise _needs_https_error(
            key, "auto_https turns off automatic certificates, and durable-streams-server serves no TLS site without one")
    issuers = auto.issuers_for(host, is_internal(host))
    if isinstance(issuers[0], InternalIssuerConfig):
        cert_file, key_file, _meta = leaf_paths(auto.storage_root, host)
        return Certificate(cert_file, key_file, (host,), issuer=INTERNAL_ISSUER)
    return Certificate("", "", (host,), issuer=ACME_ISSUER)


def _server(name: str, listens: list[ListenAddress], entries, opts, scope: Scope, http_port: int, https_port: int) -> Server:
    auto = _Automation(
        storage_root=opts["storage_root"],
        certs=not set(opts.get("auto_https", ())) & {"off", "disable_certs"},
        issuers_for=Config(tls_policies=opts["tls_policies"]).issuers_for,
        loaded=opts["loaded_certificates"],
        ignore_loaded="ignore_loaded_certs" in opts.get("auto_https", ()),
    )
    entries = sorted(entries, key=_site_specificity)
    port = listens[0].port
    routes: list[Route] = []
    certificates: list[Certificate] = []
    tls_versions: tuple[str | None, str | None] = (None, None)
    plain_key: Token | None = None
    tls_key: Token | None = None
    access_log = False
    conn_settings = False
    for site, keys in entries:
        tls_values = site.of_kind("tls")
        conn_settings = conn_settings or any(c is not None or mn for c, mn, *_rest in tls_values)
        cert = next((c for c, *_rest in tls_values if c is not None), None)
        for _c, mn, mx, _issuer in tls_values:
            if mn and tls_versions == (None, None):
                tls_versions = (mn, mx)
        own_issuers = any(issuers for *_rest, issuers in tls_values)
        site_needs_tls = False
        for key, addr in keys:
            if _needs_tls(addr, port, cert is not None or own_issuers, http_port, https_port):
                site_needs_tls = True
                tls_key = tls_key or key
                if cert is None:
                    covering = auto.loaded_covering(addr.host)
                    if covering is not None:
                        given = Certificate(covering.cert_file, covering.key_file, (addr.host,))
                    else:
                        given = _managed_certificate(key, addr, own_issuers, auto)
                    if (given.cert_file, given.hosts) not in {(c.cert_file, c.hosts) for c in certificates}:
                        certificates.append(given)
            else:
                plain_key = plain_key or key
        if site_needs_tls and cert is not None:
            hosts = tuple(a.host for _k, a in keys if a.host)
            certificates.append(Certificate(cert.cert_file, cert.key_file, hosts))
        site_routes = build_subroute([v for v in site.values if v.kind == "route"], site.scope, sort=True)
        routes.extend(_site_routes(_site_matchers(keys), site_routes, alone=len(entries) == 1))
        access_log = access_log or bool(site.of_kind("log"))
    explicit_http = any(a.scheme == "http" or port == http_port for _site, keys in entries for _k, a in keys)
    if explicit_http and conn_settings:
        # Caddy's detectConflictingSchemes: a `tls` directive with settings of its own
        # (certificate files, protocols) makes a connection policy, which an HTTP server cannot have
        raise AdaptError(f"server listening on [{' '.join(str(la) for la in listens)}] is HTTP, but attempts to"
                         " configure TLS connection policies")
    if plain_key is not None and tls_key is not None:
        raise AdaptError(
            f"{tls_key.file}:{tls_key.line}: listener {listens[0]} would serve both HTTP ({plain_key.text}) and HTTPS"
            f" ({tls_key.text}); use separate ports",
            tls_key.file,
            tls_key.line,
        )
    server_opts = _server_options(listens, opts)
    return Server(
        name=name,
        listen=tuple(listens),
        routes=tuple(routes),
        certificates=tuple(certificates),
        tls_min_version=tls_versions[0],
        tls_max_version=tls_versions[1],
        timeouts=server_opts.get("timeouts", Timeouts()),
        max_header_size=server_opts.get("max_header_size"),
        max_header_fields=server_opts.get("max_header_fields"),
        max_connections=server_opts.get("max_connections"),
        min_body_rate=server_opts.get("min_body_rate"),
        trusted_proxies=server_opts.get("trusted_proxies", ()),
        client_ip_headers=server_opts.get("client_ip_headers", ()),
        protocols=server_opts.get("protocols", ()),
        access_log=access_log,
    )


def _site_routes(match: tuple[MatcherSet, ...], subroute: Subroute, *, alone: bool) -> list[Route]:
    """Caddy's appendSubrouteToRouteList: a lone catch-all site is flattened into the server."""
    if not match and not subroute.routes:
        return []
    has_host_matcher = any(isinstance(m, HostMatcher) for r in subroute.routes for s in r.match for m in s.matchers)
    if not match and alone and not has_host_matcher:
        return list(subroute.routes)
    handle = (subroute,) if subroute.routes else ()
    return [Route(match=match, handle=handle, terminal=True)]


def _server_options(listens: list[ListenAddress], opts: dict[str, Any]) -> dict[str, Any]:
    """Merge the `servers [listener] { ... }` blocks that apply to these listeners."""
    merged: dict[str, Any] = {}
    names = {str(la) for la in listens} | {f":{la.port}" for la in listens}
    for block in opts.get("servers", []):
        if block["listener"] is None or block["listener"] in names:
            merged.update({k: v for k, v in block.items() if k != "listener"})
    return merged


def _add_https_redirects(servers: list[Server], hosts: list[tuple[str, int]], opts, http_port: int, https_port: int) -> list[Server]:
    """Automatic HTTPS redirects: on the HTTP port, send the TLS sites' hosts to https://."""
    redirect_routes = []
    for host, port in hosts:
        target = "https://{http.request.host}" + ("" if port == https_port else f":{port}") + "{http.request.uri}"
        redirect_routes.append(
            Route(
                match=(MatcherSet((HostMatcher((host,)),)),),
                handle=(StaticResponse(status=308, headers=(("Location", target),)),),
                terminal=True,
            )
        )
    binds = list(opts.get("default_bind") or [""])
    listens = [parse_bind_host(b, http_port) for b in binds]
    out = []
    extended = False
    for server in servers:
        if any(la in listens for la in server.listen) and not server.tls:
            # an existing HTTP server on that port: redirects go before its catch-all sites
            server = replace(server, https_redirects=tuple(redirect_routes))
            extended = True
        out.append(server)
    if not extended:
        out.append(Server(name=Server.REDIRECT_ONLY_NAME, listen=tuple(listens), https_redirects=tuple(redirect_routes)))
    return out
