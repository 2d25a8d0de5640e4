"""Managed certificates (automatic HTTPS): which files serve each name, and getting them.

One `CertificateManager` per process owns every certificate the config asks the runtime
to manage (`Certificate.issuer` "internal" or "acme"):
- at start it takes what storage already holds (certmagic's layout, so certificates that
  Caddy obtained are used too), issues missing local-CA leaves at once (milliseconds), and
  leaves ACME names to the background;
- in the background it obtains and renews, one name at a time per issuer attempt, in a
  worker thread (the ACME client is synchronous), trying the name's issuers in order
  (Caddy's fallback), under certmagic's storage lock so that several processes sharing a
  storage never order the same certificate twice; a failure is retried with back-off
  (jittered) and never takes away a certificate that is still valid;
- a certificate is due in the last third of its lifetime (certmagic's default window),
  or from the start of the window its CA's ACME Renewal Info suggests, when it gave one;
- every change is reported to `on_change(subject)`, which the runtime uses to load the
  new files into the live SSL contexts (new handshakes get them; open connections keep
  theirs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from cryptography import x509

from ...config.certnames import ACME_ISSUER, INTERNAL_ISSUER, acme_issuer_key, is_internal, leaf_paths
from ...config.model import AcmeIssuerConfig, Certificate, Config, InternalIssuerConfig, IssuerConfig
from .local_ca import LEAF_RENEWAL_RATIO, LocalCA, storage_lock

# seconds between attempts after failures (certmagic starts at 1 minute; a first quick
# retry helps the common case of a CA or network that was down for a moment)
RETRY_INTERVALS = (5.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
MAX_SLEEP = 600.0  # look again at least this often (clock jumps, files changed by others)

# (issuer, subject, storage root, current cert file or ""): stores a new certificate for
# subject (replacing the current one, which the caller deems due); blocking, in a thread
Obtain = Callable[[AcmeIssuerConfig, str, str, str], None]
# (issuer, cert file): the CA's ACME Renewal Info as (window start, end, ask again after),
# or None when the CA has none; blocking, in a thread
RenewalInfo = Callable[[AcmeIssuerConfig, str], "tuple[dt.datetime, dt.datetime, dt.datetime | None] | None"]
ARI_DEFAULT_RECHECK = 6 * 3600.0  # RFC 9773's suggestion when the CA sends no Retry-After
ARI_FAILED_RECHECK = 3600.0


@dataclass
class ManagedName:
    subject: str
    kind: str  # "internal" | "acme"
    issuers: tuple[IssuerConfig, ...]
    cert_file: str = ""
    key_file: str = ""
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    renew_at: dt.datetime | None = None  # start of the renewal window
    error: str = ""
    failures: int = 0
    next_attempt: float = 0.0  # monotonic; 0 = as soon as due
    attempted: bool = False  # at least one attempt finished since start (or a valid cert was found)
    issued_by: str = ""
    ari_next: float = 0.0  # monotonic time to ask the CA's ACME Renewal Info again (0: now)
    ari_renew_at: dt.datetime | None = None  # the CA's suggestion, when it gave one

    @property
    def valid(self) -> bool:
        return self.not_after is not None and _now() < self.not_after

    def due(self) -> bool:
        return not self.valid or (self.renew_at is not None and _now() >= self.renew_at)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _load_cert(path: str) -> x509.Certificate | None:
    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError):
        return None


def _covers(cert: x509.Certificate, subject: str) -> bool:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    names = {n.lower() for n in sans.get_values_for_type(x509.DNSName)}
    names |= {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return subject.lower().strip("[]") in names


class CertificateManager:
    def __init__(self, storage_root: str, *, obtain: Obtain | None = None,
                 renewal_info: RenewalInfo | None = None,
                 on_change: Callable[[str], None] = lambda subject: None) -> None:
        self.storage_root = storage_root
        self._obtain = obtain
        self._renewal_info = renewal_info
        self.on_change = on_change
        self.names: dict[str, ManagedName] = {}
        self._wake = asyncio.Event()
        self._first_round = asyncio.Event()
        self.log = structlog.get_logger("durable_streams.server.tls")

    # ------------------------------------------------------------------ configuration

    def configure(self, config: Config) -> None:
        """Take the managed names of `config` (a reload keeps what it knows of names that
        stay, and tries failing ones again at once)."""
        self.storage_root = config.storage_root
        wanted: dict[str, ManagedName] = {}
        for cert in _managed(config.servers):
            for subject in cert.hosts:
                issuers = (InternalIssuerConfig(),) if cert.issuer == INTERNAL_ISSUER else config.issuers_for(
                    subject, is_internal(subject))
                old = self.names.get(subject)
                if old is not None and old.kind == cert.issuer and old.issuers == issuers:
                    old.next_attempt = 0.0
                    wanted[subject] = old
                else:
                    wanted[subject] = ManagedName(subject, cert.issuer or ACME_ISSUER, issuers)
        self.names = wanted
        for name in self.names.values():
            if not name.valid:
                self._load_stored(name)
        self._wake.set()

    def issue_local_now(self) -> list[str]:
        """Issue the local-CA leaves that are missing or due, synchronously (start-up and
        reload: a local site must not start without its certificate)."""
        local = [n for n in self.names.values() if n.kind == INTERNAL_ISSUER]
        issued = [n.subject for n in local if self._issue_local(n.subject)]
        for name in local:
            self._load_stored(name)
        return issued

    # ------------------------------------------------------------------ what is served

    def paths(self, subject: str) -> tuple[str, str] | None:
        name = self.names.get(subject)
        if name is None or not name.cert_file:
            return None
        return name.cert_file, name.key_file

    def paths_for(self, cert: Certificate) -> tuple[str, str] | None:
        """The files that serve a config Certificate now (None: none yet)."""
        if not cert.managed:
            return cert.cert_file, cert.key_file
        return self.paths(cert.hosts[0]) if cert.hosts else None

    @property
    def ready(self) -> bool:
        """Every managed name has a valid certificate."""
        return all(n.valid for n in self.names.values())

    def waiting(self) -> list[dict[str, str]]:
        return [{"subject": n.subject, "error": n.error or "not obtained yet"}
                for n in self.names.values() if not n.valid]

    def certificate_states(self) -> list[tuple[str, str, float | None, int]]:
        """For /metrics (ops.metrics.CertificateStats)."""
        return [(n.subject, n.issued_by, n.not_after.timestamp() if n.valid and n.not_after else None, n.failures)
                for n in self.names.values()]

    async def first_round(self) -> None:
        """Returns once every name has a certificate or has had one attempt."""
        await self._first_round.wait()

    # ------------------------------------------------------------------ storage

    def _stored_paths(self, name: ManagedName) -> Iterable[tuple[str, str, str]]:
        """(issuer label, cert, key) of every place storage may hold the name's certificate."""
        for issuer in name.issuers:
            if isinstance(issuer, InternalIssuerConfig):
                cert_file, key_file, _meta = leaf_paths(self.storage_root, name.subject)
                yield "local CA", cert_file, key_file
            else:
                key = acme_issuer_key(issuer.directory)
                cert_file, key_file, _meta = leaf_paths(self.storage_root, name.subject, key)
                yield issuer.directory, cert_file, key_file

    def _load_stored(self, name: ManagedName) -> bool:
        """Use the newest stored, valid certificate of the name's issuers (certmagic's
        loadCertResourceAnyIssuer); True if there is one."""
        best: tuple[x509.Certificate, str, str, str] | None = None
        for label, cert_file, key_file in self._stored_paths(name):
            cert = _load_cert(cert_file)
            if cert is None or not _covers(cert, name.subject) or _now() >= cert.not_valid_after_utc:
                continue
            if best is None or cert.not_valid_after_utc > best[0].not_valid_after_utc:
                best = (cert, label, cert_file, key_file)
        if best is None:
            return False
        cert, label, cert_file, key_file = best
        changed = (cert_file, key_file, cert.not_valid_after_utc) != (name.cert_file, name.key_file, name.not_after)
        name.cert_file, name.key_file = cert_file, key_file
        name.not_before, name.not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        lifetime = name.not_after - name.not_before
        name.renew_at = name.not_after - lifetime * LEAF_RENEWAL_RATIO
        if changed:  # a new certificate: its own renewal info is asked for afresh
            name.ari_next, name.ari_renew_at = 0.0, None
        name.issued_by = label
        name.attempted = True
        if changed:
            self.on_change(name.subject)  # on the event loop: the SSL contexts are the loop's
        return True

    # ------------------------------------------------------------------ background

    async def run(self) -> None:
        """Obtain and renew until cancelled."""
        while True:
            self._wake.clear()
            now = time.monotonic()
            for name in list(self.names.values()):
                if name.kind == ACME_ISSUER and name.valid and name.ari_next <= now and self._renewal_info:
                    await self._ask_renewal_info(name)
                if name.next_attempt > now or not name.due():
                    continue
                await self._attempt(name)
            if all(n.attempted for n in self.names.values()):
                self._first_round.set()
            try:
                await asyncio.wait_for(self._wake.wait(), self._sleep_time())
            except TimeoutError:
                pass

    def _sleep_time(self) -> float:
        now_m = time.monotonic()
        now = _now()
        soonest = MAX_SLEEP
        for name in self.names.values():
            if name.kind == ACME_ISSUER and name.valid and self._renewal_info:
                soonest = min(soonest, max(0.0, name.ari_next - now_m))
            if name.next_attempt > now_m:
                soonest = min(soonest, name.next_attempt - now_m)
            elif name.renew_at is not None:
                soonest = min(soonest, max(0.0, (name.renew_at - now).total_seconds()))
            else:
                soonest = min(soonest, 1.0)
        return max(soonest, 0.05)

    async def _ask_renewal_info(self, name: ManagedName) -> None:
        """RFC 9773: renew at a random time in the window the CA suggests (sooner or later
        than the last third of the lifetime), and ask again when it says to."""
        issuer = next((i for i in name.issuers if isinstance(i, AcmeIssuerConfig) and i.directory == name.issued_by), None)
        if issuer is None or self._renewal_info is None:
            name.ari_next = float("inf")  # not from one of its ACME issuers (e.g. the local CA fallback)
            return
        try:
            answer = await asyncio.to_thread(self._renewal_info, issuer, name.cert_file)
        except Exception as exc:  # noqa: BLE001 - the lifetime rule still holds; ask later
            name.ari_next = time.monotonic() + ARI_FAILED_RECHECK
            self.log.warning("could not read ACME renewal info", subject=name.subject, error=str(exc))
            return
        if answer is None:
            name.ari_next = float("inf")  # the CA offers none
            return
        start, end, retry_after = answer
        if name.ari_renew_at is None or not (start <= name.ari_renew_at <= end):
            name.ari_renew_at = start + (end - start) * random.random()
        name.renew_at = name.ari_renew_at
        recheck = (retry_after - _now()).total_seconds() if retry_after else ARI_DEFAULT_RECHECK
        name.ari_next = time.monotonic() + max(60.0, recheck)
        self.log.info("ACME renewal info", subject=name.subject, window_start=str(start), window_end=str(end),
                      renew_at=str(name.renew_at))

    async def _attempt(self, name: ManagedName) -> None:
        try:
            await self._obtain_any(name)
        except Exception as exc:  # noqa: BLE001 - any failure is retried; the message says why
            name.failures += 1
            delay = RETRY_INTERVALS[min(name.failures, len(RETRY_INTERVALS)) - 1] * random.uniform(0.9, 1.1)
            name.next_attempt = time.monotonic() + delay
            name.error = str(exc) or repr(exc)
            self.log.error("could not obtain a certificate", subject=name.subject, error=name.error,
                           retry_in_seconds=round(delay, 1), still_serving=name.valid)
        else:
            name.failures, name.error, name.next_attempt = 0, "", 0.0
        finally:
            name.attempted = True

    async def _obtain_any(self, name: ManagedName) -> None:
        """The name's issuers in order until one gives a certificate (files written in a
        worker thread; loaded here, on the loop)."""
        errors = []
        for issuer in name.issuers:
            started = time.monotonic()
            label = "local CA" if isinstance(issuer, InternalIssuerConfig) else issuer.directory
            try:
                if isinstance(issuer, InternalIssuerConfig):
                    await asyncio.to_thread(self._issue_local, name.subject)
                elif self._obtain is None:
                    raise RuntimeError("no ACME client configured")
                else:
                    await asyncio.to_thread(self._obtain, issuer, name.subject, self.storage_root,
                                            name.cert_file if name.valid else "")
            except Exception as exc:  # noqa: BLE001 - the next issuer may succeed
                errors.append(f"{label}: {exc}")
                continue
            if not self._load_stored(name):
                errors.append(f"{label}: the new certificate is not in storage")
                continue
            self.log.info("certificate obtained", subject=name.subject, issuer=label,
                          seconds=round(time.monotonic() - started, 3), not_after=str(name.not_after))
            return
        raise RuntimeError("; ".join(errors) or "no issuer")

    def _issue_local(self, subject: str) -> bool:
        """A local-CA leaf for `subject` unless the stored one is good; True if issued. Under
        the storage lock: the CA itself may be made or renewed here."""
        with storage_lock(self.storage_root):
            ca = LocalCA(self.storage_root)
            if not ca.leaf_needs_renewal(subject):
                return False
            ca.issue(subject)
            return True


class AcmeClients:
    """The `Obtain` of ACME issuers: one client per issuer settings and storage (each
    keeps its account loaded), all answering challenges through one board.

    `challenge_types(subject)` names the challenges this process can answer for the
    subject now (HTTP-01 needs a plain-HTTP listener on http_port, TLS-ALPN-01 a TLS
    listener on https_port serving the name); the issuer's own settings can only take
    some away."""

    def __init__(self, board: Any, challenge_types: Callable[[str], tuple[str, ...]]) -> None:
        self.board = board
        self.challenge_types = challenge_types
        self._clients: dict[tuple[AcmeIssuerConfig, str, tuple[str, ...]], Any] = {}
        self._lock = threading.Lock()
        # set at shutdown: an order or a lock wait in a worker thread gives up at once
        # (a thread cannot be cancelled, and the process would wait for it at exit)
        self.stopping = threading.Event()

    def __call__(self, issuer: AcmeIssuerConfig, subject: str, storage_root: str, current: str) -> None:
        disabled = {"http-01": issuer.disable_http_challenge, "tls-alpn-01": issuer.disable_tlsalpn_challenge}
        available = self.challenge_types(subject)
        challenges = tuple(c for c in available if not disabled.get(c))
        if not challenges:
            raise RuntimeError(
                f"no ACME challenge can be answered for {subject}: HTTP-01 needs a plain-HTTP listener on the"
                " http_port (removed by auto_https disable_redirects?) and TLS-ALPN-01 a TLS listener on the"
                f" https_port serving {subject}" + (" (both allowed by the issuer)" if not any(disabled.values())
                                                     else " (the issuer disables the other)"))
        replacing = _load_cert(current) if current else None
        # under certmagic's lock for the name: a certificate another process just stored is reused
        self._client(issuer, storage_root, challenges).obtain([subject], replacing=replacing, cancel=self.stopping)

    def renewal_info(self, issuer: AcmeIssuerConfig, cert_file: str) -> tuple[dt.datetime, dt.datetime, dt.datetime | None] | None:
        with open(cert_file, "rb") as f:
            chain = f.read()
        window = self._client(issuer, "", ("http-01",)).renewal_window(chain)
        return None if window is None else (window.start, window.end, window.retry_after)

    def _client(self, issuer: AcmeIssuerConfig, storage_root: str, challenges: tuple[str, ...]) -> Any:
        from dataclasses import replace

        from .acme import AcmeIssuer, AcmeSettings, needs_zerossl_eab, zerossl_eab_credentials

        key = (issuer, storage_root, challenges)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                settings = AcmeSettings(directory=issuer.directory, email=issuer.email or None,
                                        ca_root=issuer.trusted_roots[0] if issuer.trusted_roots else None,
                                        eab=issuer.eab, challenges=challenges)
                if storage_root and needs_zerossl_eab(settings, storage_root):
                    settings = replace(settings, eab=zerossl_eab_credentials(settings.email))
                client = self._clients[key] = AcmeIssuer(settings, storage_root, self.board)
            return client


def _managed(servers) -> list[Certificate]:
    out: dict[tuple[str, tuple[str, ...]], Certificate] = {}
    for server in servers:
        for cert in server.certificates:
            if cert.managed:
                out.setdefault((cert.issuer or "", cert.hosts), cert)
    return list(out.values())
