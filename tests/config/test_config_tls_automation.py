"""Automatic HTTPS with ACME in the config layer: the TLS automation policies (the same
as real `caddy adapt`), the issuers each name gets at run time (Config.issuers_for), the
global and site issuer options, and how auto_https treats certificates loaded from files."""

from __future__ import annotations

import json

import pytest

from durable_streams.server.caddyfile.errors import CaddyfileError
from durable_streams.server.config import load_config
from durable_streams.server.config.model import (
    LETS_ENCRYPT_DIRECTORY, ZEROSSL_DIRECTORY, AcmeIssuerConfig, AutomationPolicy, Config, InternalIssuerConfig,
)

from .oracle import caddy_adapt


def G(*lines: str) -> str:
    """A global options block."""
    return "{\n" + "".join(f"\t{line}\n" for line in lines) + "}\n"


def S(address: str, *lines: str) -> str:
    """A site block."""
    return f"{address} {{\n" + "".join(f"\t{line}\n" for line in lines) + "}\n"


R = "respond hi"
LE = AcmeIssuerConfig()
LOCAL = InternalIssuerConfig()

ORACLE_CASES = [
    G("email ops@example.com") + S("streams.example.com", R),
    G("email ops@example.com") + S("streams.example.com", R) + S("localhost:4437", R),
    G("email ops@example.com", "acme_ca https://ca.test/dir") + S("streams.example.com", R),
    G("acme_ca https://ca.test/dir", "acme_ca_root /etc/ca.pem") + S("streams.example.com", R) + S("localhost", R),
    G("acme_ca_root /etc/ca.pem") + S("a.example.com", R),
    G("acme_eab {\n\t\tkey_id kid\n\t\tmac_key mac\n\t}") + S("a.example.com", R),
    G("email ops@example.com", "acme_eab {\n\t\tkey_id kid\n\t\tmac_key mac\n\t}") + S("a.example.com", R),
    G("cert_issuer acme https://ca.test/dir", "cert_issuer internal") + S("a.example.com", R) + S("localhost", R),
    G("cert_issuer acme {\n\t\tdir https://ca.test/dir\n\t\temail x@example.com\n\t\tdisable_http_challenge\n\t}") + S("a.example.com", R),
    G("cert_issuer acme https://ca.test/dir", "email ops@example.com") + S("a.example.com", "tls me@example.com", R),
    S("a.example.com", "tls me@example.com", R),
    G("email ops@example.com") + S("a.example.com", "tls me@example.com", R) + S("b.example.com", R),
    S("a.example.com", "tls {\n\t\tca https://ca.test/dir\n\t\tca_root /etc/ca.pem\n\t}", R),
    S("a.example.com", "tls me@example.com {\n\t\tca_root /etc/ca.pem\n\t}", R),
    S("a.example.com", "tls {\n\t\teab kid mac\n\t}", R),
    S("a.example.com", "tls {\n\t\tissuer acme {\n\t\t\tdisable_http_challenge\n\t\t\tdisable_tlsalpn_challenge\n\t\t}\n\t}", R),
    S("a.example.com", "tls {\n\t\tissuer acme https://ca.test/dir {\n\t\t\temail e@example.com\n\t\t\ttrusted_roots /a.pem /b.pem\n\t\t\teab k m\n\t\t}\n\t\tissuer internal\n\t}", R),
    G("acme_ca https://ca.test/dir") + S("a.example.com", "tls {\n\t\tissuer acme\n\t\tissuer internal\n\t}", R),
    S("a.example.com, localhost, 127.0.0.1", R),
    G("email ops@example.com") + S("a.example.com, localhost, 127.0.0.1, db.internal", R),
    G("email ops@example.com") + S("a.example.com", R) + S("b.example.com", "tls internal", R) + S("localhost", R),
    G("email ops@example.com") + S("a.example.com", R) + S("b.example.com", R) + S("c.example.com:8443", R),
    S("a.example.com", "tls internal", R) + S("b.example.com", "tls internal", R) + S("localhost", R),
    S("*.example.com", "tls internal", R) + S("a.example.com", R),
    G("email ops@example.com") + S("*.example.com", "tls internal", R) + S("a.example.com", R),
    G("email ops@example.com") + S("http://a.example.com", R) + S("b.example.com", R),
    G("email ops@example.com") + S("a.example.com:80", R) + S("http://b.example.com:8080", R),
    G("email ops@example.com", "https_port 8443", "http_port 8080") + S("a.example.com", R),
    G("https_port 8443") + S("a.example.com", "tls {\n\t\tissuer acme\n\t}", R),
    G("local_certs", "email ops@example.com") + S("a.example.com", R) + S("localhost", R),
    G("local_certs") + S("a.example.com", "tls me@example.com", R),
    G("cert_issuer internal") + S("a.example.com", R) + S("b.example.com", "tls {\n\t\tissuer acme\n\t}", R),
    G("email ops@example.com", "default_bind 127.0.0.1") + S("a.example.com", R),
    G("cert_issuer acme") + S("a.example.com", "bind 10.0.0.1", R) + S("b.example.com", R),
    G("email ops@example.com") + S("a.example.com", "bind 10.0.0.1", R),
    G("email ops@example.com", "auto_https disable_redirects") + S("a.example.com", R),
    G("email ops@example.com", "auto_https ignore_loaded_certs") + S("a.example.com", R) + S("b.example.com", "tls /c.pem /k.pem", R),
    G("email ops@example.com") + S("a.example.com", "tls /c.pem /k.pem", R),
    S("a.example.com", "tls /c.pem /k.pem {\n\t\tissuer internal\n\t}", R),
    G("email ops@example.com") + S("a.example.com, b.example.com", R) + S("a.example.com:8443", R),
    S("a.example.com", "tls {\n\t\tissuer acme {\n\t\t\talt_http_port 80\n\t\t}\n\t}", R),
    S(":443, a.example.com, localhost", "tls /c.pem /k.pem", R),
    G("auto_https disable_certs") + S(":443, a.example.com", "tls /c.pem /k.pem", R),
    G("email ops@example.com") + S("*.example.com", "tls /w.crt /w.key", R) + S("a.example.com", R),
]


def _automation(adapted: dict) -> dict:
    """apps.tls minus the loaded certificate files (we keep those on the server)."""
    tls = adapted["apps"].get("tls", {})
    return {"automation": tls.get("automation"), "automate": tls.get("certificates", {}).get("automate")}


@pytest.mark.parametrize("text", ORACLE_CASES)
def test_tls_automation_equals_real_caddy(text: str, tmp_path) -> None:
    accepted, out = caddy_adapt(text, tmp_path)
    assert accepted, out
    theirs = json.loads(out)
    config = load_config(text)
    assert not config.warnings
    ours = config.to_json()
    assert _automation(ours) == _automation(theirs)
    def listeners(adapted: dict) -> list[list[str]]:
        return sorted(s["listen"] for s in adapted["apps"]["http"]["servers"].values())

    assert listeners(ours) == listeners(theirs)


CADDY_ERRORS = [
    (G("local_certs", "cert_issuer acme") + S("a.example.com", R), "global options are ambiguous: local_certs"),
    (S("a.example.com", "tls internal", R) + S("a.example.com:8443", R),
     "hostname appears in more than one automation policy, making certificate management ambiguous: a.example.com"),
    (G("email e@example.com") + S("a.example.com", "tls internal", R) + S("a.example.com:8443", R),
     "hostname appears in more than one automation policy"),
    (S("a.example.com", "tls internal {\n\t\tca https://x\n\t}", R),
     "cannot create both ACME and internal certificate issuers, at Caddyfile:4"),
    (S("a.example.com", "tls {\n\t\tca https://x\n\t\tissuer acme\n\t}", R),
     "cannot mix issuer subdirective (explicit issuers) with other issuer-specific subdirectives (implicit issuers),"
     " at Caddyfile:5"),
    (S("a.example.com", "tls {\n\t\tissuer foo\n\t}", R),
     "getting module named 'tls.issuance.foo': module not registered: tls.issuance.foo, at Caddyfile:3"),
    (G("cert_issuer foo") + S("a.example.com", R), "parsing caddyfile tokens for 'cert_issuer': getting module named"),
    (S("a.example.com", "tls {\n\t\tissuer acme {\n\t\t\tbogus\n\t\t}\n\t}", R),
     "unrecognized ACME issuer property: bogus, at Caddyfile:4"),
    (S("a.example.com", "tls {\n\t\tissuer acme https://a {\n\t\t\tdir https://b\n\t\t}\n\t}", R),
     "directory is already specified: https://a, at Caddyfile:4"),
    (G("acme_eab x") + S("a.example.com", R), "parsing caddyfile tokens for 'acme_eab': wrong argument count"),
    (G("acme_eab {\n\t\tfoo bar\n\t}") + S("a.example.com", R), "unrecognized parameter 'foo', at Caddyfile:3"),
    (S("a.example.com", "tls", R), "wrong argument count or unexpected line ending after 'tls', at Caddyfile:2"),
    (G("acme_ca https://ca.test/dir") + S(":8443", "tls internal", R),
     "automation policy from site block is also default/catch-all policy because of key without hostname"),
    (S("http://a.example.com", "tls /c.pem /k.pem", R),
     "server listening on [:80] is HTTP, but attempts to configure TLS connection policies"),
    (S("a.example.com", "tls {\n\t\tissuer acme {\n\t\t\tdistributed true\n\t\t}\n\t}", R),
     "only accepted value is 'false', at Caddyfile:4"),
    (S("a.example.com", "tls {\n\t\tissuer acme {\n\t\t\tdns cloudflare x\n\t\t}\n\t}", R),
     "getting module named 'dns.providers.cloudflare': module not registered: dns.providers.cloudflare"),
]


@pytest.mark.parametrize(("text", "message"), CADDY_ERRORS)
def test_errors_as_caddy_gives_them(text: str, message: str, tmp_path) -> None:
    accepted, theirs = caddy_adapt(text, tmp_path)
    assert not accepted and message in theirs
    with pytest.raises(CaddyfileError) as caught:
        load_config(text)
    assert message in str(caught.value)


OUR_REFUSALS = [
    (S("a.example.com", "tls {\n\t\tissuer zerossl key\n\t}", R), "issuer zerossl (ZeroSSL's API, with an API key)"),
    (S("a.example.com", "tls {\n\t\tissuer acme {\n\t\t\talt_http_port 8080\n\t\t}\n\t}", R),
     "'alt_http_port 8080' is not supported by durable-streams-server: it answers HTTP-01 challenges on its own"
     " listeners, port 80"),
    (G("https_port 8443") + S("a.example.com", "tls {\n\t\tissuer acme {\n\t\t\talt_tlsalpn_port 443\n\t\t}\n\t}", R),
     "'alt_tlsalpn_port 443' is not supported by durable-streams-server"),
    (S("a.example.com", "tls {\n\t\tissuer internal {\n\t\t\tlifetime 1h\n\t\t}\n\t}", R),
     "options of the internal issuer (ca, lifetime, sign_with_root) are not supported by durable-streams-server"),
    (S("a.example.com", "tls {\n\t\tissuer acme {\n\t\t\tpropagation_delay 1m\n\t\t}\n\t}", R),
     "acme issuer option 'propagation_delay' is not supported by durable-streams-server: the DNS challenge"),
    (S("a.example.com", "tls {\n\t\tresolvers 1.1.1.1\n\t}", R), "tls option 'resolvers' is not supported"),
]


@pytest.mark.parametrize(("text", "message"), OUR_REFUSALS)
def test_what_we_cannot_honour_is_refused(text: str, message: str, tmp_path) -> None:
    with pytest.raises(CaddyfileError, match="durable-streams-server") as caught:
        load_config(text)
    assert message in str(caught.value)


def test_options_that_only_tune_issuance_are_ignored_with_a_warning() -> None:
    block = "tls {\n\t\tissuer acme {\n\t\t\tlifetime 1d\n\t\t\ttimeout 30s\n\t\t\tprofile shortlived\n\t\t}\n\t}"
    config = load_config(S("a.example.com", block, R))
    assert [w.split(": ", 1)[1] for w in config.warnings] == [
        f"acme issuer option '{name}' accepted but ignored by durable-streams daemon"
        for name in ("lifetime", "timeout", "profile")
    ]
    assert config.issuers_for("a.example.com", False) == (LE,)
    with pytest.raises(CaddyfileError, match="invalid lifetime 1x"):
        load_config(S("a.example.com", "tls {\n\t\tissuer acme {\n\t\t\tlifetime 1x\n\t\t}\n\t}", R))


# --------------------------------------------------------------------------- issuers per name


def issuers(text: str, subject: str) -> tuple:
    from durable_streams.server.config.certnames import is_internal

    return load_config(text).issuers_for(subject, is_internal(subject))


def test_defaults_are_lets_encrypt_and_the_local_ca() -> None:
    text = S("streams.example.com", R) + S("localhost", R) + S("127.0.0.1", R)
    assert issuers(text, "streams.example.com") == (LE,)
    assert issuers(text, "localhost") == (LOCAL,)
    assert issuers(text, "127.0.0.1") == (LOCAL,)
    assert LE.directory == LETS_ENCRYPT_DIRECTORY


def test_an_email_adds_the_zerossl_fallback() -> None:
    text = G("email ops@example.com") + S("streams.example.com", R) + S("localhost", R)
    assert issuers(text, "streams.example.com") == (
        AcmeIssuerConfig(email="ops@example.com"), AcmeIssuerConfig(ca=ZEROSSL_DIRECTORY, email="ops@example.com"))
    assert issuers(text, "localhost") == (LOCAL,)
    site_email = S("streams.example.com", "tls me@example.com", R)
    assert [i.directory for i in issuers(site_email, "streams.example.com")] == [LETS_ENCRYPT_DIRECTORY, ZEROSSL_DIRECTORY]
    assert {i.email for i in issuers(site_email, "streams.example.com")} == {"me@example.com"}


def test_a_named_ca_replaces_the_defaults_for_public_names_only() -> None:
    text = G("email ops@example.com", "acme_ca https://ca.test/dir", "acme_ca_root /ca.pem") + S("a.example.com", R) + S("localhost", R)
    ca = AcmeIssuerConfig(ca="https://ca.test/dir", email="ops@example.com", trusted_roots=("/ca.pem",))
    assert issuers(text, "a.example.com") == (ca,)
    assert issuers(text, "other.example.com") == (ca,)  # the catch-all policy
    assert issuers(text, "localhost") == (LOCAL,)


def test_cert_issuer_order_is_the_fallback_order() -> None:
    text = G("cert_issuer acme https://ca.test/dir {\n\t\teab kid mac\n\t}", "cert_issuer internal") + S("a.example.com", R)
    assert issuers(text, "a.example.com") == (AcmeIssuerConfig(ca="https://ca.test/dir", eab=("kid", "mac")), LOCAL)
    assert issuers(text, "localhost") == (LOCAL,)  # internal names never go to a public CA by default
    assert load_config(text).servers[0].certificates[0].issuer == "acme"


def test_global_eab_fills_every_acme_issuer() -> None:
    text = G("acme_eab {\n\t\tkey_id kid\n\t\tmac_key mac\n\t}") + S("a.example.com", R)
    assert issuers(text, "a.example.com") == (AcmeIssuerConfig(eab=("kid", "mac")),)


def test_local_certs_and_tls_internal_use_the_local_ca_for_public_names() -> None:
    assert issuers(G("local_certs") + S("a.example.com", R), "a.example.com") == (LOCAL,)
    text = S("a.example.com", "tls internal", R) + S("b.example.com", R)
    assert issuers(text, "a.example.com") == (LOCAL,)
    assert issuers(text, "b.example.com") == (LE,)
    config = load_config(text)
    assert {c.hosts[0]: c.issuer for c in config.managed_certificates} == {"a.example.com": "internal",
                                                                           "b.example.com": "acme"}


def test_a_site_issuer_for_an_internal_name_is_used() -> None:
    text = S("localhost", "tls {\n\t\tissuer acme https://ca.test/dir {\n\t\t\tdisable_tlsalpn_challenge\n\t\t}\n\t}", R)
    (acme,) = issuers(text, "localhost")
    assert acme.directory == "https://ca.test/dir" and acme.challenges == ("http-01",)


def test_a_name_shadowing_a_wildcard_policy_keeps_the_defaults() -> None:
    text = S("*.example.com", "tls internal", R) + S("a.example.com", R)
    assert issuers(text, "a.example.com") == (LE,)
    assert issuers(text, "b.example.com") == (LOCAL,)


def test_policies_without_issuers_mean_caddys_run_time_defaults() -> None:
    internal_only = Config(tls_policies=(AutomationPolicy(subjects=("localhost", "a.internal")),))
    assert internal_only.issuers_for("localhost", True) == (LOCAL,)
    public = Config(tls_policies=(AutomationPolicy(subjects=("a.example.com",)),))
    assert public.issuers_for("a.example.com", False) == (LE,)
    assert public.issuers_for("db.internal", True) == (LOCAL,)


def test_challenge_ports_follow_the_global_ports() -> None:
    text = G("http_port 8080", "https_port 8443", "acme_ca https://ca.test/dir") + S("a.example.com", R)
    (acme,) = issuers(text, "a.example.com")
    assert (acme.alt_http_port, acme.alt_tlsalpn_port) == (8080, 8443)
    assert acme.challenges == ("tls-alpn-01", "http-01")
    # Caddy fills the ports in at start-up where no policy names them; they are always ours
    assert issuers(G("http_port 8080") + S("a.example.com", R), "a.example.com") == (LE,)


# --------------------------------------------------------------------------- auto_https and loaded certificates


def certificates(text: str) -> dict[str, list[tuple[str, str | None]]]:
    """server name -> [(host, issuer or the loaded file)]."""
    return {s.name: [(h, c.issuer or c.cert_file) for c in s.certificates for h in c.hosts]
            for s in load_config(text).servers if s.tls}


WILDCARD = S("*.example.com", "tls /w.crt /w.key", R)


def test_a_loaded_certificate_covering_a_name_serves_it_instead_of_a_managed_one() -> None:
    text = WILDCARD + S("a.example.com", R) + S("b.example.com:8443", R) + S("other.test", R)
    assert certificates(text) == {
        "srv0": [("a.example.com", "/w.crt"), ("other.test", "acme"), ("*.example.com", "/w.crt")],
        "srv1": [("b.example.com", "/w.crt")],
    }
    # and so no certificate is needed from automatic HTTPS at all
    assert certificates(G("auto_https disable_certs") + WILDCARD + S("a.example.com", R))["srv0"][0] == (
        "a.example.com", "/w.crt")


def test_ignore_loaded_certs_manages_covered_names() -> None:
    text = G("auto_https ignore_loaded_certs") + WILDCARD + S("a.example.com", R)
    config = load_config(text)
    assert config.ignore_loaded_certs and not load_config(WILDCARD).ignore_loaded_certs
    assert certificates(text) == {"srv0": [("a.example.com", "acme"), ("*.example.com", "/w.crt")]}


def test_a_site_with_its_own_files_never_gets_a_managed_certificate() -> None:
    for options in ("", G("auto_https ignore_loaded_certs")):
        assert certificates(options + S("a.example.com", "tls /c.pem /k.pem", R)) == {"srv0": [("a.example.com", "/c.pem")]}


def test_auto_https_off_and_disable_certs_refuse_uncovered_sites() -> None:
    for word in ("off", "disable_certs"):
        with pytest.raises(CaddyfileError, match="auto_https turns off automatic certificates"):
            load_config(G(f"auto_https {word}") + S("a.example.com", R))


# --------------------------------------------------------------------------- generated mixes


_GLOBALS = ["email ops@example.com", "acme_ca https://ca.test/dir", "acme_ca_root /ca.pem", "local_certs",
            "acme_eab {\n\t\tkey_id k\n\t\tmac_key m\n\t}", "cert_issuer acme https://g.test/dir", "cert_issuer internal",
            "https_port 8443", "http_port 8080", "auto_https disable_redirects", "auto_https ignore_loaded_certs",
            "default_bind 127.0.0.1"]
_HOSTS = ["a.example.com", "b.example.com", "*.example.com", "localhost", "*.localhost", "127.0.0.1", "db.internal",
          "c.test", "x.a.example.com", "*.a.example.com"]
_PORTS = ["", "", "", ":8443", ":443", ":80"]
_SITE_TLS = ["", "", "", "tls internal", "tls me@example.com", "tls {\n\t\tca https://s.test/dir\n\t}",
             "tls {\n\t\tissuer acme {\n\t\t\tdisable_http_challenge\n\t\t}\n\t}",
             "tls {\n\t\tissuer internal\n\t\tissuer acme\n\t}", "tls {\n\t\tca_root /r.pem\n\t}", "tls /c.pem /k.pem",
             "bind 10.0.0.1", "tls {\n\t\teab k2 m2\n\t}"]


def _generated(seed: int) -> str:
    """A Caddyfile mixing global issuer options with sites of every kind (deterministic)."""
    import random

    rnd = random.Random(seed)
    options = rnd.sample(_GLOBALS, rnd.randint(0, 3))
    text = G(*options) if options else ""
    used: set[str] = set()
    for _ in range(rnd.randint(1, 4)):
        keys = []
        for _ in range(rnd.randint(1, 2)):
            key = rnd.choice(["", "", "", "http://"]) + rnd.choice(_HOSTS) + rnd.choice(_PORTS)
            if key not in used:
                used.add(key)
                keys.append(key)
        if keys:
            line = rnd.choice(_SITE_TLS)
            text += S(", ".join(keys), *([line] if line else []), R)
    return text


@pytest.mark.parametrize("seed", range(40))
def test_generated_mixes_agree_with_real_caddy(seed: int, tmp_path) -> None:
    text = _generated(seed)
    accepted, out = caddy_adapt(text, tmp_path)
    try:
        config = load_config(text)
    except CaddyfileError as exc:
        # our refusals say so; HTTP and HTTPS on one listener is refused on purpose (see adapt._server)
        ours_on_purpose = "durable-streams-server" in str(exc) or "would serve both HTTP" in str(exc)
        assert not accepted or ours_on_purpose, f"Caddy accepts this; we said: {exc}"
        return
    assert accepted, f"Caddy rejects this ({out}); we accepted it"
    if not config.warnings:
        assert _automation(config.to_json()) == _automation(json.loads(out))
