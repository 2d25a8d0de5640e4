"""The ACME issuer against a real ACME CA (Pebble) over real sockets: HTTP-01 and
TLS-ALPN-01 issuance, certmagic's storage layout and modes, account reuse, badNonce
retries, failures, External Account Binding, and two issuers sharing a storage."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import ssl
import stat
import threading
import time
from pathlib import Path

import pytest
from challenge_servers import closed_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pebble_ca import EXAMPLE_EAB_KEYS, Pebble

from durable_streams.server.runtime.tls.acme import (
    LETS_ENCRYPT_PRODUCTION,
    AcmeError,
    AcmeIssuer,
    AcmeSettings,
    IssuedCertificate,
    account_paths,
    ari_cert_id,
    issuer_key,
)
from durable_streams.server.runtime.tls.storage import StorageLock, issue_lock_name

NAME = "streams.example.com"


def settings(pebble: Pebble, **options) -> AcmeSettings:
    return AcmeSettings(directory=pebble.directory_url, ca_root=pebble.api_ca_path, **options)


def handshake(issued: IssuedCertificate, trusted_root: str, name: str) -> x509.Certificate:
    """Serve the stored chain and key over TLS on loopback; a client that trusts only
    `trusted_root` connects for `name` and must verify it. Returns the leaf it saw."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(issued.cert_path, issued.key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except BaseException as exc:  # reported by the client side's failure
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=trusted_root)
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=name) as tls:
                assert tls.recv(2) == b"ok"
                der = tls.getpeercert(binary_form=True)
    finally:
        thread.join(10)
        listener.close()
    assert not errors, errors
    return x509.load_der_x509_certificate(der)


def dns_names(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --------------------------------------------------------------------------- HTTP-01

def test_http01_certificate_is_issued_stored_as_certmagic_does_and_verifies(
        tmp_path, pebble_factory, http01_server, board) -> None:
    started = time.monotonic()
    pebble = pebble_factory(http_port=http01_server.port, tls_port=closed_port())
    pebble_up = time.monotonic()
    storage = tmp_path / "storage"
    issued = AcmeIssuer(settings(pebble), str(storage), board).obtain([NAME])
    done = time.monotonic()
    print(f"\nPebble start {pebble_up - started:.3f} s; account + order to certificate {done - pebble_up:.3f} s")

    assert not issued.reused
    # HTTP-01 is preferred: the CA fetched the token from our HTTP server, and nothing is left up
    assert any(p.startswith("/.well-known/acme-challenge/") for p in http01_server.requests)
    assert board.is_empty()

    leaf = handshake(issued, pebble.issued_root_path, NAME)
    assert dns_names(leaf) == [NAME]
    assert issued.not_before == leaf.not_valid_before_utc and issued.not_after == leaf.not_valid_after_utc

    # certmagic's layout: certificates/<safe issuer key>/<name>/<name>.crt|.key|.json
    port = pebble.directory_url.split(":")[2].split("/")[0]
    assert issuer_key(pebble.directory_url) == f"127.0.0.1:{port}-dir"
    site = storage / "certificates" / f"127.0.0.1-{port}-dir" / NAME
    assert issued.cert_path == str(site / f"{NAME}.crt")
    assert issued.key_path == str(site / f"{NAME}.key")
    chain = x509.load_pem_x509_certificates((site / f"{NAME}.crt").read_bytes())
    assert len(chain) >= 2 and chain[0] == leaf  # the full chain, leaf first
    meta = json.loads((site / f"{NAME}.json").read_text())
    assert meta["sans"] == [NAME]
    assert meta["issuer_data"]["ca"] == pebble.directory_url
    assert meta["issuer_data"]["url"] == issued.certificate_url and issued.certificate_url.startswith("https://")
    assert meta["issuer_data"]["account"] == issued.account_url
    # the account: acme/<safe issuer key>/users/default/default.json|.key (no email)
    users = storage / "acme" / f"127.0.0.1-{port}-dir" / "users" / "default"
    account = json.loads((users / "default.json").read_text())
    assert account["location"] == issued.account_url and account["status"] == "valid"
    assert account["termsOfServiceAgreed"] is True
    assert b"PRIVATE KEY" in (users / "default.key").read_bytes()

    for path in (site / f"{NAME}.crt", site / f"{NAME}.key", site / f"{NAME}.json",
                 users / "default.json", users / "default.key"):
        assert mode(path) == 0o600, path
    for directory, _dirs, _files in os.walk(storage):
        assert mode(directory) == 0o700, directory


def test_account_is_registered_once_and_reused_by_later_issuers(
        tmp_path, pebble_factory, http01_server, board) -> None:
    pebble = pebble_factory(http_port=http01_server.port, tls_port=closed_port())
    storage = str(tmp_path / "storage")
    first = AcmeIssuer(settings(pebble, email="Ops@Example.com"), storage, board).obtain([NAME])
    reg_path, key_path = account_paths(storage, pebble.directory_url, "ops@example.com")
    assert reg_path.endswith("/users/ops@example.com/ops.json") and key_path.endswith("/users/ops@example.com/ops.key")
    registered = {p: (Path(p).read_bytes(), os.stat(p).st_mtime_ns) for p in (reg_path, key_path)}
    assert json.loads(registered[reg_path][0])["contact"] == ["mailto:ops@example.com"]
    assert pebble.new_account_count() == 1

    # a restarted process (a new issuer) renews: a new order under the stored account
    second = AcmeIssuer(settings(pebble, email="ops@example.com"), storage, board).obtain(
        [NAME], replacing=first.leaf())
    assert not second.reused
    assert second.leaf().serial_number != first.leaf().serial_number
    assert second.account_url == first.account_url
    # with no email configured, certmagic takes the most recent stored account
    third = AcmeIssuer(settings(pebble), storage, board).obtain(["other.example.com"])
    assert third.account_url == first.account_url
    assert pebble.new_account_count() == 1
    assert {p: (Path(p).read_bytes(), os.stat(p).st_mtime_ns) for p in (reg_path, key_path)} == registered


def test_stored_certificate_outside_its_renewal_window_is_reused_without_an_order(
        tmp_path, pebble_factory, http01_server, board) -> None:
    pebble = pebble_factory(http_port=http01_server.port, tls_port=closed_port())
    storage = str(tmp_path / "storage")
    first = AcmeIssuer(settings(pebble), storage, board).obtain([NAME])
    orders = pebble.log().count("POST /order-plz")
    again = AcmeIssuer(settings(pebble), storage, board).obtain([NAME])
    assert again.reused
    assert again.leaf() == first.leaf()
    assert pebble.log().count("POST /order-plz") == orders


def test_short_lived_certificate_in_its_renewal_window_is_renewed(
        tmp_path, pebble_factory, http01_server, board) -> None:
    # Pebble backdates nothing: 30 s of validity, renewal window the last third
    pebble = pebble_factory(http_port=http01_server.port, tls_port=closed_port(), certificate_validity=30)
    storage = str(tmp_path / "storage")
    first = AcmeIssuer(settings(pebble), storage, board).obtain([NAME])
    assert (first.not_after - first.not_before) <= dt.timedelta(seconds=31)
    assert not first.needs_renewal()
    # a renewal window of the whole lifetime makes the stored one due now
    renewed = AcmeIssuer(settings(pebble, renewal_window_ratio=1.0), storage, board).obtain([NAME])
    assert not renewed.reused and renewed.leaf().serial_number != first.leaf().serial_number


def test_account_the_ca_forgot_is_registered_again(tmp_path, pebble_factory, http01_server, board) -> None:
    """A CA reset (here: Pebble restarted at the same URL) forgets accounts; as certmagic
    does, the stored one is dropped and a new one registered."""
    first_ca = pebble_factory(http_port=http01_server.port, tls_port=closed_port())
    port = int(first_ca.directory_url.split(":")[2].split("/")[0])
    storage = str(tmp_path / "storage")
    first = AcmeIssuer(settings(first_ca), storage, board).obtain([NAME])
    first_ca.stop()
    second_ca = pebble_factory(http_port=http01_server.port, tls_port=closed_port(), api_port=port)
    assert second_ca.directory_url == first_ca.directory_url
    again = AcmeIssuer(settings(second_ca), storage, board).obtain([NAME], replacing=first.leaf())
    assert not again.reused and again.account_url != first.account_url
    assert json.loads(Path(account_paths(storage, second_ca.directory_url, None)[0]).read_text())["location"] \
        == again.account_url
    assert second_ca.new_account_count() == 1


# --------------------------------------------------------------------------- TLS-ALPN-01

def test_tls_alpn01_only(tmp_path, pebble_factory, tls_alpn_server, http01_server, board) -> None:
    pebble = pebble_factory(http_port=http01_server.port, tls_port=tls_alpn_server.port)
    started = time.monotonic()
    issued = AcmeIssuer(settings(pebble, challenges=("tls-alpn-01",)), str(tmp_path / "s"), board).obtain([NAME])
    print(f"\nTLS-ALPN-01: account + order to certificate {time.monotonic() - started:.3f} s")
    assert tls_alpn_server.handshakes >= 1
    assert http01_server.requests == []  # http-01 disabled: never offered to the CA
    assert board.is_empty() and not board.has_tls_alpn01()
    assert dns_names(handshake(issued, pebble.issued_root_path, NAME)) == [NAME]


# --------------------------------------------------------------------------- badNonce

def test_bad_nonces_at_30_percent_do_not_fail_orders(tmp_path, pebble_factory, http01_server, board, caplog) -> None:
    pebble = pebble_factory(http_port=http01_server.port, tls_port=closed_port(), nonce_reject=30)
    issuer = AcmeIssuer(settings(pebble), str(tmp_path / "s"), board)
    caplog.set_level(logging.DEBUG, logger="durable_streams.server.acme")
    started = time.monotonic()
    names = [f"n{i}.example.com" for i in range(5)]
    for name in names:
        assert dns_names(issuer.obtain([name]).leaf()) == [name]
    print(f"\n5 orders at 30 % badNonce: {time.monotonic() - started:.3f} s")
    retries = [r for r in caplog.records if "badNonce" in r.getMessage()]
    assert retries, "Pebble rejected no nonce: the test did not exercise the retry loop"
    assert "Configured to reject 30% of good nonces" in pebble.log()


# --------------------------------------------------------------------------- failures

def test_unreachable_http01_challenge_fails_with_the_cas_detail(tmp_path, pebble_factory, board) -> None:
    pebble = pebble_factory(http_port=closed_port(), tls_port=closed_port())
    issuer = AcmeIssuer(settings(pebble, challenges=("http-01",)), str(tmp_path / "s"), board)
    with pytest.raises(AcmeError) as caught:
        issuer.obtain([NAME])
    error = caught.value
    message = str(error)
    assert NAME in message and "http-01" in message
    assert error.challenge == "http-01"
    assert error.problem_type == "urn:ietf:params:acme:error:connection"
    assert "refused" in message.lower()  # Pebble's detail: the connection was refused
    assert board.is_empty()
    assert not os.path.exists(issuer.paths(NAME)[0])


def test_unreachable_tls_alpn01_challenge_fails_with_the_cas_detail(tmp_path, pebble_factory, board) -> None:
    pebble = pebble_factory(http_port=closed_port(), tls_port=closed_port())
    issuer = AcmeIssuer(settings(pebble, challenges=("tls-alpn-01",)), str(tmp_path / "s"), board)
    with pytest.raises(AcmeError, match=r"streams\.example\.com: tls-alpn-01 challenge failed") as caught:
        issuer.obtain([NAME])
    assert caught.value.problem_type and caught.value.problem_detail
    assert board.is_empty() and not board.has_tls_alpn01()


def test_unreachable_ca_is_a_clear_error(tmp_path, board) -> None:
    issuer = AcmeIssuer(AcmeSettings(directory=f"https://127.0.0.1:{closed_port()}/dir"), str(tmp_path), board)
    with pytest.raises(AcmeError, match=r"streams\.example\.com: cannot reach the ACME CA"):
        issuer.obtain([NAME])


def test_ca_with_an_untrusted_certificate_is_refused(tmp_path, pebble_factory, http01_server, board) -> None:
    pebble = pebble_factory(http_port=http01_server.port, tls_port=closed_port())
    # no acme_ca_root: the system store does not trust Pebble's test CA
    issuer = AcmeIssuer(AcmeSettings(directory=pebble.directory_url), str(tmp_path), board)
    with pytest.raises(AcmeError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        issuer.obtain([NAME])


def test_names_an_acme_ca_cannot_issue_for_are_refused_before_any_request(tmp_path, board) -> None:
    issuer = AcmeIssuer(AcmeSettings(directory=f"https://127.0.0.1:{closed_port()}/dir"), str(tmp_path), board)
    with pytest.raises(AcmeError, match="wildcard needs the dns-01 challenge"):
        issuer.obtain(["*.example.com"])
    with pytest.raises(AcmeError, match="not a name an ACME CA issues"):
        issuer.obtain(["192.0.2.1"])
    with pytest.raises(ValueError):
        issuer.obtain([])


def test_settings_are_validated() -> None:
    assert AcmeSettings().directory == LETS_ENCRYPT_PRODUCTION
    assert AcmeSettings().challenges == ("http-01", "tls-alpn-01")
    with pytest.raises(ValueError, match="unsupported ACME challenge type"):
        AcmeSettings(challenges=("dns-01",))
    with pytest.raises(ValueError, match="at least one"):
        AcmeSettings(challenges=())
    with pytest.raises(ValueError, match="not an http"):
        AcmeSettings(directory="acme.example.com/directory")


def test_issuer_keys_are_certmagics() -> None:
    assert issuer_key(LETS_ENCRYPT_PRODUCTION) == "acme-v02.api.letsencrypt.org-directory"
    assert issuer_key("https://acme.zerossl.com/v2/DV90") == "acme.zerossl.com-v2-DV90"
    assert issuer_key("https://127.0.0.1:14000/dir") == "127.0.0.1:14000-dir"
    assert issuer_key("https://ca.internal/") == "ca.internal"


# --------------------------------------------------------------------------- EAB

def test_external_account_binding(tmp_path, pebble_factory, http01_server, board) -> None:
    pebble = pebble_factory(http_port=http01_server.port, tls_port=closed_port(), eab_keys=EXAMPLE_EAB_KEYS)
    without = AcmeIssuer(settings(pebble), str(tmp_path / "a"), board)
    with pytest.raises(AcmeError, match="requires External Account Binding"):
        without.obtain([NAME])
    wrong = AcmeIssuer(settings(pebble, eab=("kid-1", EXAMPLE_EAB_KEYS["kid-2"])), str(tmp_path / "b"), board)
    with pytest.raises(AcmeError, match="registering an ACME account failed") as caught:
        wrong.obtain([NAME])
    assert caught.value.problem_detail
    right = AcmeIssuer(settings(pebble, eab=("kid-1", EXAMPLE_EAB_KEYS["kid-1"])), str(tmp_path / "c"), board)
    assert dns_names(handshake(right.obtain([NAME]), pebble.issued_root_path, NAME)) == [NAME]
    assert pebble.new_account_count() == 1
    assert board.is_empty()


# --------------------------------------------------------------------------- two issuers, one storage

def test_two_issuers_sharing_storage_make_one_account_and_one_order(
        tmp_path, pebble_factory, http01_server, board) -> None:
    """As two processes would: separate issuers, the storage locks between them."""
    pebble = pebble_factory(http_port=http01_server.port, tls_port=closed_port())
    storage = str(tmp_path / "storage")
    issuers = [AcmeIssuer(settings(pebble), storage, board) for _ in range(2)]
    results: list[IssuedCertificate] = []
    failures: list[BaseException] = []
    go = threading.Barrier(2)

    def run(issuer: AcmeIssuer) -> None:
        go.wait()
        try:
            results.append(issuer.obtain([NAME]))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in issuers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert sorted(r.reused for r in results) == [False, True]
    assert results[0].leaf() == results[1].leaf()
    assert pebble.log().count("POST /order-plz") == 1
    assert pebble.new_account_count() == 1


# --------------------------------------------------------------------------- renewal info

def test_renewal_window_is_none_when_the_ca_has_no_renewal_info(tmp_path, pebble_factory, http01_server, board) -> None:
    pebble = pebble_factory(http_port=http01_server.port, tls_port=closed_port())
    issuer = AcmeIssuer(settings(pebble), str(tmp_path), board)
    issued = issuer.obtain([NAME])
    assert issuer.renewal_window(issued.chain_pem) is None  # Pebble 2.4's directory has no renewalInfo


def test_ari_cert_id_is_rfc_9773s() -> None:
    # RFC 9773 §4.1's example: keyIdentifier 69:88:5B:..., serial 00:87:65:43:21
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x87654321).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
            .sign(key, hashes.SHA256()))
    assert ari_cert_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"



def test_obtain_waits_for_the_names_lock_and_can_be_cancelled(tmp_path, board) -> None:
    storage = str(tmp_path)
    other_process = StorageLock(storage, issue_lock_name(NAME))
    other_process.acquire()
    issuer = AcmeIssuer(AcmeSettings(directory=f"https://127.0.0.1:{closed_port()}/dir"), storage, board)
    cancel = threading.Event()
    outcome: list[BaseException] = []
    waiting = threading.Thread(target=lambda: outcome.append(pytest.raises(AcmeError, issuer.obtain, [NAME],
                                                                           cancel=cancel).value))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive()  # blocked on the lock, not failing on the unreachable CA
    cancel.set()
    waiting.join(5)
    assert "cancelled while waiting for the storage lock" in str(outcome[0])
    other_process.release()
