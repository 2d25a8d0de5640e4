"""The challenge board: HTTP-01 answers, and the TLS-ALPN-01 challenge certificate (RFC 8737)
as a real TLS client sees it through a server that picks the board's context by SNI."""

from __future__ import annotations

import hashlib
import socket
import ssl
import tempfile
from pathlib import Path

import pytest
from challenge_servers import TLSALPNServer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ObjectIdentifier
from josepy.jwk import JWKEC

from acme import messages
from durable_streams.server.runtime.tls.challenges import ACME_TLS_ALPN, ChallengeBoard, TLSALPN01

KEY_AUTHORIZATION = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ"


def test_http01_answers_until_removed(board: ChallengeBoard) -> None:
    board.put_http01("tok", KEY_AUTHORIZATION)
    assert board.http01("tok") == KEY_AUTHORIZATION
    assert board.http01_for_path("/.well-known/acme-challenge/tok") == KEY_AUTHORIZATION
    assert board.http01_for_path("/.well-known/acme-challenge/other") is None
    assert board.http01_for_path("/v1/stream/tok") is None
    assert not board.is_empty()
    board.remove_http01("tok")
    assert board.http01("tok") is None and board.is_empty()


def challenge_handshake(port: int, name: str, alpn: list[str]) -> tuple[x509.Certificate, str | None, str]:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # the challenge certificate is self-signed by design
    client.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
            return x509.load_der_x509_certificate(der), tls.selected_alpn_protocol(), tls.version()


def test_tls_alpn01_certificate_is_rfc_8737s(board: ChallengeBoard, tls_alpn_server: TLSALPNServer,
                                             tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert not board.has_tls_alpn01()
    board.put_tls_alpn01("Streams.Example.com.", KEY_AUTHORIZATION)
    assert list(tmp_path.iterdir()) == []  # the key and certificate files were removed after loading
    assert board.has_tls_alpn01()

    cert, alpn, version = challenge_handshake(tls_alpn_server.port, "streams.example.com", [ACME_TLS_ALPN])
    assert alpn == ACME_TLS_ALPN
    assert version in ("TLSv1.2", "TLSv1.3")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["streams.example.com"]
    ext = cert.extensions.get_extension_for_oid(ObjectIdentifier("1.3.6.1.5.5.7.1.31"))
    assert ext.critical
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(KEY_AUTHORIZATION.encode()).digest()
    assert cert.issuer == cert.subject  # self-signed

    # no challenge for another name: no certificate for it
    with pytest.raises((ssl.SSLError, ConnectionError)):
        challenge_handshake(tls_alpn_server.port, "other.example.com", [ACME_TLS_ALPN])
    board.remove_tls_alpn01("STREAMS.example.com")
    assert not board.has_tls_alpn01() and board.tls_alpn01_context("streams.example.com") is None
    with pytest.raises((ssl.SSLError, ConnectionError)):
        challenge_handshake(tls_alpn_server.port, "streams.example.com", [ACME_TLS_ALPN])


def test_tls_alpn01_context_is_found_by_server_name_and_needs_tls12(board: ChallengeBoard) -> None:
    context = board.put_tls_alpn01("streams.example.com", KEY_AUTHORIZATION).context
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert board.tls_alpn01_context(None) is None
    assert board.tls_alpn01_context("streams.example.com") is context


def test_acme_library_parses_tls_alpn01_authorizations() -> None:
    body = messages.ChallengeBody.from_json({
        "type": "tls-alpn-01", "url": "https://ca.example/chall/1", "status": "pending",
        "token": "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"})
    assert isinstance(body.chall, TLSALPN01)
    authz = messages.Authorization.from_json({
        "identifier": {"type": "dns", "value": "streams.example.com"}, "status": "pending",
        "challenges": [body.to_json()]})
    assert authz.challenges[0].chall.typ == "tls-alpn-01"
    # the response POSTed to the challenge is the empty object (RFC 8555 §7.5.1)
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    assert body.chall.response(key).to_partial_json() == {}
    assert body.chall.key_authorization(key).startswith(body.chall.encode("token") + ".")
