"""Block structure of a Caddyfile: Lark LALR over the walker's token stream.

Pipeline: env substitution -> lexer -> `walker.BlockWalker` (block heads and Caddy's
brace/line checks on the source tokens; `imports.Importer` splices snippets and imports
into its token list as it walks) -> `_TokenStream` (NL terminals) -> Lark with the
grammar in grammar/caddyfile.lark -> `_ToTree`, the only bridge to `tree` objects. Everything is lazy and the transformer runs inline, so errors
surface in source order, as in Caddy. The few errors only Lark notices (EOF inside a
nested block, shapes the walker lets through) are put into Caddy's words.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import lark
from lark.exceptions import UnexpectedToken

from .env import substitute_env
from .errors import CaddyfileError
from .dispenser import located_error
from .imports import Importer
from .lexer import on_new_line, tokenize
from .tree import Caddyfile, Directive, ServerBlock, Token
from .walker import CLOSE_BLOCK, FIRST_KEY, KEY, LBRACE, NAMED_ROUTE, OPEN_BLOCK, RBRACE, BlockWalker, Item

NL = "_NL"
# Top-level constructs whose line placement the walker has already checked.
_NO_NL_BEFORE = frozenset({FIRST_KEY, KEY, NAMED_ROUTE, OPEN_BLOCK})


def _grammar_path() -> Path:
    repo_copy = Path(__file__).resolve().parents[3] / "grammar" / "caddyfile.lark"
    if repo_copy.is_file():
        return repo_copy
    return Path(__file__).resolve().parent / "caddyfile.lark"  # installed wheel


class _LarkToken(lark.Token):
    """A Lark terminal that remembers the Caddyfile token it stands for."""

    __slots__ = ("source",)


def _terminal(kind: str, token: Token) -> _LarkToken:
    # Built directly rather than through lark.Token(): Lark reads only `type`/`value` and
    # copies the position slots for its $END token. Noticeably cheaper per token.
    terminal = str.__new__(_LarkToken, token.text)
    terminal.type = kind
    terminal.value = token.text
    terminal.source = token
    terminal.start_pos = terminal.end_pos = terminal.column = terminal.end_column = None
    terminal.line = terminal.end_line = token.line
    return terminal


class _TokenStream:
    """Feeds Lark: walker items as terminals, with NL where a logical line ends."""

    def __init__(self, items: Iterator[Item]) -> None:
        self._items = items
        self.last_source: Token | None = None  # last token handed to Lark

    def terminals(self) -> Iterator[_LarkToken]:
        prev_item: Item | None = None
        for item in self._items:
            if prev_item is not None and item.kind not in _NO_NL_BEFORE:
                if on_new_line(prev_item.token, item.token):
                    yield _terminal(NL, item.token)
            self.last_source = item.token
            yield _terminal(item.kind, item.token)
            prev_item = item


class _ToTree(lark.Transformer):
    """Parse-tree nodes -> `tree` objects (applied inline during the LALR parse; stateless)."""

    def start(self, blocks: list[ServerBlock]) -> tuple[ServerBlock, ...]:
        kept = [b for b in blocks if b.keys or b.directives]  # Caddy drops empty `{ }` blocks
        for index, block in enumerate(kept):
            if block.is_global_options and index > 0:
                raise CaddyfileError(
                    "server block without any key is global configuration, and if used, "
                    "it must be first",
                    block.directives[0].file,
                    block.directives[0].line,
                    style="bare",
                )
        return tuple(kept)

    def keys(self, children: list[_LarkToken]) -> tuple[Token, ...]:
        return tuple(child.source for child in children)

    def site_block(self, children: list) -> ServerBlock:
        keys, _open, body, _close = children
        return ServerBlock(keys, body)

    def global_block(self, children: list) -> ServerBlock:
        _open, body, _close = children
        return ServerBlock((), body)

    def named_route(self, children: list) -> ServerBlock:
        name, _open, body, _close = children
        return ServerBlock((name.source,), body, named_route=True)

    def braceless_site(self, children: list) -> ServerBlock:
        keys = children[0] if children and isinstance(children[0], tuple) else ()
        segments = tuple(c for c in children if isinstance(c, Directive))
        return ServerBlock(keys, segments, has_braces=False)

    open_braceless_site = braceless_site

    def bare_site(self, children: list) -> ServerBlock:
        (keys,) = children
        return ServerBlock(keys, (), has_braces=False)

    def body(self, segments: list[Directive]) -> tuple[Directive, ...]:
        return tuple(segments)

    def subblock(self, children: list) -> _Block:
        open_brace, *inner, close_brace = children
        directives = tuple(c for c in inner if isinstance(c, Directive))
        return _Block(open_brace.source, directives, close_brace.source)

    def segment(self, children: list) -> Directive:
        name, *rest = children
        args: list[Token] = []
        after: list[Token] = []
        block: _Block | None = None
        for child in rest:
            if block is None:
                if isinstance(child, _Block):
                    block = child
                else:
                    args.append(child.source)
            elif isinstance(child, _Block):
                # a second block after `}` on the same line: Caddy keeps its tokens flat
                after.append(child.open)
                for inner in child.directives:
                    after.extend(inner.tokens())
                after.append(child.close)
            else:
                after.append(child.source)
        if block is None:
            return Directive(name.source, tuple(args))
        return Directive(
            name.source,
            tuple(args),
            block.directives,
            tuple(after),
            block_open=block.open,
            block_close=block.close,
        )


@dataclass(frozen=True, slots=True)
class _Block:
    open: Token
    directives: tuple[Directive, ...]
    close: Token


@cache
def _grammar_text() -> str:
    return _grammar_path().read_text(encoding="utf-8")


class _StreamLexer(lark.lexer.Lexer):
    """Lark's custom-lexer hook: the 'text' handed to parse() is already a terminal iterator."""

    def __init__(self, lexer_conf) -> None:  # noqa: ANN001 - Lark's signature
        pass

    def lex(self, data):  # noqa: ANN001, ANN201
        return data


@cache
def _lark_parser() -> lark.Lark:
    """Built once per process (grammar analysis is the expensive part)."""
    return lark.Lark(
        _grammar_text(),
        parser="lalr",
        lexer=_StreamLexer,
        transformer=_ToTree(),
        maybe_placeholders=False,
        strict=True,  # the grammar must stay free of LALR conflicts
    )


def parse_caddyfile(text: str, filename: str = "Caddyfile", env: Mapping[str, str] | None = None) -> Caddyfile:
    """Parse Caddyfile text into a `tree.Caddyfile` (imports resolved relative to `filename`)."""
    warnings: list[str] = []
    tokens = tokenize(substitute_env(text, env), filename)
    walker = BlockWalker(tokens, Importer(env, warnings))
    stream = _TokenStream(walker.items())
    try:
        blocks = _lark_parser().parse(stream.terminals())
    except UnexpectedToken as exc:
        raise _translate(exc, stream) from None
    return Caddyfile(blocks, filename, tuple(warnings))


def _translate(exc: UnexpectedToken, stream: _TokenStream) -> CaddyfileError:
    """Lark's 'unexpected token' -> the message Caddy gives for the same input."""
    found = exc.token
    if found.type == "$END":
        # EOF inside a nested block: Caddy's EOFErr, placed at the last token
        return located_error("unexpected EOF", stream.last_source)
    source: Token = found.source
    if found.type in (RBRACE, CLOSE_BLOCK):
        return located_error("Unexpected '}' because no matching opening brace", source)
    if found.type == LBRACE:
        return located_error("Unexpected '{'", source)
    return located_error(f"Unexpected token '{source.text}'", source)
