"""apps.tls.automation: which issuers obtain the certificates of which names.

A port of the policy half of Caddy's buildTLSApp (caddyconfig/httpcaddyfile/tlsapp.go),
for the options we execute: newBaseAutomationPolicy (cert_issuer, local_certs and the
global ACME settings make a catch-all), a policy per site block and listener group, the
split of a site's public and internal names, the global ACME defaults filled into every
ACME issuer (fillInGlobalACMEDefaults), consolidateAutomationPolicies and the check that
no name is in two policies. Caddy builds these with shared pointers (a global issuer is
one object in every policy that uses it, so a site's `bind` changes it for all of them);
`_Issuer` and `_Policy` are mutable on purpose, to give the same output.

Not ported: options we refuse or ignore (key_type, ocsp_stapling, renewal_window_ratio,
preferred_chains, acme_dns, on-demand TLS, ECH, Tailscale names).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .addresses import SiteAddress
from .certnames import is_internal, match_wildcard
from .directives.issuers import SiteIssuers
from .errors import AdaptError
from .model import AcmeIssuerConfig, AutomationPolicy, InternalIssuerConfig, IssuerConfig, default_issuers

_INTERNAL_RAW = InternalIssuerConfig().config()


@dataclass(frozen=True)
class SiteBlock:
    """A site block as one listener group sees it (Caddy splits a block per listener
    address, keeping only the keys served there; the directives are shared)."""

    site: object  # identity of the site block: its issuers are resolved once per block
    addresses: tuple[SiteAddress, ...]
    issuers: tuple[SiteIssuers, ...]  # of each `tls` directive (Caddy piles them up)
    bind_hosts: tuple[str, ...] = ()  # the first address of each `bind` directive


@dataclass(frozen=True)
class Pairing:
    """Listeners served together (one server) and the site blocks on them."""

    ports: tuple[int, ...]
    blocks: tuple[SiteBlock, ...]


@dataclass(frozen=True)
class TLSAutomation:
    policies: tuple[AutomationPolicy, ...] = ()
    automate: tuple[str, ...] = ()  # apps.tls.certificates.automate


class _Issuer:
    """One issuer object, shared wherever Caddy shares the pointer."""

    def __init__(self, value: IssuerConfig) -> None:
        self.value = value


@dataclass(eq=False)
class _Policy:
    subjects: list[str] = field(default_factory=list)
    issuers: list[_Issuer] = field(default_factory=list)  # Caddy's decoded Issuers
    raw: list[dict[str, Any]] | None = None  # Caddy's IssuersRaw (what adapt prints)

    def same(self, other: _Policy) -> bool:
        """reflect.DeepEqual of two policies, for the fields we have."""
        return (self.subjects == other.subjects and self.raw == other.raw
                and [i.value for i in self.issuers] == [i.value for i in other.issuers])


def _certmagic_qualifies_for_cert(subject: str) -> bool:
    """certmagic.SubjectQualifiesForCert, which Caddy's adapter checks (our own rule,
    certnames.qualifies_for_cert, is stricter and refuses such sites with a clearer
    message later)."""
    return (subject.strip() != "" and not subject.startswith(".") and not subject.endswith(".")
            and ("*" not in subject or subject.startswith("*.") or subject == "*")
            and not any(c in subject for c in "()[]{}<> \t\n\"\\!@#$%^&|;'+="))


def qualifies_for_public_cert(subject: str) -> bool:
    """Caddy's subjectQualifiesForPublicCert (no on-demand): no IP, no internal name, at
    most one wildcard label."""
    return not is_internal(subject) and subject.count("*.") < 2


# --------------------------------------------------------------------------- issuers


def merge_acme(base: AcmeIssuerConfig, overrides: AcmeIssuerConfig) -> AcmeIssuerConfig:
    """Caddy's mergeACMEIssuers: what `overrides` sets wins; trusted roots add up."""
    roots = list(base.trusted_roots)
    roots += [r for r in overrides.trusted_roots if r not in roots]
    return replace(
        base,
        ca=overrides.ca or base.ca,
        email=overrides.email or base.email,
        eab=overrides.eab or base.eab,
        trusted_roots=tuple(roots),
        disable_http_challenge=base.disable_http_challenge or overrides.disable_http_challenge,
        disable_tlsalpn_challenge=base.disable_tlsalpn_challenge or overrides.disable_tlsalpn_challenge,
        alt_http_port=overrides.alt_http_port or base.alt_http_port,
        alt_tlsalpn_port=overrides.alt_tlsalpn_port or base.alt_tlsalpn_port,
        bind_host=overrides.bind_host or base.bind_host,
    )


def implicit_acme_issuers(opts: dict[str, Any], shortcut: AcmeIssuerConfig) -> list[IssuerConfig]:
    """Caddy's implicitACMEIssuers: a site's `tls <email>` / `ca` / `ca_root` / `eab` laid
    over the global `cert_issuer acme` issuers, else over the default issuers (only one
    when the site names its CA)."""
    templates = [i for i in opts.get("cert_issuer", ()) if isinstance(i, AcmeIssuerConfig)]
    if templates:
        return [merge_acme(t, shortcut) for t in templates]
    bases = [AcmeIssuerConfig()] if shortcut.ca else list(default_issuers(shortcut.email))
    return [merge_acme(b, shortcut) if isinstance(b, AcmeIssuerConfig) else b for b in bases]


def _fill_global_acme_defaults(issuer: _Issuer, opts: dict[str, Any]) -> None:
    """Caddy's fillInGlobalACMEDefaults: global settings fill what an ACME issuer leaves unset."""
    acme = issuer.value
    if not isinstance(acme, AcmeIssuerConfig):
        return
    changes: dict[str, Any] = {}
    if "email" in opts and not acme.email:
        changes["email"] = opts["email"]
    if "acme_ca" in opts and not acme.ca:
        changes["ca"] = opts["acme_ca"]
    if "acme_ca_root" in opts and opts["acme_ca_root"] not in acme.trusted_roots:
        changes["trusted_roots"] = (*acme.trusted_roots, opts["acme_ca_root"])
    if "acme_eab" in opts and acme.eab is None:
        changes["eab"] = opts["acme_eab"]
    if "http_port" in opts and not acme.alt_http_port:
        changes["alt_http_port"] = opts["http_port"]
    if "https_port" in opts and not acme.alt_tlsalpn_port:
        changes["alt_tlsalpn_port"] = opts["https_port"]
    if opts.get("default_bind") and not acme.bind_host:
        changes["bind_host"] = opts["default_bind"][0]
    if changes:
        issuer.value = replace(acme, **changes)


def _check_challenge_ports(issuer: IssuerConfig, http_port: int, https_port: int) -> None:
    """Our listeners answer the challenges, so a CA must validate on their ports."""
    if not isinstance(issuer, AcmeIssuerConfig):
        return
    for kind, port, ours, option in (("HTTP-01", issuer.alt_http_port, http_port, "alt_http_port"),
                                     ("TLS-ALPN-01", issuer.alt_tlsalpn_port, https_port, "alt_tlsalpn_port")):
        if port and port != ours:
            raise AdaptError(
                f"acme issuer option '{option} {port}' is not supported by durable-streams-server: it answers"
                f" {kind} challenges on its own listeners, port {ours} (set the global"
                f" {'http_port' if kind == 'HTTP-01' else 'https_port'} instead)"
            )


def _render(issuers: Sequence[_Issuer]) -> list[dict[str, Any]]:
    return [i.value.config() for i in issuers]


def _describe(issuers: Sequence[_Issuer]) -> str:
    return json.dumps(_render(issuers), sort_keys=True)


# --------------------------------------------------------------------------- policies


def _base_policy(opts: dict[str, Any], global_issuers: list[_Issuer], always: bool) -> _Policy | None:
    """Caddy's newBaseAutomationPolicy."""
    has_issuers = "cert_issuer" in opts
    has_local_certs = bool(opts.get("local_certs"))
    has_acme_defaults = any(k in opts for k in ("acme_ca", "acme_ca_root", "acme_eab"))
    if not (has_issuers or has_local_certs or has_acme_defaults):
        return _Policy() if always else None
    if has_issuers and has_local_certs:
        raise AdaptError("global options are ambiguous: local_certs is confusing when combined with cert_issuer,"
                         " because local_certs is also a specific kind of issuer")
    ap = _Policy()
    if has_issuers:
        ap.issuers = global_issuers  # the same objects in every policy, as in Caddy
    elif has_local_certs:
        ap.issuers = [_Issuer(InternalIssuerConfig())]
    if has_acme_defaults:
        for issuer in ap.issuers:
            _fill_global_acme_defaults(issuer, opts)
    return ap


def _hosts_from_keys(addresses: Sequence[SiteAddress]) -> list[str]:
    """Caddy's hostsFromKeys: none at all when a key has no host (it matches every host)."""
    if any(not a.host for a in addresses):
        return []
    return list(dict.fromkeys(a.host for a in addresses))


def _hosts_not_http(addresses: Sequence[SiteAddress], http_port: str) -> list[str]:
    return sorted({a.host for a in addresses if a.host and a.scheme != "http" and a.port != http_port})


def build_tls_automation(pairings: Sequence[Pairing], opts: dict[str, Any]) -> TLSAutomation:
    http_port = opts.get("http_port", 80)
    https_port = opts.get("https_port", 443)
    http_port_text = str(http_port)
    auto_https = set(opts.get("auto_https", ()))
    global_issuers = [_Issuer(i) for i in opts.get("cert_issuer", ())]

    shared_with_hostless: set[str] = set()
    if "off" not in auto_https:
        for pairing in pairings:
            for block in pairing.blocks:
                hostless = next((a for a in block.addresses if not a.host), None)
                if hostless is None:
                    continue
                shared_with_hostless.update(
                    a.host for a in block.addresses
                    if a.original != hostless.original and a.host and a.scheme != "http" and a.port != http_port_text)

    policies: list[_Policy] = []
    catch_all = _base_policy(opts, global_issuers, always=False)
    if catch_all is not None:
        policies.append(catch_all)

    site_issuers: dict[int, list[_Issuer]] = {}  # per site block: one set of issuer objects
    for pairing in pairings:
        if not any(port != http_port for port in pairing.ports):
            continue  # an HTTP-only server
        for block in pairing.blocks:
            if all(a.scheme == "http" for a in block.addresses):
                continue
            ap = _base_policy(opts, global_issuers, always=True)
            assert ap is not None
            hosts = _hosts_from_keys(block.addresses)
            if not hosts and catch_all is not None:
                ap = catch_all
            if any(block.issuers):
                key = id(block.site)
                if key not in site_issuers:
                    own: list[IssuerConfig] = []
                    for said in filter(None, block.issuers):
                        own += (said.explicit if said.explicit
                                else implicit_acme_issuers(opts, said.acme_shortcut))
                    site_issuers[key] = [_Issuer(i) for i in own]
                issuers = site_issuers[key]
                if ap is catch_all and _describe(ap.issuers) != _describe(issuers):
                    raise AdaptError(
                        "automation policy from site block is also default/catch-all policy because of key without"
                        f" hostname, and the two are in conflict: {_describe(ap.issuers)} != {_describe(issuers)}")
                ap.issuers = list(issuers)
            for bind_host in block.bind_hosts:
                for issuer in ap.issuers:
                    if isinstance(issuer.value, AcmeIssuerConfig) and not issuer.value.bind_host:
                        issuer.value = replace(issuer.value, bind_host=bind_host)
            if not hosts and catch_all is None:
                catch_all = ap  # a key without host, and no global settings: this one is the default
            ap.subjects = _hosts_not_http(block.addresses, http_port_text)
            split: _Policy | None = None
            if not ap.issuers:
                external, internal = [], []
                for subject in ap.subjects:
                    if not _certmagic_qualifies_for_cert(subject):
                        raise AdaptError(f"subject does not qualify for certificate: '{subject}'")
                    (external if qualifies_for_public_cert(subject) else internal).append(subject)
                if external and internal:
                    ap.subjects = external
                    split = _Policy(subjects=internal, raw=[dict(_INTERNAL_RAW)])
            policies.append(ap)
            if split is not None:
                policies.append(split)

    automate: list[str] = []
    if not auto_https & {"off", "disable_certs"}:
        automate = sorted(shared_with_hostless)
        internal_names = [h for h in automate if not qualifies_for_public_cert(h)]
        if internal_names:
            policies.append(_Policy(subjects=internal_names, raw=[dict(_INTERNAL_RAW)]))

    if policies and any(k in opts for k in ("email", "acme_ca", "acme_ca_root", "acme_eab")):
        for ap in policies:
            if not ap.issuers and all(qualifies_for_public_cert(s) for s in ap.subjects):
                # public names get the default issuers, which the global settings fill in
                defaults = [AcmeIssuerConfig()] if "acme_ca" in opts else default_issuers(opts.get("email", ""))
                ap.issuers = [_Issuer(i) for i in defaults]

    for ap in policies:
        for issuer in ap.issuers:
            _fill_global_acme_defaults(issuer, opts)
            _check_challenge_ports(issuer.value, http_port, https_port)
        if ap.issuers and ap.raw is None:
            ap.raw = _render(ap.issuers)

    policies = consolidate(policies)
    seen: set[str] = set()
    for ap in policies:
        for subject in ap.subjects:
            if subject in seen:
                raise AdaptError("hostname appears in more than one automation policy, making certificate management"
                                 f" ambiguous: {subject}")
            seen.add(subject)
    return TLSAutomation(tuple(_freeze(ap) for ap in policies), tuple(automate))


def _freeze(ap: _Policy) -> AutomationPolicy:
    if ap.issuers:
        issuers: tuple[IssuerConfig, ...] = tuple(i.value for i in ap.issuers)
    else:
        issuers = (InternalIssuerConfig(),) if ap.raw else ()
    return AutomationPolicy(subjects=tuple(ap.subjects), issuers=issuers)


# --------------------------------------------------------------------------- consolidation


def _is_subset(a: _Policy, b: _Policy) -> bool:
    """Caddy's automationPolicyIsSubset: every subject of `a` is covered by one of `b`."""
    if not b.subjects:
        return True
    if not a.subjects:
        return False
    return all(any(match_wildcard(s, t) for t in b.subjects) for s in a.subjects)


def _shadows(i: int, aps: list[_Policy]) -> int:
    return next((j for j in range(i + 1, len(aps)) if _is_subset(aps[i], aps[j])), -1)


def _implicit_class(ap: _Policy) -> str:
    if not ap.subjects:
        return "catch-all"
    public = any(qualifies_for_public_cert(s) for s in ap.subjects)
    internal = any(not qualifies_for_public_cert(s) for s in ap.subjects)
    return "mixed" if public and internal else "public" if public else "internal"


def _uses_default_internal_issuer(ap: _Policy) -> bool:
    if not ap.raw and not ap.issuers:
        return _implicit_class(ap) == "internal"
    return ap.raw is not None and len(ap.raw) == 1 and not ap.issuers and ap.raw[0] == _INTERNAL_RAW


def _same_issuers(a: _Policy, b: _Policy) -> bool:
    """Caddy's automationPoliciesHaveSameIssuers."""
    if a.raw == b.raw:
        if a.raw or a.issuers or b.raw or b.issuers:
            return True
        classes = {_implicit_class(a), _implicit_class(b)}
        return "catch-all" in classes or len(classes) == 1
    return _uses_default_internal_issuer(a) and _uses_default_internal_issuer(b)


def _is_empty(ap: _Policy) -> bool:
    return not ap.issuers and not ap.raw


def _stable_sort(aps: list[_Policy]) -> None:
    """Go's sort.SliceStable (an insertion sort up to 20 items) with Caddy's comparison,
    which is not a strict order, so the algorithm decides the result."""
    def less(a: _Policy, b: _Policy) -> bool:
        if _is_subset(a, b):
            return True
        if _is_subset(b, a):
            return False
        return len(a.subjects) > len(b.subjects)

    for i in range(1, len(aps)):
        j = i
        while j > 0 and less(aps[j], aps[j - 1]):
            aps[j], aps[j - 1] = aps[j - 1], aps[j]
            j -= 1


def consolidate(aps: list[_Policy]) -> list[_Policy]:
    """Caddy's consolidateAutomationPolicies, step by step."""
    aps = list(aps)
    _stable_sort(aps)
    original = len(aps)
    empty = 0
    i = 0
    while i < len(aps):
        if _is_empty(aps[i]):
            empty += 1
            shadow = _shadows(i, aps)
            # the last one goes (automatic HTTPS does the same by itself), and so does one that
            # shadows another empty one; one that shadows a real policy stays, to keep it from it
            if i == len(aps) - 1 or (shadow >= 0 and _is_empty(aps[shadow])):
                del aps[i]
                i -= 1
        i += 1
    if empty == original:
        return []

    i = 0
    while i < len(aps):
        j = i + 1
        restart = False
        while j < len(aps):
            if aps[i] is aps[j] or aps[i].same(aps[j]):
                del aps[j]
                restart = True
                break
            if _same_issuers(aps[i], aps[j]):
                if aps[i].subjects and not aps[j].subjects:
                    if _shadows(i, aps) >= j:
                        del aps[i]
                        restart = True
                        break
                else:
                    for subject in aps[j].subjects:
                        if subject not in aps[i].subjects:
                            aps[i].subjects.append(subject)
                    del aps[j]
                    j -= 1
            j += 1
        if restart:
            continue  # Go: i-- then the loop's i++: look at the same i again
        i += 1
    return aps
