"""Limits and timeouts of an HTTPServer's connections."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSettings:
    keepalive_timeout: float = 300.0  # idle time, and time for a request head to arrive
    max_line_size: int = 64 << 10  # request line
    max_field_size: int = 64 << 10  # one header line
    max_head_size: int = 1 << 20  # the whole head
