"""Top-level blocks of a Caddyfile, walked the way Caddy's parser walks them (parse.go).

`BlockWalker` reads block heads (site keys, `&(name)` named routes), applies Caddy's
brace and line checks on the tokens as they stand, and hands the Lark grammar a stream of
classified tokens:

    FIRST_KEY KEY*        site addresses of one block (commas already removed)
    NAMED_ROUTE           the `&(name)` key of a named route
    OPEN_BLOCK/CLOSE_BLOCK the braces of a top-level block (site, global options, route)
    LBRACE/RBRACE         braces inside a block
    WORD                  every other token

It knows nothing of imports or snippets: where Caddy expands in place (a line led by
one of `Expander.words`) or stores a definition (a block head `Expander.define` claims),
it calls its `Expander` and walks on over whatever tokens are then at the cursor.
Everything inside blocks (segments, nesting, line rules) is left to the grammar.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from .dispenser import Dispenser, is_close_brace, is_open_brace, located_error, retext, syntax_error
from .tree import Token

FIRST_KEY, KEY, NAMED_ROUTE = "FIRST_KEY", "KEY", "NAMED_ROUTE"
OPEN_BLOCK, CLOSE_BLOCK, LBRACE, RBRACE, WORD = "OPEN_BLOCK", "CLOSE_BLOCK", "LBRACE", "RBRACE", "WORD"


@dataclass(frozen=True, slots=True)
class Item:
    kind: str
    token: Token


class Expander(Protocol):
    """What the walker leaves to the layer that owns imports (`imports.Importer`)."""

    # Words that, leading a line, `expand` replaces in place.
    words: frozenset[str]

    def expand(self, d: Dispenser, nesting: int) -> None:
        """Replace the line at the cursor (`nesting` 0: between blocks, 1: in a block);
        leaves the cursor on the first replacement token."""
        ...

    def define(self, d: Dispenser, key: Token) -> bool:
        """If `key`, a block's only key, heads a definition: consume its block, True."""
        ...


class BlockWalker:
    """Walk top-level blocks like Caddy's parser; yields `Item`s."""

    def __init__(self, tokens: list[Token], expander: Expander) -> None:
        self.d = Dispenser(tokens)
        self.expander = expander
        self._words = expander.words  # read per token: keep it a local set lookup

    def items(self) -> Iterator[Item]:
        while self.d.next():
            yield from self._block()

    # -- top level ---------------------------------------------------------------------

    def _block(self) -> Iterator[Item]:
        keys, at_eof = self._addresses()
        if at_eof:
            yield from self._key_items(keys)
            return
        if len(keys) == 1 and keys[0].text.startswith("&(") and keys[0].text.endswith(")"):
            body = self.d.braced_block(keep_braces=True)
            yield Item(NAMED_ROUTE, keys[0])
            yield Item(OPEN_BLOCK, body[0])
            for token in body[1:-1]:
                yield Item(_inner_kind(token), token)
            yield Item(CLOSE_BLOCK, body[-1])
            return
        if len(keys) == 1 and self.expander.define(self.d, keys[0]):
            return
        yield from self._key_items(keys)
        braced = is_open_brace(self.d.token)
        if braced:
            yield Item(OPEN_BLOCK, self.d.token)
        else:
            self.d.cursor -= 1  # a braceless single site: the body starts on the next line
        yield from self._body(braced)

    @staticmethod
    def _key_items(keys: list[Token]) -> Iterator[Item]:
        for index, key in enumerate(keys):
            yield Item(FIRST_KEY if index == 0 else KEY, key)

    def _addresses(self) -> tuple[list[Token], bool]:
        """Read a block's keys (Caddy's addresses()); returns (keys, reached EOF)."""
        d = self.d
        keys: list[Token] = []
        expecting_another = False
        while True:
            token = d.token
            value = d.val
            if value.startswith("@"):
                raise located_error(
                    "request matchers may not be defined globally, they must be in a site block; "
                    f"found {value}",
                    token,
                )
            if value in self._words and d.is_new_line():
                self.expander.expand(d, 0)
                continue
            if is_open_brace(token):
                if expecting_another:
                    raise located_error(
                        f"Expected another address but had '{value}' - check for extra comma", token
                    )
                return keys, False
            if value.endswith("{") and token is not None and token.quote is None:
                raise located_error(
                    f"Site addresses cannot end with a curly brace: '{value}' - put a space "
                    "between the token and the brace",
                    token,
                )
            if value:
                expecting_another = value.endswith(",")
                if expecting_another:
                    value = value[:-1]
                if "," in value:
                    raise located_error(
                        f"Site addresses cannot contain a comma ',': '{value}' - put a space "
                        "after the comma to separate site addresses",
                        token,
                    )
                if value:
                    keys.append(retext(token, value))
            has_next = d.next()
            if expecting_another and not has_next:
                raise located_error("unexpected EOF", d.token)
            if not has_next:
                return keys, True
            if not expecting_another and d.is_new_line():
                return keys, False

    def _body(self, braced: bool) -> Iterator[Item]:
        """The lines of a site or global block, up to its closing brace (or EOF).

        Applies Caddy's per-token checks where Caddy applies them: on the token list
        as it stands, before later expansions are spliced in (so errors come in Caddy's
        order and "next token" means the next token in the source).
        """
        d = self.d
        depth = 0
        segment_start = True
        while d.next():
            token = d.token
            if segment_start or (depth == 0 and d.is_new_line() and not _is_brace_word(token)):
                # a new directive line (Caddy's directives())
                if is_close_brace(token):
                    yield Item(CLOSE_BLOCK, token)
                    return
                if token.text in self._words:
                    self.expander.expand(d, 1)
                    d.cursor -= 1  # the loop's next() lands on the first replacement token
                    segment_start = True
                    continue
                segment_start = False
                yield Item(WORD, token)  # the name, even `{` or `{}` (Caddy's quirk)
                continue
            # inside a directive line or its block (Caddy's directive())
            if is_open_brace(token):
                depth += 1
                if not d.next_is_on_new_line():
                    raise located_error("Unexpected next token after '{' on same line", token)
                if d.is_new_line():
                    raise located_error(
                        "Unexpected '{' on a new line; did you mean to place the '{' on the previous line?",
                        token,
                    )
                yield Item(LBRACE, token)
            elif token.text == "{}" and token.quote is None:
                if d.next_is_on_new_line():
                    raise located_error("Unexpected '{}' at end of line", token)
                yield Item(WORD, token)
            elif is_close_brace(token):
                if depth == 0:
                    raise located_error("Unexpected '}' because no matching opening brace", token)
                depth -= 1
                yield Item(RBRACE, token)
            elif token.text in self._words and d.is_new_line():
                self.expander.expand(d, 1)
                d.cursor -= 1
            else:
                yield Item(WORD, token)
        if braced and depth == 0:
            last = d.token
            if not is_close_brace(last):
                raise syntax_error(last, "}")
            # Caddy quirk: an unclosed block whose last token is an inner '}' is accepted.
            virtual_line = last.line + last.text.count("\n") + 1
            yield Item(CLOSE_BLOCK, replace(last, line=virtual_line))
        # depth > 0: the grammar reports the unexpected EOF inside the nested block


def _is_brace_word(token: Token) -> bool:
    """`{` and `{}` are checked before Caddy looks at line breaks."""
    return token.quote is None and token.text in ("{", "{}")


def _inner_kind(token: Token) -> str:
    if is_open_brace(token):
        return LBRACE
    if is_close_brace(token):
        return RBRACE
    return WORD
