"""One HTTP server per config Server: its only handler runs the route tree, bound on each
listen address (TCP or unix), with TLS when the server has certificates. The admin
address (`open_ops_listener`) is another such server, with a fixed table of endpoints."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..config.addresses import ListenAddress
from ..config.certnames import ACME_ISSUER
from ..config.model import Certificate, Server
from ..http import HTTPServer, Request, Response, ServerSettings, StreamResponse, alpn_protocols
from ..http.client_hello import ClientHello
from .tls.challenges import ACME_TLS_ALPN, ChallengeBoard
from ..ops.health import LIVENESS_PATH, READINESS_PATH, liveness_handler, readiness_handler
from ..ops.metrics import METRICS_PATH, metrics_handler
from .access_log import AccessLogger
from .context import CONTEXT_KEY, RequestContext, client_ip
from .handlers import apply_response_headers
from .matching import host_test, strip_port
from .reload_endpoint import RELOAD_PATH, Reloader, reload_handler
from .routing import RouteList

log = logging.getLogger("durable_streams.server")
SERVER_HEADER = "durable-streams-server"


def _abort_unfinished_body(request: Request) -> None:
    if not request.content.at_eof():
        log.warning("request body not read within read_body timeout; closing connection",
                    extra={"ds_fields": {"method": request.method, "path": request.path}})
        request.abort()


async def _ready(response: Response) -> Response:
    return response


async def _empty_response(request: Request) -> Response:
    # Caddy answers a request no handler wrote to with an empty 200.
    return Response(status=200)


def _files_given(cert: Certificate) -> tuple[str, str] | None:
    return (cert.cert_file, cert.key_file) if cert.cert_file else None


class TLSContexts:
    """The SSL contexts of one server: one per certificate, SNI picks among them.

    `reload()` loads the certificate files again into the same contexts, so a renewed
    certificate is served to new connections without re-binding or dropping any.
    `resolve` says which files serve a certificate now (managed ones: the certificate
    manager's; None while there are none yet). With `challenges`, a connection whose
    ClientHello asks for ALPN acme-tls/1 gets the TLS-ALPN-01 challenge certificate of
    its server name instead (see http/client_hello.py for why the ClientHello is read).
    """

    def __init__(self, server: Server, resolve: Callable[[Certificate], tuple[str, str] | None] = _files_given,
                 challenges: ChallengeBoard | None = None) -> None:
        self.certificates = server.certificates
        self.resolve = resolve
        self.challenges = challenges
        self.contexts = [self._new_context(server) for _ in server.certificates]
        self._host_tests = [host_test(cert.hosts) if cert.hosts else None for cert in server.certificates]
        self.reload()
        if len(self.contexts) > 1:
            self.contexts[0].sni_callback = self._pick  # type: ignore[assignment]

    @property
    def default(self) -> ssl.SSLContext:
        return self.contexts[0]

    @staticmethod
    def _new_context(server: Server) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if server.tls_min_version == "tls1.3" else ssl.TLSVersion.TLSv1_2
        if server.tls_max_version == "tls1.2":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(alpn_protocols(server.protocols))
        return ctx

    def reload(self) -> None:
        for cert, ctx in zip(self.certificates, self.contexts):
            files = self.resolve(cert)
            if files is not None:
                ctx.load_cert_chain(*files)

    def _pick(self, sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if not server_name:
            return
        hostname = strip_port(server_name).lower()
        for test, ctx in zip(self._host_tests, self.contexts):
            if test is not None and test(hostname):
                sock.context = ctx
                return

    # the http/ ContextPicker: only while a TLS-ALPN-01 challenge is out
    def wants_hello(self) -> bool:
        return self.challenges is not None and self.challenges.has_tls_alpn01()

    def context_for(self, hello: ClientHello | None) -> ssl.SSLContext | None:
        if self.challenges is None or hello is None or not hello.server_name or ACME_TLS_ALPN not in hello.alpn:
            return None
        return self.challenges.tls_alpn01_context(hello.server_name)


def build_ssl_context(server: Server) -> ssl.SSLContext | None:
    """The server's TLS context (None for plain HTTP); loads the certificate files."""
    return TLSContexts(server).default if server.certificates else None


@dataclass
class Listener:
    """A running server: its HTTP server and the sockets actually bound.

    `server` and `routes` are read on every request, so a reload can swap them in place
    when the socket-level settings did not change (no connection is dropped).
    """

    server: Server
    http: HTTPServer | None
    routes: RouteList
    sites: list[asyncio.AbstractServer] = field(default_factory=list)
    tls: TLSContexts | None = None
    shutdown_timeout: float = 0.0
    untrack: Callable[[], None] = lambda: None  # stops exporting its connection counts

    def socket_settings(self) -> tuple:
        return socket_settings(self.server)

    def _picker(self) -> TLSContexts | None:
        """Per-connection context choice, only where a TLS-ALPN-01 challenge may be answered."""
        tls = self.tls
        if tls is None or tls.challenges is None or not any(c.issuer == ACME_ISSUER for c in tls.certificates):
            return None
        return tls

    @property
    def bound(self) -> list[tuple[str, Any]]:
        out = []
        for site in self.sites:
            for sock in site.sockets or ():
                name = sock.getsockname()
                out.append((self.server.name, name))
        return out

    async def start_accepting(self) -> None:
        """Bind every listen address (also again, after `stop_accepting`)."""
        ssl_context = self.tls.default if self.tls else None
        assert self.http is not None
        for address in self.server.listen:
            if address.network == "unix":
                try:
                    site = await self.http.listen_unix(address.host, ssl_context)
                except OSError as exc:  # worded like the TCP bind errors: which address, then why
                    raise OSError(exc.errno, f"listening on {address}: bind: {(exc.strerror or str(exc)).lower()}") from None
            else:
                sock = _bind_socket(address.network, address.host, address.port)
                try:
                    site = await self.http.listen(sock, ssl_context, picker=self._picker())
                except BaseException:
                    sock.close()
                    raise
            self.sites.append(site)

    async def stop_accepting(self) -> None:
        while self.sites:  # a stopped site is forgotten: stopping again is a no-op
            site = self.sites.pop()
            if self.http is not None:
                await self.http.stop_listening(site)
            else:
                site.close()

    async def close(self) -> None:
        self.sites.clear()
        self.untrack()
        if self.http is not None:
            await self.http.shutdown(self.shutdown_timeout)


def socket_settings(server: Server) -> tuple:
    """What cannot change without re-binding: addresses, TLS and connection limits."""
    return (server.listen, server.certificates, server.tls_min_version, server.tls_max_version,
            server.timeouts.idle, server.timeouts.read_header, server.max_header_size, server.access_log,
            server.max_header_fields, server.max_connections, server.min_body_rate, server.protocols)


async def open_listener(
    server: Server,
    routes: RouteList,
    *,
    shutdown_timeout: float,
    access_log: bool = False,
    metrics: Any = None,
    certificate_files: Callable[[Certificate], tuple[str, str] | None] = _files_given,
    challenges: ChallengeBoard | None = None,
) -> Listener:
    """`certificate_files` says which files serve each certificate now; `challenges`, the
    ACME challenges in progress, answered on plain-HTTP servers (HTTP-01) and in TLS
    handshakes (TLS-ALPN-01)."""
    listener = Listener(server, None, routes, shutdown_timeout=shutdown_timeout)

    # A plain def handing back the route tree's awaitable: one coroutine less per request.
    def run_routes(request: Request) -> Awaitable[Response | StreamResponse]:
        current = listener.server
        trusted = current.trusted_proxies
        request[CONTEXT_KEY] = RequestContext(
            client_ip=client_ip(request, trusted, current.client_ip_headers) if trusted else request.remote or ""
        )
        read_body = current.timeouts.read_body
        if not read_body or not request.body_exists:
            return listener.routes(request, _empty_response)
        return run_with_body_deadline(request, read_body)

    async def run_with_body_deadline(request: Request, read_body: float) -> Response | StreamResponse:
        # servers { timeouts { read_body } }: a body still unread by then ends the connection
        timer = asyncio.get_running_loop().call_later(read_body, _abort_unfinished_body, request)
        try:
            return await listener.routes(request, _empty_response)
        finally:
            timer.cancel()

    if challenges is not None and not server.tls:
        routed = run_routes

        def run_routes(request: Request) -> Awaitable[Response | StreamResponse]:  # type: ignore[no-redef]
            # RFC 8555 §8.3: the key authorization at the token's path, before any route
            answer = challenges.http01_for_path(request.path)
            if answer is not None:
                return _ready(Response(status=200, text=answer, content_type="text/plain"))
            return routed(request)

    if metrics is not None:
        from ..ops.metrics import measure_request

        async def handle(request: Request) -> Response | StreamResponse:
            return await measure_request(metrics, request, run_routes)
    else:
        handle = run_routes

    def on_prepare(request: Request, response: Response | StreamResponse) -> None:
        # Caddy says "Server: Caddy"; we name ourselves.
        response.headers["Server"] = SERVER_HEADER
        apply_response_headers(response, request)

    listener.http = HTTPServer(
        handle,
        _server_settings(server),
        prepare_hook=on_prepare,
        access_log=AccessLogger() if (access_log or server.access_log) else None,
    )
    if server.certificates:
        listener.tls = TLSContexts(server, certificate_files, challenges)
    try:
        await listener.start_accepting()
    except BaseException:
        await listener.stop_accepting()
        raise
    return listener


CADDY_DEFAULT_IDLE = 300.0  # Caddy's default idle timeout (5m)
# Longest request line and longest header line without `max_header_size`: roomy for long
# stream URLs, small enough that a client cannot make the parser buffer megabytes.
# Larger ones get 414 (request line) or 431 (header line).
DEFAULT_MAX_HEADER_SIZE = 64 * 1024


def _server_settings(server: Server) -> ServerSettings:
    """Connection settings from the `servers` options; what is not set keeps the HTTP
    layer's defaults (http/settings.py). `idle` is the keep-alive time between requests,
    `read_header` the deadline from a head's first byte to its end (default 30 s, where
    Caddy has none: a head that trickles in must not hold a connection for minutes)."""
    t = server.timeouts
    size = server.max_header_size or DEFAULT_MAX_HEADER_SIZE
    chosen = dict(
        keepalive_timeout=t.idle or CADDY_DEFAULT_IDLE,
        head_timeout=t.read_header,
        max_line_size=size,
        max_field_size=size,
        max_head_size=max(1 << 20, 2 * size),
        max_header_fields=server.max_header_fields,
        max_connections=server.max_connections,
        min_body_rate=server.min_body_rate,
    )
    return ServerSettings(**{name: value for name, value in chosen.items() if value is not None})


def _bind_socket(network: str, host: str, port: int) -> socket.socket:
    """Bind like Go's net.Listen: "" = every interface (dual-stack when IPv6 exists)."""
    if network == "tcp6" or (":" in host):
        family = socket.AF_INET6
    elif network == "tcp4" or host:
        family = socket.AF_INET
    else:
        family = socket.AF_INET6 if socket.has_dualstack_ipv6() else socket.AF_INET
    if host and family == socket.AF_INET and not _is_ip(host):
        host = socket.gethostbyname(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and not host:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        # Caddy-like wording: which address, then the system's reason
        raise OSError(exc.errno, f"listening on {shown}: bind: {(exc.strerror or str(exc)).lower()}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def _is_ip(host: str) -> bool:
    try:
        socket.inet_aton(host)
        return True
    except OSError:
        return False


@dataclass
class OpsListener:
    """The admin address: its HTTP server and the socket bound."""

    http: HTTPServer
    site: asyncio.AbstractServer
    shutdown_timeout: float

    @property
    def addresses(self) -> list[Any]:
        return [sock.getsockname() for sock in self.site.sockets or ()]

    async def close(self) -> None:
        await self.http.shutdown(self.shutdown_timeout)


async def open_ops_listener(address: ListenAddress, readiness: Any, metrics: Any, *, shutdown_timeout: float,
                            reload: Reloader | None = None) -> OpsListener:
    """The admin address: /metrics, /healthz, /readyz, and POST /reload when `reload` is
    given (no config API). Each endpoint checks the method itself, so that /reload can
    refuse a foreign Host or Origin (403) before saying which method it takes."""
    routes = {
        LIVENESS_PATH: liveness_handler(),
        READINESS_PATH: readiness_handler(readiness),
        METRICS_PATH: metrics_handler(metrics),
    }
    if reload is not None:
        routes[RELOAD_PATH] = reload_handler(address, reload)

    async def handle(request: Request) -> Response:
        endpoint = routes.get(request.path)
        if endpoint is None:
            return Response(status=404, text="404: Not Found")
        return await endpoint(request)

    def on_prepare(request: Request, response: Response | StreamResponse) -> None:
        response.headers["Server"] = SERVER_HEADER  # as on the site listeners

    http = HTTPServer(handle, prepare_hook=on_prepare)
    if address.network == "unix":
        site = await http.listen_unix(address.host)
    else:
        sock = _bind_socket(address.network, address.host, address.port)
        try:
            site = await http.listen(sock)
        except BaseException:
            sock.close()
            raise
    return OpsListener(http, site, shutdown_timeout)
