"""Liveness and readiness endpoints over a real socket."""

from __future__ import annotations

from durable_streams.server.http import Request, Response
from durable_streams.server.ops.health import (
    LIVENESS_PATH,
    READINESS_PATH,
    Readiness,
    liveness_handler,
    readiness_handler,
)


def health_routes(readiness: Readiness):
    """Both endpoints at their documented paths, 404 elsewhere."""
    routes = {LIVENESS_PATH: liveness_handler(), READINESS_PATH: readiness_handler(readiness)}

    async def handle(request: Request) -> Response:
        endpoint = routes.get(request.path)
        return await endpoint(request) if endpoint else Response(status=404)

    return handle


async def test_readiness_flips_with_the_lifecycle(serve, http):
    readiness = Readiness()
    async with serve(health_routes(readiness)) as base:
        async with http.get(base + READINESS_PATH) as resp:
            assert resp.status == 503
            assert resp.headers["Content-Type"].startswith("application/json")
            assert resp.headers["Cache-Control"] == "no-store"
            body = await resp.json()
            assert body["status"] == "starting" and body["ready"] is False

        readiness.mark_ready()
        async with http.get(base + READINESS_PATH) as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ready"

        readiness.mark_stopping()
        async with http.get(base + READINESS_PATH) as resp:
            assert resp.status == 503
            assert (await resp.json())["status"] == "stopping"

        # Liveness does not depend on readiness.
        async with http.get(base + LIVENESS_PATH) as resp:
            assert resp.status == 200
            assert (await resp.json()) == {"status": "alive"}
        async with http.head(base + LIVENESS_PATH) as resp:
            assert resp.status == 200
            assert await resp.read() == b""


async def test_health_endpoints_refuse_other_methods(serve, http):
    readiness = Readiness()
    async with serve(health_routes(readiness)) as base:
        for path in (LIVENESS_PATH, READINESS_PATH):
            async with http.post(base + path) as resp:
                assert resp.status == 405
                assert resp.headers["Allow"] == "GET,HEAD"
