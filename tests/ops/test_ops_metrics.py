"""Metrics: the API moves the right series, and /metrics serves parseable text."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from durable_streams.server.http import Request, Response
from durable_streams.server.http.server import Handler
from durable_streams.server.ops.metrics import (
    METRICS_PATH,
    NULL_METRICS,
    OPERATIONS,
    Metrics,
    NullMetrics,
    create_metrics,
    measure_request,
    metrics_handler,
    operation_of,
    status_class,
)


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """Current value of one series, read back through the exposition text."""
    body, _ = metrics.render()
    found = [v for n, l, v in samples(body.decode()) if n == name and l == labels]
    assert len(found) <= 1, found
    return found[0] if found else 0.0


@pytest.mark.parametrize(
    ("method", "query", "expected"),
    [
        ("PUT", {}, "create"),
        ("POST", {}, "append"),
        ("post", {}, "append"),
        ("GET", {}, "read"),
        ("GET", {"offset": "-1"}, "read"),
        ("GET", {"offset": "now", "live": "long-poll"}, "long-poll"),
        ("GET", {"live": "sse"}, "sse"),
        ("GET", {"live": "bogus"}, "read"),
        ("HEAD", {}, "head"),
        ("DELETE", {}, "delete"),
        ("OPTIONS", {}, "other"),
        ("BREW", None, "other"),
    ],
)
def test_operation_of(method, query, expected):
    assert operation_of(method, query) == expected


@pytest.mark.parametrize("method", ["PUT", "GET", "POST", "DELETE"])
def test_control_routes_are_subscription_operations(method):
    assert operation_of(method, {}, "/v1/stream/__ds/subscriptions/s1") == "subscription"
    assert operation_of(method, {}, "/v1/stream/__ds") == "subscription"
    assert operation_of(method, {}, "/v1/stream/__dsx") != "subscription"  # an ordinary stream


@pytest.mark.parametrize(
    ("status", "expected"),
    [(101, "1xx"), (200, "2xx"), (204, "2xx"), (307, "3xx"), (404, "4xx"), (499, "4xx"), (503, "5xx"), (0, "other"), (600, "other")],
)
def test_status_class(status, expected):
    assert status_class(status) == expected


def test_exposition_parses_and_has_process_and_platform_series():
    metrics = Metrics()
    body, content_type = metrics.render()
    assert content_type == CONTENT_TYPE_LATEST
    names = {name for name, _, _ in samples(body.decode())}
    assert "process_cpu_seconds_total" in names
    assert "python_info" in names
    assert "durable_streams_build_info" in names
    # Reader gauges exist at zero before any reader shows up.
    assert value(metrics, "durable_streams_live_readers", kind="sse") == 0
    assert value(metrics, "durable_streams_live_readers", kind="long-poll") == 0


def test_each_api_call_moves_its_series():
    m = Metrics()
    m.observe_request("POST", 204, "append", 0.004)
    m.observe_request("POST", 204, "append", 0.2)
    m.observe_request("GET", 404, "read", 0.001)
    labels = {"method": "POST", "status_class": "2xx", "operation": "append"}
    assert value(m, "durable_streams_http_requests_total", **labels) == 2
    assert value(m, "durable_streams_http_request_duration_seconds_count", **labels) == 2
    assert value(m, "durable_streams_http_request_duration_seconds_sum", **labels) == pytest.approx(0.204)
    assert value(m, "durable_streams_http_request_duration_seconds_bucket", le="0.005", **labels) == 1
    assert value(m, "durable_streams_http_requests_total", method="GET", status_class="4xx", operation="read") == 1

    m.appended(100)
    m.appended(23)
    assert value(m, "durable_streams_appended_bytes_total") == 123
    m.served(7)
    assert value(m, "durable_streams_served_bytes_total") == 7

    streams = {"/a": 1, "/b": 2}
    m.track_streams(lambda: len(streams))
    assert value(m, "durable_streams_streams") == 2
    del streams["/a"]
    assert value(m, "durable_streams_streams") == 1  # read at scrape time
    # A second store adds its own count until it closes.
    untrack = m.track_streams(lambda: 10)
    assert value(m, "durable_streams_streams") == 11
    untrack()
    untrack()  # closing twice is harmless
    assert value(m, "durable_streams_streams") == 1
    m.stream_expired()
    assert value(m, "durable_streams_streams_expired_total") == 1

    m.producer_duplicate()
    assert value(m, "durable_streams_producer_duplicates_total") == 1
    m.live_reader_refused()
    assert value(m, "durable_streams_live_readers_refused_total") == 1
    m.slow_reader_disconnected()
    m.slow_reader_disconnected()
    assert value(m, "durable_streams_slow_readers_disconnected_total") == 2

    m.reader_started("sse")
    m.reader_started("sse")
    m.reader_started("long-poll")
    m.reader_finished("sse")
    assert value(m, "durable_streams_live_readers", kind="sse") == 1
    assert value(m, "durable_streams_live_readers", kind="long-poll") == 1

    class Store:  # the attributes the file store keeps about itself
        flush_count = 10
        flush_seconds_total = 0.5
        batch_records_total = 35
        open_handles = 40
        evictions = 3

    first, second = Store(), Store()
    m.track_store(first)
    untrack = m.track_store(second)
    second.open_handles, second.evictions, second.flush_count = 2, 1, 5
    assert value(m, "durable_streams_store_open_files") == 42  # read at scrape time
    assert value(m, "durable_streams_store_file_evictions_total") == 4
    assert value(m, "durable_streams_store_flush_duration_seconds_count") == 15
    assert value(m, "durable_streams_store_flush_duration_seconds_sum") == 1.0
    assert value(m, "durable_streams_store_flush_batch_size_count") == 15
    assert value(m, "durable_streams_store_flush_batch_size_sum") == 70
    untrack()
    assert value(m, "durable_streams_store_open_files") == 40
    assert value(m, "durable_streams_store_flush_batch_size_count") == 10

    m.observe_recovery(1.5)
    assert value(m, "durable_streams_recovery_duration_seconds") == 1.5


def test_label_values_stay_in_fixed_sets():
    m = Metrics()
    m.observe_request("X-WEIRD-METHOD", 999, "/v1/stream/user-123", 0.01)
    m.reader_started("/v1/stream/abc")
    text = m.render()[0].decode()
    assert "/v1/stream" not in text
    assert value(m, "durable_streams_http_requests_total", method="OTHER", status_class="other", operation="other") == 1
    for name, labels, _ in samples(text):
        if name == "durable_streams_http_requests_total":
            assert labels["operation"] in OPERATIONS


def test_registries_are_independent():
    a, b = Metrics(), Metrics()
    a.appended(10)
    assert value(a, "durable_streams_appended_bytes_total") == 10
    assert value(b, "durable_streams_appended_bytes_total") == 0


def test_null_metrics_has_the_whole_interface_and_does_nothing():
    public = {n for n in dir(Metrics) if not n.startswith("_") and callable(getattr(Metrics, n))}
    assert public <= {n for n in dir(NullMetrics) if callable(getattr(NullMetrics, n))}
    NULL_METRICS.observe_request("GET", 200, "read", 0.1)
    NULL_METRICS.appended(5)
    assert NULL_METRICS.render()[0] == b""
    assert create_metrics(False) is NULL_METRICS
    assert isinstance(create_metrics(True), Metrics)


def test_openmetrics_is_served_when_asked_for():
    m = Metrics()
    m.appended(3)
    body, content_type = m.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    families = {f.name: f for f in parse_openmetrics(body.decode())}
    assert families["durable_streams_appended_bytes"].samples[0].value == 3


def _measured_server(metrics: NullMetrics, release: asyncio.Event, waiting: asyncio.Event) -> Handler:
    """/metrics plus a stand-in for stream paths, every request measured as on a site listener."""
    serve_metrics = metrics_handler(metrics)

    async def stream(request: Request) -> Response:
        if request.query.get("live") == "sse":
            waiting.set()
            await release.wait()
        if request.method == "PUT":
            return Response(status=201)
        if request.path.endswith("/missing"):
            return Response(status=404)
        return Response(text="data")

    async def route(request: Request) -> Response:
        if request.path == METRICS_PATH:
            return await serve_metrics(request)
        if request.path.startswith("/v1/stream/"):
            return await stream(request)
        return Response(status=404)

    async def handle(request: Request) -> Response:
        return await measure_request(metrics, request, route)

    return handle


async def test_metrics_endpoint_and_measured_requests_over_a_socket(serve, http):
    metrics = Metrics()
    release, waiting = asyncio.Event(), asyncio.Event()
    async with serve(_measured_server(metrics, release, waiting)) as base:
        assert (await http.put(f"{base}/v1/stream/a")).status == 201
        assert (await http.get(f"{base}/v1/stream/a?offset=-1")).status == 200
        assert (await http.get(f"{base}/v1/stream/missing")).status == 404

        sse = asyncio.create_task(http.get(f"{base}/v1/stream/a?live=sse&offset=now"))
        await asyncio.wait_for(waiting.wait(), 5)
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
            text = await resp.text()
        live = [v for n, l, v in samples(text) if n == "durable_streams_live_readers" and l == {"kind": "sse"}]
        assert live == [1]
        release.set()
        assert (await sse).status == 200

        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
        got = {(n, tuple(sorted(l.items()))): v for n, l, v in samples(text)}

        def requests(method, status, operation):
            key = (
                "durable_streams_http_requests_total",
                (("method", method), ("operation", operation), ("status_class", status)),
            )
            return got.get(key, 0)

        assert requests("PUT", "2xx", "create") == 1
        assert requests("GET", "2xx", "read") == 2  # the catch-up read and the first /metrics scrape
        assert requests("GET", "4xx", "read") == 1
        assert requests("GET", "2xx", "sse") == 1
        assert got[("durable_streams_live_readers", (("kind", "sse"),))] == 0
        assert not any("/v1/stream" in str(k) for k in got)

        assert (await http.post(f"{base}/metrics")).status == 405
        async with http.head(f"{base}/metrics") as resp:
            assert resp.status == 200


async def test_metrics_endpoint_is_404_when_metrics_are_off(serve, http):
    async with serve(metrics_handler(NULL_METRICS)) as base:
        assert (await http.get(f"{base}/metrics")).status == 404


async def test_client_going_away_is_recorded_and_reader_released(serve, http):
    metrics = Metrics()
    release, waiting = asyncio.Event(), asyncio.Event()
    finished = asyncio.Event()

    async def hold(request: Request) -> Response:
        waiting.set()
        try:
            await release.wait()
        finally:
            finished.set()
        return Response()

    async def handle(request: Request) -> Response:
        return await measure_request(metrics, request, hold)

    async with serve(handle) as base:
        request = asyncio.create_task(http.get(f"{base}/s?live=long-poll"))
        await asyncio.wait_for(waiting.wait(), 5)
        assert value(metrics, "durable_streams_live_readers", kind="long-poll") == 1
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.wait_for(finished.wait(), 5)
        await asyncio.sleep(0)
    assert value(metrics, "durable_streams_live_readers", kind="long-poll") == 0
    assert value(
        metrics, "durable_streams_http_requests_total", method="GET", status_class="4xx", operation="long-poll"
    ) == 1


def test_openmetrics_can_be_refused_like_caddys_disable_openmetrics():
    body, content_type = Metrics().render("application/openmetrics-text; version=1.0.0", openmetrics=False)
    assert content_type == CONTENT_TYPE_LATEST
    assert any(name == "durable_streams_build_info" for name, _, _ in samples(body.decode()))
