"""Caddyfile syntax layer: read Caddyfile text exactly as Caddy 2.11 does.

`parse()` returns the block/segment tree (imports and snippets expanded, `{$ENV}`
substituted); it knows nothing about directives. `format_caddyfile()` is `caddy fmt`.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import CaddyfileError
from .formatter import format_caddyfile
from .parser import parse_caddyfile
from .tree import Caddyfile, Directive, ServerBlock, Token

__all__ = [
    "Caddyfile",
    "CaddyfileError",
    "Directive",
    "ServerBlock",
    "Token",
    "format_caddyfile",
    "parse",
]


def parse(text: str, filename: str = "Caddyfile", env: Mapping[str, str] | None = None) -> Caddyfile:
    """Parse a Caddyfile; raises CaddyfileError with Caddy's message and location.

    `env` replaces the process environment for `{$VAR}` substitution when given.
    Imports are resolved relative to `filename`'s directory.
    """
    return parse_caddyfile(text, filename, env)
