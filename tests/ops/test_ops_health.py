"""Liveness and readiness endpoints over a real socket."""

from __future__ import annotations

from aiohttp import web

from durable_streams.server.ops.health import (
    LIVENESS_PATH,
    READINESS_PATH,
    Readiness,
    add_health_routes,
    readiness_handler,
)


async def test_readiness_flips_with_the_lifecycle(serve, http):
    readiness = Readiness()
    app = web.Application()
    add_health_routes(app, readiness)
    async with serve(app) as base:
        async with http.get(base + READINESS_PATH) as resp:
            assert resp.status == 503
            assert resp.headers["Content-Type"].startswith("application/json")
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


async def test_health_endpoints_refuse_other_methods(serve, http):
    readiness = Readiness()
    app = web.Application()
    # Mounted for every method, as custom routing code would do.
    app.router.add_route("*", "/ready", readiness_handler(readiness))
    async with serve(app) as base:
        async with http.post(base + "/ready") as resp:
            assert resp.status == 405
            assert resp.headers["Allow"] == "GET,HEAD"
