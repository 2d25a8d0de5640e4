"""Prometheus metrics behind a small API that the other layers call.

Callers never touch prometheus_client: they hold a `NullMetrics` (metrics off)
or a `Metrics` (metrics on), which share one interface, and call methods such
as `observe_request(...)`, `appended(n)` or `reader_started("sse")`.

Every metric lives on a dedicated CollectorRegistry (never the process-global
default one), so several servers in one process, or in one test run, do not
collide. Label values come from small fixed sets: stream paths never become
labels, whatever the request looks like.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.exposition import choose_encoder

from durable_streams.server import __version__

from ..http import Request, Response
from .health import method_not_allowed

NAMESPACE = "durable_streams"
METRICS_PATH = "/metrics"

OPERATIONS = ("create", "append", "read", "long-poll", "sse", "head", "delete", "subscription", "other")
READER_KINDS = ("long-poll", "sse")
DELIVERY_OUTCOMES = ("delivered", "rejected", "unreachable", "refused", "failed", "other")
CLAIM_OUTCOMES = ("claimed", "already_claimed", "no_pending_work", "other")
METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH")

# A request whose client went away gets no response, so no status; we record it
# with nginx's "client closed request" code so it lands in 4xx.
CLIENT_CLOSED_REQUEST = 499

# Request latency spans 1 ms catch-up reads up to SSE connections held for the
# reconnect interval (60 s by default) and beyond.
REQUEST_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)


class StoreStats(Protocol):
    """What a store counts about itself (the file store has these attributes)."""

    @property
    def flush_count(self) -> int: ...  # group commits (one fsync each)

    @property
    def flush_seconds_total(self) -> float: ...  # time spent writing + fsyncing them

    @property
    def batch_records_total(self) -> int: ...  # records they made durable

    @property
    def open_handles(self) -> int: ...

    @property
    def evictions(self) -> int: ...


class SharedStoreStats(Protocol):
    """What a shared (PostgreSQL) store counts about itself."""

    @property
    def conflicts(self) -> int: ...  # appends refused because another node wrote first

    @property
    def pool_size(self) -> int: ...  # database connections open

    @property
    def pool_in_use(self) -> int: ...  # of which busy now

    @property
    def listener_connected(self) -> bool: ...  # the LISTEN connection is up

    @property
    def listener_reconnects(self) -> int: ...

    @property
    def notify_count(self) -> int: ...  # this node's own flush notifications heard back

    @property
    def notify_seconds_total(self) -> float: ...  # their lag from flush to wake-up

    @property
    def reads_from_memory(self) -> int: ...  # reads of the newest bytes, with no database round trip


class SubscriptionStats(Protocol):
    @property
    def count(self) -> int: ...

    @property
    def retry_queue_depth(self) -> int: ...  # webhook wakes waiting for a retry

    @property
    def leases_held(self) -> int: ...  # wakes whose lease runs (delivered webhooks, claims)


class CertificateStats(Protocol):
    """What the certificate manager knows of each managed name (runtime/tls/manager.py)."""

    def certificate_states(self) -> Iterable[tuple[str, str, float | None, int]]:
        """(subject, issuer that issued the served certificate, its expiry as a Unix time or
        None when there is none, consecutive failed attempts)."""
        ...


class ConnectionStats(Protocol):
    """What an HTTP server counts about its connections (http/server.py has these)."""

    @property
    def open_connections(self) -> int: ...

    @property
    def refused_connections(self) -> int: ...  # closed at once: the connection cap was reached

    @property
    def accepted_connections(self) -> int: ...  # served, whatever the protocol

    @property
    def h2_connections(self) -> int: ...  # accepted ones that chose HTTP/2


def operation_of(method: str, query: Mapping[str, str] | None = None, path: str = "") -> str:
    """The protocol operation a request performs, from its method and query (and its path:
    the reserved `__ds/` control routes are `subscription`)."""
    if "/__ds" in path and ("/__ds/" in path or path.endswith("/__ds")):
        return "subscription"
    method = method.upper()
    if method == "PUT":
        return "create"
    if method == "POST":
        return "append"  # closing a stream is an append with Stream-Closed
    if method == "HEAD":
        return "head"
    if method == "DELETE":
        return "delete"
    if method == "GET":
        live = (query or {}).get("live")
        if live in READER_KINDS:
            return live
        return "read"
    return "other"


def status_class(status: int) -> str:
    """`2xx`-style class of an HTTP status; anything outside 100-599 is `other`."""
    if 100 <= status <= 599:
        return f"{status // 100}xx"
    return "other"


def _method_label(method: str) -> str:
    method = method.upper()
    return method if method in METHODS else "OTHER"


def _bounded(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else "other"


class NullMetrics:
    """The metrics interface; every call does nothing (metrics turned off).

    `Metrics` overrides each method. Methods are cheap and synchronous, and
    safe to call from any thread (the file store's writer thread included).
    """

    enabled = False

    # -- HTTP layer (runtime middleware) --
    def observe_request(self, method: str, status: int, operation: str, seconds: float) -> None:
        """One finished HTTP request: its method, status code, operation and latency."""

    def reader_started(self, kind: str) -> None:
        """A long-poll or SSE reader starts waiting (`kind` in READER_KINDS)."""

    def reader_finished(self, kind: str) -> None:
        """A reader counted by `reader_started` has gone."""

    # -- protocol / engine --
    def appended(self, nbytes: int) -> None:
        """`nbytes` of stream data committed by an append or a create with a body."""

    def served(self, nbytes: int) -> None:
        """`nbytes` of stream data sent to readers (catch-up, long-poll, SSE)."""

    def track_streams(self, count: Callable[[], int]) -> Callable[[], None]:
        """Add `count()` to the number of streams in existence, read at each scrape.

        Counting at scrape time cannot drift, unlike increments and decrements
        spread over create, delete, expiry and recovery. Each store/engine
        registers its own count; call the returned function when it closes
        (e.g. the old handlers after a reload).
        """
        return _nothing

    def stream_expired(self) -> None:
        """A stream ceased to exist because its TTL or Expires-At passed."""

    def producer_duplicate(self) -> None:
        """An idempotent producer's retry was recognised and not appended again."""

    def retention_applied(self, dropped: int, reclaimed: int) -> None:
        """Retention moved a stream's floor by `dropped` bytes; `reclaimed` bytes of storage were released."""

    def track_retained(self, retained: Callable[[], int]) -> Callable[[], None]:
        """Add `retained()` to the bytes streams hold above their floors, read at each scrape."""
        return _nothing

    def live_reader_refused(self) -> None:
        """A long-poll or SSE request was refused (503) because max_live_readers was reached."""

    def webhook_delivery(self, outcome: str) -> None:
        """A webhook delivery attempt ended: delivered, rejected (non-2xx), unreachable,
        refused (an internal address), failed (timeout, protocol error)."""

    def wake_claim(self, outcome: str) -> None:
        """A pull-wake claim: claimed, already_claimed, no_pending_work."""

    def track_subscriptions(self, subscriptions: "SubscriptionStats") -> Callable[[], None]:
        """Report the subscriptions' counts (retry queue, leases) at each scrape."""
        return _nothing

    def slow_reader_disconnected(self) -> None:
        """An SSE reader that stopped reading was disconnected."""

    # -- store --
    def track_store(self, store: StoreStats) -> Callable[[], None]:
        """Export a store's own counters (group commits, open handles, evictions).

        They are read at each scrape, so the store's writer thread never calls
        into metrics. Returns the function that stops tracking the store (call
        it when the store closes).
        """
        return _nothing

    def track_shared_store(self, store: SharedStoreStats) -> Callable[[], None]:
        """Export a shared store's counters (conflicts, pool, LISTEN connection, notify lag)."""
        return _nothing

    def observe_recovery(self, seconds: float) -> None:
        """Duration of the start-up recovery of the store."""

    # -- HTTP servers --
    def track_connections(self, server: ConnectionStats) -> Callable[[], None]:
        """Export an HTTP server's connection counts, read at each scrape. Returns the
        function that stops tracking it (call it when the listener closes)."""
        return _nothing

    def track_certificates(self, certificates: CertificateStats) -> Callable[[], None]:
        """Export the managed certificates' expiry and failures, read at each scrape."""
        return _nothing

    # -- exposition --
    def render(self, accept: str | None = None, *, openmetrics: bool = True) -> tuple[bytes, str]:
        """Exposition body for a scraper's Accept header, and its content type.

        Empty when metrics are off.
        """
        return b"", CONTENT_TYPE_LATEST


NULL_METRICS = NullMetrics()


def _nothing() -> None:
    pass


class _Tracked(list):
    """Objects registered by several stores/engines; each registration can be undone."""

    def add(self, item: Any) -> Callable[[], None]:
        self.append(item)

        def remove() -> None:
            if item in self:
                self.remove(item)

        return remove


class _StoreCollector(Collector):
    """Sums the counters that tracked stores keep themselves, at scrape time."""

    def __init__(self, stores: _Tracked) -> None:
        self._stores = stores

    def collect(self) -> Iterable[Metric]:
        stores = list(self._stores)
        flushes = sum(store.flush_count for store in stores)
        # Summaries (count + sum): the store keeps running totals, not one
        # observation per flush, so rate() gives flushes/s, mean latency and
        # mean batch size.
        yield SummaryMetricFamily(
            f"{NAMESPACE}_store_flush_duration_seconds", "Group commits (write + fsync) and their total duration.",
            count_value=flushes, sum_value=sum(store.flush_seconds_total for store in stores),
        )
        yield SummaryMetricFamily(
            f"{NAMESPACE}_store_flush_batch_size", "Group commits and the records they made durable.",
            count_value=flushes, sum_value=sum(store.batch_records_total for store in stores),
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_store_open_files", "File handles held open by the stores.",
            value=sum(store.open_handles for store in stores),
        )
        yield CounterMetricFamily(
            f"{NAMESPACE}_store_file_evictions", "File handles closed to stay under max_file_handles.",
            value=sum(store.evictions for store in stores),
        )


class _SharedStoreCollector(Collector):
    """The PostgreSQL stores' own counters, at scrape time."""

    def __init__(self, stores: _Tracked) -> None:
        self._stores = stores

    def collect(self) -> Iterable[Metric]:
        stores = list(self._stores)
        yield CounterMetricFamily(
            f"{NAMESPACE}_postgres_conflicts", "Appends refused because another node wrote the stream first.",
            value=sum(s.conflicts for s in stores))
        yield GaugeMetricFamily(
            f"{NAMESPACE}_postgres_pool_connections", "Database connections open in the pools.",
            value=sum(s.pool_size for s in stores))
        yield GaugeMetricFamily(
            f"{NAMESPACE}_postgres_pool_connections_in_use", "Database connections busy now.",
            value=sum(s.pool_in_use for s in stores))
        yield GaugeMetricFamily(
            f"{NAMESPACE}_postgres_listener_connected", "1 while every LISTEN connection is up.",
            value=float(all(s.listener_connected for s in stores)))
        yield CounterMetricFamily(
            f"{NAMESPACE}_postgres_listener_reconnects", "LISTEN connections re-established.",
            value=sum(s.listener_reconnects for s in stores))
        yield SummaryMetricFamily(
            f"{NAMESPACE}_postgres_notify_lag_seconds", "From a flush to its notification heard back.",
            count_value=sum(s.notify_count for s in stores),
            sum_value=sum(s.notify_seconds_total for s in stores))
        yield CounterMetricFamily(
            f"{NAMESPACE}_postgres_reads_from_memory",
            "Reads of the newest bytes served from what this node committed or was notified of.",
            value=sum(s.reads_from_memory for s in stores))


class _ConnectionCollector(Collector):
    """Sums the connection counts of tracked HTTP servers, at scrape time."""

    def __init__(self, servers: _Tracked) -> None:
        self._servers = servers

    def collect(self) -> Iterable[Metric]:
        servers = list(self._servers)
        yield GaugeMetricFamily(
            f"{NAMESPACE}_http_connections_open", "HTTP connections open now.",
            value=sum(s.open_connections for s in servers),
        )
        yield CounterMetricFamily(
            f"{NAMESPACE}_http_connections_refused", "Connections closed at once because max_connections were open.",
            value=sum(s.refused_connections for s in servers),
        )
        accepted = CounterMetricFamily(
            f"{NAMESPACE}_http_connections_accepted", "Connections accepted, by the protocol they chose.",
            labels=["protocol"],
        )
        h2 = sum(s.h2_connections for s in servers)
        accepted.add_metric(["h1"], sum(s.accepted_connections for s in servers) - h2)
        accepted.add_metric(["h2"], h2)
        yield accepted


class _CertificateCollector(Collector):
    """Managed certificates (automatic HTTPS), at scrape time: alert on an expiry that
    comes close, or on failures that do not stop."""

    def __init__(self, sources: _Tracked) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        expiry = GaugeMetricFamily(
            f"{NAMESPACE}_tls_certificate_expiry_timestamp_seconds",
            "When the certificate served for a managed name expires (Unix time).", labels=["subject", "issuer"])
        failures = GaugeMetricFamily(
            f"{NAMESPACE}_tls_certificate_failed_attempts",
            "Consecutive failed attempts to obtain or renew a managed name's certificate.", labels=["subject"])
        for source in list(self._sources):
            for subject, issuer, not_after, failed in source.certificate_states():
                if not_after is not None:
                    expiry.add_metric([subject, issuer], not_after)
                failures.add_metric([subject], failed)
        yield expiry
        yield failures


class Metrics(NullMetrics):
    """Prometheus-backed metrics on their own registry."""

    enabled = True

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

        Gauge(
            "build_info", "Build information; the value is always 1.",
            ["version"], namespace=NAMESPACE, registry=r,
        ).labels(version=__version__).set(1)

        request_labels = ["method", "status_class", "operation"]
        self._requests = Counter(
            "http_requests", "HTTP requests handled, by method, status class and operation.",
            request_labels, namespace=NAMESPACE, registry=r,
        )
        self._request_seconds = Histogram(
            "http_request_duration_seconds",
            "Time from receiving a request to the end of its response "
            "(for long-poll and SSE: the whole wait or connection).",
            request_labels, namespace=NAMESPACE, registry=r, buckets=REQUEST_BUCKETS,
        )
        self._readers = Gauge(
            "live_readers", "Long-poll and SSE readers currently connected.",
            ["kind"], namespace=NAMESPACE, registry=r,
        )
        for kind in READER_KINDS:
            self._readers.labels(kind=kind)

        self._appended = Counter(
            "appended_bytes", "Stream data bytes committed by appends and creates.",
            namespace=NAMESPACE, registry=r,
        )
        self._served = Counter(
            "served_bytes", "Stream data bytes sent to readers.",
            namespace=NAMESPACE, registry=r,
        )
        self._stream_counts = _Tracked()
        Gauge(
            "streams", "Streams in existence.", namespace=NAMESPACE, registry=r,
        ).set_function(lambda: sum(count() for count in list(self._stream_counts)))
        self._expired = Counter(
            "streams_expired", "Streams that ceased to exist because their TTL or Expires-At passed.",
            namespace=NAMESPACE, registry=r,
        )
        self._duplicates = Counter(
            "producer_duplicates", "Appends recognised as idempotent-producer retries and not appended again.",
            namespace=NAMESPACE, registry=r,
        )
        self._compacted = Counter(
            "retention_streams_compacted", "Retention passes that moved a stream's floor.",
            namespace=NAMESPACE, registry=r,
        )
        self._dropped = Counter(
            "retention_dropped_bytes", "Bytes below stream floors: dropped by retention.",
            namespace=NAMESPACE, registry=r,
        )
        self._reclaimed = Counter(
            "retention_reclaimed_bytes", "Storage released by retention (memory, disk blocks, database rows).",
            namespace=NAMESPACE, registry=r,
        )
        self._retained = _Tracked()
        Gauge(
            "retained_bytes", "Bytes streams hold above their floors.", namespace=NAMESPACE, registry=r,
        ).set_function(lambda: sum(count() for count in list(self._retained)))

        self._refused = Counter(
            "live_readers_refused", "Long-poll and SSE requests refused because max_live_readers was reached.",
            namespace=NAMESPACE, registry=r,
        )
        self._slow_disconnects = Counter(
            "slow_readers_disconnected", "SSE readers disconnected because they stopped reading.",
            namespace=NAMESPACE, registry=r,
        )

        self._deliveries = Counter(
            "webhook_deliveries", "Webhook delivery attempts, by outcome.",
            ["outcome"], namespace=NAMESPACE, registry=r,
        )
        for outcome in DELIVERY_OUTCOMES:
            self._deliveries.labels(outcome=outcome)
        self._claims = Counter(
            "wake_claims", "Pull-wake claims, by outcome.", ["outcome"], namespace=NAMESPACE, registry=r,
        )
        for outcome in CLAIM_OUTCOMES:
            self._claims.labels(outcome=outcome)
        self._subscriptions = _Tracked()
        for name, doc, read in (
            ("subscriptions", "Subscriptions in existence.", lambda s: s.count),
            ("webhook_retry_queue", "Webhook wakes waiting for a retry after a failed delivery.",
             lambda s: s.retry_queue_depth),
            ("subscription_leases", "Wake leases running (delivered webhooks, pull-wake claims).",
             lambda s: s.leases_held),
        ):
            Gauge(name, doc, namespace=NAMESPACE, registry=r).set_function(
                lambda read=read: sum(read(s) for s in list(self._subscriptions)))

        self._stores = _Tracked()
        r.register(_StoreCollector(self._stores))
        self._shared_stores = _Tracked()
        r.register(_SharedStoreCollector(self._shared_stores))
        self._http_servers = _Tracked()
        r.register(_ConnectionCollector(self._http_servers))
        self._certificates = _Tracked()
        r.register(_CertificateCollector(self._certificates))
        self._recovery_seconds = Gauge(
            "recovery_duration_seconds", "Duration of the last start-up recovery of the store.",
            namespace=NAMESPACE, registry=r,
        )

    def observe_request(self, method: str, status: int, operation: str, seconds: float) -> None:
        labels = (_method_label(method), status_class(status), _bounded(operation, OPERATIONS))
        self._requests.labels(*labels).inc()
        self._request_seconds.labels(*labels).observe(seconds)

    def reader_started(self, kind: str) -> None:
        self._readers.labels(kind=_bounded(kind, READER_KINDS)).inc()

    def reader_finished(self, kind: str) -> None:
        self._readers.labels(kind=_bounded(kind, READER_KINDS)).dec()

    def appended(self, nbytes: int) -> None:
        self._appended.inc(nbytes)

    def served(self, nbytes: int) -> None:
        self._served.inc(nbytes)

    def track_streams(self, count: Callable[[], int]) -> Callable[[], None]:
        return self._stream_counts.add(count)

    def stream_expired(self) -> None:
        self._expired.inc()

    def producer_duplicate(self) -> None:
        self._duplicates.inc()

    def retention_applied(self, dropped: int, reclaimed: int) -> None:
        if dropped:
            self._compacted.inc()
            self._dropped.inc(dropped)
        if reclaimed:
            self._reclaimed.inc(reclaimed)

    def track_retained(self, retained: Callable[[], int]) -> Callable[[], None]:
        return self._retained.add(retained)

    def live_reader_refused(self) -> None:
        self._refused.inc()

    def slow_reader_disconnected(self) -> None:
        self._slow_disconnects.inc()

    def webhook_delivery(self, outcome: str) -> None:
        self._deliveries.labels(outcome=_bounded(outcome, DELIVERY_OUTCOMES)).inc()

    def wake_claim(self, outcome: str) -> None:
        self._claims.labels(outcome=_bounded(outcome, CLAIM_OUTCOMES)).inc()

    def track_subscriptions(self, subscriptions: SubscriptionStats) -> Callable[[], None]:
        return self._subscriptions.add(subscriptions)

    def track_store(self, store: StoreStats) -> Callable[[], None]:
        return self._stores.add(store)

    def track_shared_store(self, store: SharedStoreStats) -> Callable[[], None]:
        return self._shared_stores.add(store)

    def track_connections(self, server: ConnectionStats) -> Callable[[], None]:
        return self._http_servers.add(server)

    def track_certificates(self, certificates: CertificateStats) -> Callable[[], None]:
        return self._certificates.add(certificates)

    def observe_recovery(self, seconds: float) -> None:
        self._recovery_seconds.set(seconds)

    def render(self, accept: str | None = None, *, openmetrics: bool = True) -> tuple[bytes, str]:
        # OpenMetrics only when the scraper asks for it (and it is allowed:
        # Caddy's `disable_openmetrics`); otherwise the text format under
        # prometheus_client's current content type.
        if openmetrics and accept and "application/openmetrics-text" in accept:
            encode, content_type = choose_encoder(accept)
            return encode(self.registry), content_type
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def create_metrics(enabled: bool) -> NullMetrics:
    """A fresh `Metrics` when enabled, else the shared no-op instance."""
    return Metrics() if enabled else NULL_METRICS


def metrics_response(metrics: NullMetrics, request: Request, *, openmetrics: bool = True) -> Response:
    """The answer of a metrics endpoint: the exposition for GET and HEAD, 404 when
    metrics are off. Serves the admin `/metrics` and the `metrics` directive alike;
    `openmetrics=False` is the `metrics { disable_openmetrics }` option."""
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed("GET", "HEAD")
    if not metrics.enabled:
        return Response(status=404, text="metrics are disabled\n")
    body, content_type = metrics.render(request.headers.get("Accept"), openmetrics=openmetrics)
    return Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def metrics_handler(metrics: NullMetrics, *, openmetrics: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """`metrics_response` as a request handler (the admin address's `/metrics`)."""

    async def serve_metrics(request: Request) -> Response:
        return metrics_response(metrics, request, openmetrics=openmetrics)

    return serve_metrics


Handler = Callable[[Any], Awaitable[Any]]


async def measure_request(metrics: NullMetrics, request: Any, handler: Handler) -> Any:
    """Run `handler(request)` and record it: count, latency, live readers.

    The one place the HTTP layer feeds metrics: the site listeners call it with every
    request (durable_streams.server.http). Only `method`, `query` and the response's
    `status` are read.
    """
    operation = operation_of(request.method, request.query, request.raw_path)
    is_reader = operation in READER_KINDS
    if is_reader:
        metrics.reader_started(operation)
    started = time.perf_counter()
    status = 500  # the HTTP server answers an exception from a handler with a 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except (ConnectionResetError, asyncio.CancelledError):
        status = CLIENT_CLOSED_REQUEST
        raise
    finally:
        if is_reader:
            metrics.reader_finished(operation)
        metrics.observe_request(request.method, status, operation, time.perf_counter() - started)
