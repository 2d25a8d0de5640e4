"""Caddyfiles with one `durable_streams` block, and that block's handler from the config."""

from __future__ import annotations


def caddyfile_with(block: str) -> str:
    return ":80 {\n\troute {\n\t\tdurable_streams {\n\t\t\t" + block + "\n\t\t}\n\t}\n}\n"


def durable_streams_handler(config):
    (handler,) = [h for s in config.servers for r in s.routes for sub in r.handle for h in _walk(sub)]
    return handler


def _walk(handler):
    routes = getattr(handler, "routes", None)
    if routes is None:
        yield handler
        return
    for route in routes:
        for inner in route.handle:
            yield from _walk(inner)
