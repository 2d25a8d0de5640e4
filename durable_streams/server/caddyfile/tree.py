"""The syntax tree of a Caddyfile: what the parser produces and the config adapter reads.

This layer knows nothing about directives: a `Directive` is any line of tokens,
optionally followed by a brace block of further lines (Caddy calls these segments).
Snippets and imports are already expanded when a tree is built; env variables
(`{$VAR}`) are already substituted. Runtime placeholders (`{path}`) are left as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    file: str
    line: int
    # None for a bare word, '"' or '`' for a quoted token, "<<" for a heredoc.
    quote: str | None = None
    # Files/snippets this token was imported through, outermost first (Caddy's import chain).
    import_chain: tuple[str, ...] = ()
    # Name of the snippet this token was defined in ("" if none); Caddy uses it to
    # tell import cycles through snippets apart. Not part of equality.
    snippet: str = field(default="", compare=False)

    @property
    def quoted(self) -> bool:
        return self.quote is not None


@dataclass(frozen=True, slots=True)
class Directive:
    """One logical line: a name, its arguments, and an optional `{ ... }` block.

    `block is None` means the line had no braces; `()` means an empty block.
    `after` holds tokens that followed the block's closing brace on the same line
    (Caddy glues them onto the segment; rare, but kept so no token is lost). A further
    `{ ... }` there is kept flat in `after`, braces included, as Caddy keeps it.
    """

    name: Token
    args: tuple[Token, ...] = ()
    block: tuple["Directive", ...] | None = None
    after: tuple[Token, ...] = ()
    # The block's own braces (None without a block); kept for exact token positions.
    block_open: Token | None = field(default=None, compare=False)
    block_close: Token | None = field(default=None, compare=False)

    def tokens(self) -> tuple[Token, ...]:
        """All tokens of this line as Caddy's segment holds them, braces included."""
        out = [self.name, *self.args]
        if self.block is not None and self.block_open is not None and self.block_close is not None:
            out.append(self.block_open)
            for inner in self.block:
                out.extend(inner.tokens())
            out.append(self.block_close)
        out.extend(self.after)
        return tuple(out)

    @property
    def line(self) -> int:
        return self.name.line

    @property
    def file(self) -> str:
        return self.name.file


@dataclass(frozen=True, slots=True)
class ServerBlock:
    """A top-level block: the global options block (no keys), a site, or a named route.

    Snippet definitions never appear here: they were consumed by import expansion.
    """

    keys: tuple[Token, ...]
    directives: tuple[Directive, ...]
    named_route: bool = False  # `&(name) { ... }`: keys[0].text is "&(name)"
    # False for a braceless single site (`localhost\nrespond hi`); Caddy uses it to
    # hint "Did you mean to define a second site?" on an unknown directive.
    has_braces: bool = True

    @property
    def is_global_options(self) -> bool:
        return not self.keys and not self.named_route


@dataclass(frozen=True, slots=True)
class Caddyfile:
    blocks: tuple[ServerBlock, ...]
    filename: str = "Caddyfile"
    # Non-fatal findings of the syntax layers (e.g. "glob matched no files"), Caddy-worded.
    warnings: tuple[str, ...] = field(default=())
