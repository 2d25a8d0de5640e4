"""Tiny challenge servers for the ACME tests: they serve a ChallengeBoard the way the
listeners will (HTTP-01 over HTTP; TLS-ALPN-01 by SNI), so the unit under test is the issuer."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading

from durable_streams.server.runtime.tls.challenges import ACME_TLS_ALPN, ChallengeBoard


class HTTP01Server:
    """Answers `/.well-known/acme-challenge/<token>` from the board, 404 otherwise; counts requests."""

    def __init__(self, board: ChallengeBoard) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                answer = board.http01_for_path(self.path)
                body = (answer or "not found").encode()
                self.send_response(200 if answer is not None else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TLSALPNServer:
    """Completes TLS handshakes with the board's challenge certificate for the SNI name
    (handshakes for names without a challenge fail), as a listener does for `acme-tls/1`."""

    def __init__(self, board: ChallengeBoard) -> None:
        self.handshakes = 0
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.set_alpn_protocols([ACME_TLS_ALPN])

        def pick(sslobj: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext):
            challenge = board.tls_alpn01_context(server_name)
            if challenge is None:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            sslobj.context = challenge
            return None

        context.sni_callback = pick
        self.context = context
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handshake, args=(conn,), daemon=True).start()

    def _handshake(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.handshakes += 1
                tls.recv(1)  # the validator closes after checking the certificate
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
