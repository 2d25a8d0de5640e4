"""The one object that owns the daemon's lifecycle: start-up, serving, reload, shutdown.

Order matters:
- start: every `durable_streams` store opens (and recovers) before any socket is bound,
  so the first request already sees recovered data; then listeners; then readiness and
  systemd's READY=1.
- reload (SIGHUP, or POST /reload on the admin address): the new config is built next
  to the old one; stores whose settings did not change are kept (their clients stay
  connected), listeners whose sockets did not change get the new routes in place; the
  rest is replaced. A reload that fails leaves the running listeners accepting.
- shutdown (SIGTERM/SIGINT): readiness turns 503 and systemd hears STOPPING=1; after
  `shutdown_delay` we stop accepting, stop the handlers (ending long-polls/SSE, flushing
  and closing stores), then close remaining connections, all within `grace_period`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from ..config.certnames import ACME_ISSUER
from ..config.model import Config, MetricsEndpoint, Server
from ..ops.health import Readiness
from ..ops.logging import use_stderr_by_default
from ..ops.metrics import create_metrics
from ..ops.systemd import SystemdNotifier
from .listeners import Listener, OpsListener, build_ssl_context, open_listener, open_ops_listener, socket_settings
from .tls.manager import AcmeClients, CertificateManager
from .tls.challenges import ChallengeBoard
from .routing import Compiler, Factory

DEFAULT_GRACE_PERIOD = 10.0  # Caddy's default is unbounded; a daemon wants an upper bound

# Reads and adapts a Caddyfile: the given path, or None for the embedded default.
Loader = Callable[[str | None], Config]


@dataclass(frozen=True)
class ReloadRequest:
    """One reload for the serve loop, which performs them one at a time.

    SIGHUP sends `ReloadRequest()`: the current file again. POST /reload names a new
    `path` (which then becomes the current file) and waits on `done` for the outcome.
    """

    path: str | None = None
    done: asyncio.Future[str | None] | None = None

    def answer(self, error: str | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(error)


def _uses(config: Config, kind: type) -> bool:
    def walk(routes) -> bool:
        for route in routes:
            for handler in route.handle:
                if isinstance(handler, kind) or walk(getattr(handler, "routes", ())):
                    return True
        return False

    return any(walk(s.routes) for s in config.servers)


class ServerApp:
    def __init__(
        self,
        config: Config,
        *,
        handler_factories: Mapping[type, Factory] | None = None,
        notifier: SystemdNotifier | None = None,
        config_path: str | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path  # what SIGHUP reads again
        self._reloads: asyncio.Queue[ReloadRequest] | None = None  # set while serve() takes reloads
        self.factories = handler_factories
        self.metrics = create_metrics(config.metrics or config.admin is not None or _uses(config, MetricsEndpoint))
        self.readiness = Readiness()
        self.notifier = notifier or SystemdNotifier()
        self.compiler = self._compiler(config)
        self.listeners: list[Listener] = []
        self._ops: OpsListener | None = None
        self._started: list[Any] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._announcer: asyncio.Task[None] | None = None
        self.challenges = ChallengeBoard()  # ACME challenges being answered now
        self._acme = AcmeClients(self.challenges, self._challenge_types)
        self.certificates = CertificateManager(config.storage_root, obtain=self._acme, renewal_info=self._acme.renewal_info,
                                               on_change=self._certificate_changed)
        self.readiness.add_check("certificates", lambda: self.certificates.ready)
        self.metrics.track_certificates(self.certificates)
        self._stopped = False
        self._closing: set[asyncio.Task[None]] = set()
        self.grace_override: float | None = None
        use_stderr_by_default()  # no log line may reach stdout unless configured so
        self.log = structlog.get_logger("durable_streams.server")

    def _compiler(self, config: Config, previous: Compiler | None = None) -> Compiler:
        return Compiler(self.factories, services={"metrics": self.metrics, "readiness": self.readiness}, previous=previous)

    @property
    def grace_period(self) -> float:
        if self.grace_override is not None:
            return self.grace_override
        g = self.config.grace_period
        return DEFAULT_GRACE_PERIOD if g is None or g <= 0 else g

    @property
    def bound_addresses(self) -> list[tuple[str, Any]]:
        """(server name, socket name) for every bound socket, e.g. ("srv0", ("127.0.0.1", 4437))."""
        out = [b for listener in self.listeners for b in listener.bound]
        if self._ops is not None:
            out.extend(("admin", name) for name in self._ops.addresses)
        return out

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        self.notifier.status("starting: opening stores")
        try:
            if self.config.admin is not None:
                # first, so /readyz can say "starting" during a long recovery
                self._ops = await open_ops_listener(
                    self.config.admin, self.readiness, self.metrics, shutdown_timeout=self.grace_period,
                    reload=self.request_reload,
                )
            self._take_certificates(self.config)
            routes = [self.compiler.routes(s.runtime_routes) for s in self.config.servers]
            for handler in self.compiler.lifecycle:
                await handler.start()
                self._started.append(handler)
            for server, route_list in zip(self.config.servers, routes):
                self.listeners.append(await self._open(server, route_list))
        except BaseException:
            await self.shutdown()
            raise
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]  # "uvloop" or "asyncio"
        for name, sockname in self.bound_addresses:
            self.log.info("listening", server=name, address=_format_sockname(sockname), loop=loop)
        self.readiness.mark_ready()
        loop = asyncio.get_running_loop()
        self._renewer = loop.create_task(self.certificates.run())
        if self.certificates.ready:
            self.notifier.ready(self._status())
        else:  # READY once every managed name has a certificate or has said why not
            self._announcer = loop.create_task(self._announce_ready())
        self._watchdog = self.notifier.start_watchdog()

    # ------------------------------------------------------------------ certificates

    def _take_certificates(self, config: Config) -> None:
        """The managed certificates of `config`: stored ones are used, missing local-CA
        leaves are issued now, ACME ones are obtained in the background."""
        self.certificates.configure(config)
        issued = self.certificates.issue_local_now()
        if issued:
            self.log.info("certificates issued by the local CA", subjects=issued, storage=config.storage_root)
        for name in self.certificates.names.values():
            if name.kind == ACME_ISSUER:
                self.log.info("automatic HTTPS", subject=name.subject,
                              certificate=f"stored, from {name.issued_by}" if name.valid else "to obtain",
                              issuers=[getattr(i, "directory", "local CA") for i in name.issuers])

    async def _announce_ready(self) -> None:
        await self.certificates.first_round()
        self.notifier.ready(self._status())
        if not self.certificates.ready:
            self.log.warning("serving without some certificates", waiting=self.certificates.waiting())

    def _challenge_types(self, subject: str) -> tuple[str, ...]:
        """The ACME challenges the listeners can answer for `subject` (read from a worker
        thread: it only looks at lists the loop replaces whole)."""
        config, listeners = self.config, list(self.listeners)
        types = []
        if any(not l.server.tls and any(a.port == config.http_port for a in l.server.listen) for l in listeners):
            types.append("http-01")
        if any(l.tls is not None and any(a.port == config.https_port for a in l.server.listen)
               and any(subject in c.hosts for c in l.server.certificates) for l in listeners):
            types.append("tls-alpn-01")
        return tuple(types)

    def _certificate_changed(self, subject: str) -> None:
        """A managed certificate has new files: load them where they serve (new handshakes
        use them; open connections keep theirs)."""
        for listener in self.listeners:
            if listener.tls is not None and any(subject in c.hosts for c in listener.tls.certificates if c.managed):
                try:
                    listener.tls.reload()
                except (OSError, ValueError) as exc:  # keep serving the previous certificate
                    self.log.error("could not load a renewed certificate", subject=subject, error=repr(exc))

    async def _open(self, server: Server, route_list) -> Listener:
        listener = await open_listener(
            server,
            route_list,
            shutdown_timeout=self.grace_period,
            metrics=self.metrics if self.config.metrics else None,
            certificate_files=self.certificates.paths_for,
            challenges=self.challenges if self._uses_acme else None,
        )
        listener.untrack = self.metrics.track_connections(listener.http)
        return listener

    @property
    def _uses_acme(self) -> bool:
        return any(n.kind == ACME_ISSUER for n in self.certificates.names.values())

    def _status(self) -> str:
        addresses = ", ".join(str(a) for s in self.config.servers for a in s.listen)
        return f"serving on {addresses}" if addresses else "serving (no listeners)"

    # ------------------------------------------------------------------ reload

    async def reload(self, new: Config) -> None:
        """Swap to `new` without dropping connections that it still serves."""
        self.notifier.reloading("reloading configuration")
        try:
            await self._reload(new)
        finally:
            self.notifier.ready(self._status())

    async def _reload(self, new: Config) -> None:
        self._take_certificates(new)
        for server in new.servers:
            build_ssl_context(server)  # unreadable certificate files refuse the reload up front
        compiler = self._compiler(new, previous=self.compiler)
        routes = [compiler.routes(s.runtime_routes) for s in new.servers]
        fresh = [h for h in compiler.lifecycle if h not in compiler.reused]
        dropped = [h for h in self.compiler.lifecycle if h not in compiler.reused]
        # A dropped store that holds a data_dir a fresh one needs must close first; the
        # others stay up until the new configuration is in place.
        fresh_dirs = {_data_dir(c) for c, h in zip(compiler.configs, compiler.lifecycle) if h in fresh} - {None}
        old_dirs = {id(h): _data_dir(c) for c, h in zip(self.compiler.configs, self.compiler.lifecycle)}
        stop_first = [h for h in dropped if old_dirs.get(id(h)) in fresh_dirs]
        for handler in stop_first:
            await self._retire(handler)
        started = []
        try:
            for handler in fresh:
                await handler.start()
                started.append(handler)
        except BaseException:
            for handler in started:
                await self._stop_handler(handler, time.monotonic() + self.grace_period)
            raise
        self._started.extend(started)

        old_by_settings = {listener.socket_settings(): listener for listener in self.listeners}
        plan = [(server, route_list, old_by_settings.pop(socket_settings(server), None))
                for server, route_list in zip(new.servers, routes)]
        removed = list(old_by_settings.values())
        try:
            opened = await self._open_replacements([(s, r) for s, r, old in plan if old is None], removed)
        except BaseException:
            for handler in started:  # nothing running refers to them
                await self._retire(handler)
            raise
        kept: list[Listener] = []
        for server, route_list, listener in plan:
            if listener is None:
                listener = opened.pop(0)
            else:
                if listener.tls is not None:
                    listener.tls.reload()  # renewed certificate files, same paths
                listener.server, listener.routes = server, route_list
            kept.append(listener)
        # listeners that went away drain in the background
        for listener in removed:
            task = asyncio.get_running_loop().create_task(listener.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self.listeners = kept
        self.compiler, self.config = compiler, new
        for handler in dropped:
            if handler not in stop_first:
                await self._retire(handler)
        self.log.info("configuration reloaded", listeners=len(kept), stores_kept=len(compiler.reused))

    async def _open_replacements(self, fresh: list[tuple[Server, Any]], removed: list[Listener]) -> list[Listener]:
        """Open listeners for `fresh` (in order) and stop `removed` from accepting.

        A failure leaves the running listeners accepting: sockets that no removed listener
        holds are bound first, and removed listeners stop only when a new one needs their
        address (they are bound again if that still fails).
        """
        busy = {address for listener in removed for address in listener.server.listen}
        needs_busy = [bool(busy & set(server.listen)) for server, _ in fresh]
        opened: dict[int, Listener] = {}
        try:
            for i in sorted(range(len(fresh)), key=needs_busy.__getitem__):
                if needs_busy[i] and not any(needs_busy[j] for j in opened):
                    for listener in removed:
                        await listener.stop_accepting()
                opened[i] = await self._open(*fresh[i])
        except BaseException:
            for listener in opened.values():
                await listener.stop_accepting()
                await listener.close()
            for listener in removed:
                if not listener.sites:
                    try:
                        await listener.start_accepting()
                    except OSError as exc:
                        self.log.error("could not listen again after a failed reload", error=str(exc))
            raise
        for listener in removed:
            await listener.stop_accepting()
        return [opened[i] for i in range(len(fresh))]

    # ------------------------------------------------------------------ stop

    async def _retire(self, handler: Any) -> None:
        await self._stop_handler(handler, time.monotonic() + self.grace_period)
        if handler in self._started:
            self._started.remove(handler)

    async def _stop_handler(self, handler: Any, deadline: float) -> None:
        try:
            await asyncio.wait_for(handler.stop(), timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:  # keep closing everything else
            self.log.warning("handler did not stop cleanly", error=repr(exc))

    async def shutdown(self) -> None:
        """Graceful stop, bounded by the grace period. Safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + self.grace_period
        self.readiness.mark_stopping()
        self.notifier.stopping("stopping")
        await SystemdNotifier.stop_watchdog(self._watchdog)
        self._acme.stopping.set()
        for task in (self._renewer, self._announcer):
            if task is not None:
                task.cancel()
        self._renewer = self._announcer = None
        for listener in self.listeners:
            await listener.stop_accepting()
        for handler in reversed(self._started):
            await self._stop_handler(handler, deadline)
        self._started.clear()
        for closer in [*(listener.close() for listener in self.listeners), *self._closing]:
            try:
                await asyncio.wait_for(closer, timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:
                self.log.warning("listener did not close cleanly", error=repr(exc))
        self.listeners = []
        if self._ops is not None:
            await self._ops.close()
            self._ops = None
        self.log.info("stopped")

    async def serve(self, stop: asyncio.Event, reload_requests: asyncio.Queue[ReloadRequest] | None = None,
                    load: Loader | None = None) -> None:
        """Start, serve (handling reload requests) until `stop`, then shut down."""
        if load is None:
            reload_requests = None
        self._reloads = reload_requests
        await self.start()
        try:
            waiter = asyncio.ensure_future(stop.wait())
            while not stop.is_set():
                if reload_requests is None:
                    await waiter
                    break
                getter = asyncio.ensure_future(reload_requests.get())
                done, _ = await asyncio.wait({waiter, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                request = getter.result()
                request.answer(await self._try_reload(load, request.path))
            self._refuse_reloads()
            delay = self.config.shutdown_delay or 0
            if delay > 0:
                self.readiness.mark_stopping()
                self.log.info("shutdown delayed", seconds=delay)
                await asyncio.sleep(delay)
        finally:
            self._refuse_reloads()
            await self.shutdown()

    async def request_reload(self, path: str) -> str | None:
        """Reload from `path` in the serve loop (POST /reload): the error message, or None."""
        if self._reloads is None:
            return "reload is not available: the server is stopping or was not started from a config file"
        done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._reloads.put_nowait(ReloadRequest(path, done))
        return await done

    def _refuse_reloads(self) -> None:
        """Stop taking reloads; answer the ones still queued."""
        queue, self._reloads = self._reloads, None
        while queue is not None and not queue.empty():
            queue.get_nowait().answer("reload not performed: the server is stopping")

    async def _try_reload(self, load: Loader, path: str | None) -> str | None:
        """One reload from `path` (None: the current file); the error message if refused."""
        try:
            new = load(path or self.config_path)
        except Exception as exc:  # a bad Caddyfile keeps the running config
            self.log.error("reload refused; keeping the running configuration", error=str(exc))
            self.notifier.reloading("reload refused")
            self.notifier.ready(self._status())
            return str(exc)
        try:
            await self.reload(new)
        except Exception as exc:
            self.log.error("reload failed; keeping what is running", error=repr(exc))
            return f"reload failed; keeping what is running: {_describe(exc)}"
        if path is not None:
            self.config_path = path
        return None


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _data_dir(config: Any) -> str | None:
    data_dir = getattr(config, "data_dir", None)
    return os.path.normpath(data_dir) if data_dir else None


def _format_sockname(sockname: Any) -> str:
    if isinstance(sockname, tuple):
        host, port = sockname[0], sockname[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(sockname)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # e.g. Windows: the standard loop works, only slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(
    config: Config,
    *,
    handler_factories: Mapping[type, Factory] | None = None,
    reload: Loader | None = None,
    config_path: str | None = None,
) -> int:
    """Blocking entry point for the CLI: serve until SIGTERM/SIGINT, then stop gracefully.

    SIGHUP calls `reload(config_path)` for a new Config and swaps to it (a bad one is
    refused); POST /reload on the admin address does the same from the path it names.
    A second SIGTERM/SIGINT while stopping cuts the grace period short.
    """
    app = ServerApp(config, handler_factories=handler_factories, config_path=config_path)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        reloads: asyncio.Queue[ReloadRequest] = asyncio.Queue()
        task = asyncio.current_task()

        def on_stop_signal(signum: int) -> None:
            name = signal.Signals(signum).name
            if stop.is_set():
                app.log.warning("second signal: stopping without waiting", signal=name)
                app.grace_override = 0.5
                if task is not None:
                    task.cancel()
                return
            app.log.info("shutting down", signal=name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_stop_signal, signum)
        if reload is not None and hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, reloads.put_nowait, ReloadRequest())
        await app.serve(stop, reloads, reload)

    with asyncio.Runner(loop_factory=_new_loop) as runner:
        try:
            runner.run(main())
        except asyncio.CancelledError:
            return 1
    return 0
