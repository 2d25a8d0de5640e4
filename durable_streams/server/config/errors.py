"""Error helpers for the adapter: Caddy's `, at FILE:LINE` suffix and its common messages."""

from __future__ import annotations

from ..caddyfile.tree import Token


class AdaptError(Exception):
    """A Caddy-worded config error. `text` is complete (locations already embedded).

    `file`/`line` point at the main culprit for tools; `load_config` turns this into
    a `CaddyfileError` with the same text.
    """

    def __init__(self, text: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.file = file
        self.line = line


def at(token: Token) -> str:
    """Caddy's Dispenser.WrapErr suffix."""
    where = f", at {token.file}:{token.line}"
    if token.import_chain:
        where += " import chain ['" + "','".join(token.import_chain) + "']"
    return where


def errf(token: Token, message: str) -> AdaptError:
    """Like Caddy's `d.Errf`: message + location of the current token."""
    return AdaptError(message + at(token), token.file, token.line)


def arg_error(token: Token) -> AdaptError:
    """Like Caddy's `d.ArgErr()`: the token is the last one read."""
    if token.text == "{" and not token.quoted:
        return errf(token, "unexpected token '{', expecting argument")
    return errf(token, f"wrong argument count or unexpected line ending after '{token.text}'")


def prefix_error(token: Token, message: str) -> AdaptError:
    """Caddy's setup-time style: `Caddyfile:7: message`."""
    return AdaptError(f"{token.file}:{token.line}: {message}", token.file, token.line)
