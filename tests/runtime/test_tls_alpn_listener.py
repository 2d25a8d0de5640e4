"""A TLS listener while a TLS-ALPN-01 challenge is out (RFC 8737): only a client asking for
ALPN `acme-tls/1` gets the challenge certificate; every other visitor to the same name
gets the site's certificate and is served. Real ServerApp, real sockets, real TLS.

The site's certificate is put where an ACME issuer would have stored it, so the server
uses it without an order (its CA address answers nothing)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from durable_streams.server.config.certnames import acme_issuer_key, leaf_paths

from .helpers import free_port, serve

NAME = "streams.example.com"
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def store_site_certificate(storage: Path, directory: str) -> bytes:
    """A self-signed certificate for NAME at the ACME issuer's storage path; its DER."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file, _meta = leaf_paths(str(storage), NAME, acme_issuer_key(directory))
    Path(cert_file).parent.mkdir(parents=True, mode=0o700)
    Path(key_file).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    Path(cert_file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert.public_bytes(serialization.Encoding.DER)


async def handshake(port: int, alpn: list[str] | None) -> tuple[bytes, str | None, bytes]:
    """(the server's certificate DER, the ALPN chosen, the response to GET / or b"")."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=NAME)
    tls = writer.get_extra_info("ssl_object")
    der, chosen = tls.getpeercert(binary_form=True), tls.selected_alpn_protocol()
    body = b""
    if chosen in (None, "http/1.1"):
        writer.write(f"GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
        body = await reader.read()
    writer.close()
    return der, chosen, body


def test_only_acme_tls_clients_get_the_challenge_certificate(tmp_path: Path) -> None:
    directory = f"https://127.0.0.1:{free_port()}/dir"  # nothing listens: no order can succeed
    port = free_port()
    storage = tmp_path / "storage"
    site_der = store_site_certificate(storage, directory)
    text = (f"{{\n\tadmin off\n\tauto_https disable_redirects\n\tstorage file_system {storage}\n"
            f"\tacme_ca {directory}\n\thttps_port {port}\n}}\n{NAME} {{\n\trespond \"site\"\n}}\n")

    async def main() -> None:
        async with serve(text) as app:
            # no challenge out: the ClientHello is not even read
            der, chosen, body = await handshake(port, ["acme-tls/1"])
            assert der == site_der and chosen is None and body.endswith(b"site")

            app.challenges.put_tls_alpn01(NAME, "token.thumbprint")
            der, chosen, _ = await handshake(port, ["acme-tls/1"])
            challenge = x509.load_der_x509_certificate(der)
            assert chosen == "acme-tls/1"
            assert challenge.extensions.get_extension_for_oid(ACME_IDENTIFIER).critical
            for alpn in (["http/1.1"], None, ["h2", "http/1.1"]):
                der, chosen, body = await handshake(port, alpn)
                assert der == site_der, f"a visitor with ALPN {alpn} got the challenge certificate"
                if alpn and "h2" in alpn:
                    assert chosen == "h2"  # the site's own protocols, not the challenge's
                else:
                    assert body.startswith(b"HTTP/1.1 200") and body.endswith(b"site")

            app.challenges.remove_tls_alpn01(NAME)
            der, _chosen, _ = await handshake(port, ["acme-tls/1"])
            assert der == site_der

    asyncio.run(main())
