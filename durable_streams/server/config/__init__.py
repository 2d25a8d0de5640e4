"""Config layer: Caddyfile syntax tree -> frozen config model.

`load_config(text)` parses (syntax layer) and adapts (this layer); every problem is raised
as a `CaddyfileError` worded like Caddy's. `DEV_CADDYFILE` is the embedded zero-config
setup the `dev` command (and `run` without a Caddyfile) uses: like the Node dev server, it
serves a stream at every path (`/my-stream`, `/v1/stream/x`), so the upstream quickstart
(`STREAM_URL=http://localhost:4437`) works as written.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..caddyfile.errors import CaddyfileError
from ..caddyfile.tree import Caddyfile
from .errors import AdaptError
from .model import Config

DEV_PORT = 4437


def dev_caddyfile(port: int = DEV_PORT) -> str:
    """The zero-config Caddyfile, listening on `port`."""
    return (
        "{\n\tadmin off\n\tauto_https off\n}\n\n"
        f":{port} {{\n\troute {{\n\t\tdurable_streams\n\t}}\n}}\n"
    )


DEV_CADDYFILE = dev_caddyfile()


def adapt_tree(tree: Caddyfile) -> Config:
    """Adapt an already-parsed tree (raises CaddyfileError)."""
    from .adapt import adapt

    try:
        return adapt(tree)
    except AdaptError as exc:
        raise CaddyfileError(exc.text, exc.file, exc.line, style="bare") from None


def load_config(text: str, filename: str = "Caddyfile", env: Mapping[str, str] | None = None) -> Config:
    """Parse + adapt Caddyfile text. Raises CaddyfileError with Caddy's wording and file:line."""
    from dataclasses import replace

    from ..caddyfile import parse

    config = adapt_tree(parse(text, filename=filename, env=env))
    unformatted = formatting_difference(filename, text)
    if unformatted:
        config = replace(config, warnings=(unformatted, *config.warnings))
    return config


def formatting_difference(filename: str, text: str) -> str | None:
    """Caddy's lint warning when the input is not `fmt`-clean (it never fails a config)."""
    from ..caddyfile import format_caddyfile

    body = text.replace("\r\n", "\n")
    formatted = format_caddyfile(body)
    if formatted == body:
        return None
    line = 1
    for i, ch in enumerate(body):
        if i >= len(formatted) or ch != formatted[i]:
            break
        if ch == "\n":
            line += 1
    return (
        f"{filename}:{line}: Caddyfile input is not formatted;"
        " run 'durable-streams-server fmt --overwrite' to fix inconsistencies"
    )


__all__ = ["Config", "DEV_CADDYFILE", "DEV_PORT", "dev_caddyfile", "CaddyfileError", "adapt_tree", "load_config"]
