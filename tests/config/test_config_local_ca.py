"""Automatic HTTPS from the local CA in the config layer: which sites get a certificate
from the local CA, where it is stored, and the TLS automation that `adapt` shows (the
same as real `caddy adapt` for the TLS app, the storage, routes and listeners)."""

from __future__ import annotations

import json
import os

import pytest

from durable_streams.server.caddyfile.errors import CaddyfileError
from durable_streams.server.config import load_config
from durable_streams.server.config.certnames import default_storage_root, is_internal, leaf_paths, safe_key

from .oracle import caddy_adapt

STORE = "{\n\tstorage file_system /srv/caddy\n}\n"


def managed(text: str) -> dict[str, list[str]]:
    """server name -> the names it gets local-CA certificates for."""
    config = load_config(text)
    return {s.name: [h for c in s.certificates if c.managed for h in c.hosts] for s in config.servers if s.tls}


@pytest.mark.parametrize(
    "host", ["localhost", "a.localhost", "printer.local", "db.internal", "nas.home.arpa", "127.0.0.1", "10.1.2.3", "::1",
             "192.168.1.9", "fd00::1", "*.example"]
)
def test_internal_names(host: str) -> None:
    assert is_internal(host)


@pytest.mark.parametrize("host", ["example.com", "localhost.example.com", "local", "internal.example", "8.8.8.8",
                                  "2001:db8::1", "*.example.com"])
def test_public_names(host: str) -> None:
    assert not is_internal(host)


def test_local_sites_get_local_ca_certificates_on_their_port() -> None:
    text = STORE + "localhost:4437, 127.0.0.1:4437, [::1]:4437 {\n\trespond hi\n}\nlocalhost {\n\trespond x\n}\n"
    config = load_config(text)
    by_port = {s.listen[0].port: s for s in config.servers if s.tls}
    assert sorted(by_port) == [443, 4437]
    certs = by_port[4437].certificates
    assert [c.hosts for c in certs] == [("localhost",), ("127.0.0.1",), ("::1",)]
    assert certs[0].cert_file == "/srv/caddy/certificates/local/localhost/localhost.crt"
    assert certs[0].key_file == "/srv/caddy/certificates/local/localhost/localhost.key"
    assert certs[2].cert_file == "/srv/caddy/certificates/local/--1/--1.crt"
    assert config.managed_certificates[0].issuer == "internal"
    # the files are issued at start, so adapt does not list them as loaded certificates
    assert "tls_certificates" not in json.dumps(config.to_json())


def test_plain_http_stays_plain() -> None:
    text = STORE + "http://localhost:4437 {\n\trespond a\n}\n:8080 {\n\trespond b\n}\nlocalhost:80 {\n\trespond c\n}\n"
    assert managed(text) == {}


def test_tls_internal_and_local_certs_cover_public_names() -> None:
    assert managed(STORE + "streams.example.com {\n\ttls internal\n\trespond a\n}\n") == {"srv0": ["streams.example.com"]}
    assert managed(STORE + "a.example.com {\n\ttls {\n\t\tissuer internal\n\t}\n}\n") == {"srv0": ["a.example.com"]}
    local = "{\n\tlocal_certs\n\tstorage file_system /srv/caddy\n}\napi.example.com:8443 {\n\trespond a\n}\n"
    assert managed(local) == {"srv0": ["api.example.com"]}


def test_auto_https_off_keeps_explicit_tls_internal() -> None:
    text = "{\n\tauto_https off\n}\nlocalhost:4437 {\n\ttls internal\n\trespond a\n}\n"
    assert managed(text) == {"srv0": ["localhost"]}
    with pytest.raises(CaddyfileError, match="auto_https turns off automatic certificates"):
        load_config("{\n\tlocal_certs\n\tauto_https disable_certs\n}\nlocalhost:4437 {\n\trespond a\n}\n")


def test_given_certificate_files_win() -> None:
    text = "localhost:4437 {\n\ttls /c.pem /k.pem\n\trespond a\n}\n"
    (cert,) = load_config(text).servers[0].certificates
    assert not cert.managed and cert.cert_file == "/c.pem"


def test_storage_defaults_to_caddys_location(monkeypatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg")
    assert load_config("localhost {\n\trespond a\n}\n").storage_root == "/xdg/caddy"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", "/home/u")
    assert default_storage_root() == "/home/u/.local/share/caddy"
    assert load_config("{\n\tstorage file_system {\n\t\troot /r\n\t}\n}\n:80 {\n}\n").storage_root == "/r"


def test_storage_keys_like_certmagic() -> None:
    assert safe_key("*.Example.com") == "wildcard_.example.com"
    assert leaf_paths("/s", "*.localhost")[0] == os.path.join("/s", "certificates", "local", "wildcard_.localhost",
                                                             "wildcard_.localhost.crt")


ORACLE_CASES = [
    "{\n\tadmin off\n\tstorage file_system /tmp/ds-storage\n}\nlocalhost:4437 {\n\trespond hi\n}\n",
    "{\n\tstorage file_system {\n\t\troot /tmp/ds-storage\n\t}\n}\n127.0.0.1:4437 {\n\trespond hi\n}\n",
    "streams.example.com:8443 {\n\ttls internal\n\trespond hi\n}\n",
    "b.example.com, a.example.com {\n\ttls internal\n\trespond hi\n}\n",
    "{\n\tlocal_certs\n}\nstreams.example.com {\n\trespond hi\n}\nlocalhost:4437 {\n\trespond x\n}\n",
    "{\n\tauto_https disable_redirects\n}\nlocalhost:4437, x.internal:4437 {\n\trespond hi\n}\n",
    "127.0.0.1:4437, localhost:4437, a.example.com:4437 {\n\trespond hi\n}\n",
    "*.localhost {\n\trespond hi\n}\nlocalhost {\n\ttls internal\n\trespond x\n}\n",
    "{\n\tlocal_certs\n}\nhttp://a.example.com {\n\trespond hi\n}\nb.example.com:8443 {\n\trespond x\n}\n",
    "{\n\tlocal_certs\n\thttps_port 8443\n}\na.example.com {\n\trespond hi\n}\n[::1] {\n\trespond x\n}\n",
    "{\n\tcert_issuer internal\n}\na.example.com {\n\trespond hi\n}\nlocalhost {\n\trespond x\n}\n",
]


@pytest.mark.parametrize("text", ORACLE_CASES)
def test_tls_automation_equals_real_caddy(text: str, tmp_path) -> None:
    accepted, out = caddy_adapt(text, tmp_path)
    assert accepted, out
    theirs = json.loads(out)
    ours = load_config(text).to_json()
    assert ours.get("storage") == theirs.get("storage")
    assert ours["apps"].get("tls") == theirs["apps"].get("tls")
    for name, server in theirs["apps"]["http"]["servers"].items():
        assert ours["apps"]["http"]["servers"][name]["listen"] == server["listen"]
        assert ours["apps"]["http"]["servers"][name]["routes"] == server["routes"]
