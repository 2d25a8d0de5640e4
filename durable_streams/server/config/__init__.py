"""Config layer: Caddyfile syntax tree -> frozen config model.

`load_config(text)` parses (syntax layer) and adapts (this layer); every problem is raised
as a `CaddyfileError` worded like Caddy's. `DEV_CADDYFILE` is the embedded zero-config
setup the `dev` command (and `run` without a Caddyfile) uses; it is the same Caddyfile the
official plugin's `dev` command writes.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..caddyfile.errors import CaddyfileError
from ..caddyfile.tree import Caddyfile
from .errors import AdaptError
from .model import Config

DEV_CADDYFILE = """\
{
\tadmin off
\tauto_https off
}

:4437 {
\troute /v1/stream/* {
\t\tdurable_streams
\t}
}
"""


def adapt_tree(tree: Caddyfile) -> Config:
    """Adapt an already-parsed tree (raises CaddyfileError)."""
    from .adapt import adapt

    try:
        return adapt(tree)
    except AdaptError as exc:
        raise CaddyfileError(exc.text, exc.file, exc.line, style="bare") from None


def load_config(text: str, filename: str = "Caddyfile", env: Mapping[str, str] | None = None) -> Config:
    """Parse + adapt Caddyfile text. Raises CaddyfileError with Caddy's wording and file:line."""
    from ..caddyfile import parse

    return adapt_tree(parse(text, filename=filename, env=env))


__all__ = ["Config", "DEV_CADDYFILE", "CaddyfileError", "adapt_tree", "load_config"]
