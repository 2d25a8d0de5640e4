"""The handler reports to the server's metrics object (ops/metrics.py) when given one."""

from __future__ import annotations

import re
import time

from durable_streams.server.ops.metrics import Metrics
from durable_streams.server.config.model import DurableStreams
from durable_streams.server.protocol.handler import DurableStreamsHandler
from launcher import serving


def sample(metrics: Metrics, name: str) -> float:
    text = metrics.render()[0].decode()
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


async def test_handler_reports_bytes_streams_expiry_and_duplicates(http):
    metrics = Metrics()
    handler = DurableStreamsHandler(DurableStreams(), metrics=metrics)
    async with serving(handler) as port:
        base = f"http://127.0.0.1:{port}/v1/stream"
        text = {"Content-Type": "text/plain"}
        async with http.put(f"{base}/a", data=b"12345", headers=text) as r:
            assert r.status == 201
        producer = {**text, "Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "0"}
        for expected in (200, 204):  # the retry is a duplicate
            async with http.post(f"{base}/a", data=b"678", headers=producer) as r:
                assert r.status == expected
        async with http.get(f"{base}/a") as r:
            assert await r.read() == b"12345678"
        async with http.put(f"{base}/b", headers={"Stream-TTL": "5"}) as r:
            assert r.status == 201
        assert sample(metrics, "durable_streams_streams") == 2
        assert sample(metrics, "durable_streams_appended_bytes_total") == 8
        assert sample(metrics, "durable_streams_served_bytes_total") == 8
        assert sample(metrics, "durable_streams_producer_duplicates_total") == 1
        handler.engine.clock = lambda: time.time() + 10
        async with http.head(f"{base}/b") as r:
            assert r.status == 404
        assert sample(metrics, "durable_streams_streams_expired_total") == 1
        assert sample(metrics, "durable_streams_streams") == 1
    assert sample(metrics, "durable_streams_streams") == 0  # untracked on stop
