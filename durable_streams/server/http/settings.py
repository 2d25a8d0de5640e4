"""Limits and timeouts of an HTTPServer's connections."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSettings:
    keepalive_timeout: float = 300.0  # idle time between requests
    head_timeout: float = 30.0  # from a head's first byte to its end (408 after)
    min_body_rate: float = 1024.0  # bytes/s a body must average, after the grace (408 below)
    body_rate_grace: float = 10.0  # seconds a body may take before its rate is checked
    max_line_size: int = 64 << 10  # request line
    max_field_size: int = 64 << 10  # one header line
    max_head_size: int = 1 << 20  # the whole head
    max_header_fields: int = 100
    max_connections: int = 10000  # open at once; beyond, new ones are closed at once
    max_partial_heads: int = 64 << 20  # bytes of incomplete heads held, all connections
