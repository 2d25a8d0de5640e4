"""A cursor over lexed tokens with Caddy's line-aware moves (caddyfile/dispenser.go).

It knows tokens, lines and braces, nothing of directives, site blocks or imports.
Invariants: a brace is structural only when unquoted (`is_open_brace`/`is_close_brace`);
"a new line" is always `lexer.on_new_line` between neighbours in `tokens` as it stands
now (callers may splice into that list, so neighbours need not be source neighbours);
errors are placed on a token the way Caddy's Dispenser.Err/SyntaxErr place them.
"""

from __future__ import annotations

from .errors import CaddyfileError
from .lexer import on_new_line
from .tree import Token


def is_open_brace(token: Token | None) -> bool:
    return token is not None and token.text == "{" and token.quote is None


def is_close_brace(token: Token | None) -> bool:
    return token is not None and token.text == "}" and token.quote is None


def located_error(message: str, token: Token | None) -> CaddyfileError:
    """An error placed like Caddy's Dispenser.Err: `msg, at FILE:LINE [import chain [...]]`."""
    if token is None:
        return CaddyfileError(message, "", 0, style="wrap")
    return CaddyfileError(message, token.file, token.line, style="wrap", import_chain=token.import_chain)


def retext(token: Token, text: str) -> Token:
    """`token` with other text, same place and provenance."""
    return Token(text, token.file, token.line, token.quote, token.import_chain, token.snippet)


def syntax_error(found: Token | None, expected: str) -> CaddyfileError:
    """Caddy's SyntaxErr: `syntax error: unexpected token 'X', expecting 'Y', at F:L import chain: [...]`."""
    text = found.text if found is not None else ""
    message = f"syntax error: unexpected token '{text}', expecting '{expected}'"
    if found is None:
        return CaddyfileError(message, "", 0, style="syntax")
    return CaddyfileError(message, found.file, found.line, style="syntax", import_chain=found.import_chain)


class Dispenser:
    """A cursor over a token list with Caddy's line-aware moves (same names, same quirks)."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.cursor = -1
        self.nesting = 0  # only NextBlock changes it, as in Caddy

    @property
    def token(self) -> Token | None:
        if 0 <= self.cursor < len(self.tokens):
            return self.tokens[self.cursor]
        return None

    @property
    def val(self) -> str:
        token = self.token
        return token.text if token is not None else ""

    def next(self) -> bool:
        if self.cursor < len(self.tokens) - 1:
            self.cursor += 1
            return True
        return False

    def is_new_line(self) -> bool:
        """Is the current token the first of its logical line?"""
        if self.cursor < 1:
            return True
        if self.cursor > len(self.tokens) - 1:
            return False
        return on_new_line(self.tokens[self.cursor - 1], self.tokens[self.cursor])

    def next_on_same_line(self) -> bool:
        """Advance only if the next token continues the current line."""
        if self.cursor < 0:
            self.cursor += 1
            return True
        if self.cursor >= len(self.tokens) - 1:
            return False
        if not on_new_line(self.tokens[self.cursor], self.tokens[self.cursor + 1]):
            self.cursor += 1
            return True
        return False

    def next_is_on_new_line(self) -> bool:
        """Does the token after the current one start a new line (or is there none)?"""
        if self.cursor < 0:
            return False
        if self.cursor >= len(self.tokens) - 1:
            return True
        return on_new_line(self.tokens[self.cursor], self.tokens[self.cursor + 1])

    def next_arg(self) -> bool:
        if not self.next_on_same_line():
            return False
        if is_open_brace(self.token):
            self.cursor -= 1  # a block opening is not an argument
            return False
        return True

    def remaining_args(self) -> list[Token]:
        args = []
        while self.next_arg():
            args.append(self.tokens[self.cursor])
        return args

    def next_block(self, initial_nesting: int) -> bool:
        """Caddy's NextBlock: step through a `{ ... }` that opens on the current line."""
        if self.nesting > initial_nesting:
            if not self.next():
                return False
            if is_close_brace(self.token) and not self.next_on_same_line():
                self.nesting -= 1
            elif is_open_brace(self.token) and not self.next_on_same_line():
                self.nesting += 1
            return self.nesting > initial_nesting
        if not self.next_on_same_line():
            return False
        if not is_open_brace(self.token):
            self.cursor -= 1
            return False
        self.next()
        if is_close_brace(self.token):
            return False  # opened and closed right away
        self.nesting += 1
        return True

    def block_tokens(self) -> list[Token]:
        """The tokens of the block opening on this line, without its outer braces."""
        inside = []
        start = self.nesting
        while self.next_block(start):
            inside.append(self.tokens[self.cursor])
        return inside

    def braced_block(self, keep_braces: bool) -> list[Token]:
        """The `{ ... }` starting at the current token, read raw by depth (the parser's
        blockTokens): nothing inside is expanded or checked. Ends on its closing brace."""
        if not is_open_brace(self.token):
            raise syntax_error(self.token, "{")
        depth = 1
        body = [self.token] if keep_braces else []
        while self.next():
            token = self.token
            if is_close_brace(token):
                depth -= 1
                if depth == 0:
                    if keep_braces:
                        body.append(token)
                    break
            if is_open_brace(token):
                depth += 1
            body.append(token)
        if depth != 0:
            raise syntax_error(self.token, "}")
        return body
