"""Caddyfile tokenizer that reproduces Caddy 2.11's lexer character for character.

A token is a run of non-whitespace, a "double-quoted" or `backtick` string (quotes are
recognised only where a token starts), or a heredoc (`<<MARKER` + newline ... MARKER).
The quirks are deliberate, because configs must mean what they mean to real Caddy:
- whitespace is Go's `unicode.IsSpace` set (not Python's `str.isspace`);
- `\\` + newline outside quotes continues the logical line; `\\<` disables a heredoc;
  any other `\\x` keeps both characters, except that a `\\` before other whitespace
  is dropped;
- inside "..." only `\\"` is unescaped; backticks have no escapes at all;
- `#` starts a comment only at the start of a token, and a `\\` anywhere in a comment
  escapes the comment's newline (Caddy's escape flag is set before the comment check);
- `\\r` is ignored outside quotes; an unterminated quote at EOF yields an unquoted token.
"""

from __future__ import annotations

import re

from .errors import CaddyfileError
from .tree import Token

# Go's unicode.IsSpace: Latin-1 spaces plus the Unicode White_Space property.
GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

_HEREDOC_MARKER = re.compile(r"[A-Za-z0-9_-]+")
# Fast path: a word that starts with an ordinary character and has no backslash is
# just a run of non-space characters (quotes, '#' and '<' only matter at a token start).
_PLAIN_WORD = re.compile("[^" + re.escape("".join(sorted(GO_SPACE))) + r"\\]+")
_NOT_PLAIN_START = frozenset('"`#<\\') | GO_SPACE
HEREDOC = "<<"  # Token.quote value of a heredoc token


class LexError(CaddyfileError):
    """A tokenizer error; Caddy prints these without a file location."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message, None, line, style="bare")


def tokenize(text: str, filename: str = "Caddyfile") -> list[Token]:
    """Split Caddyfile text into tokens (env substitution must already be done)."""
    if not text:
        # Caddy reads the first rune to skip a BOM and fails on empty input.
        raise CaddyfileError("EOF", style="bare")
    scanner = _Scanner(text[1:] if text[0] == "\ufeff" else text, filename)
    tokens = []
    while (token := scanner.next_token()) is not None:
        tokens.append(token)
    return tokens


def line_breaks(token: Token) -> int:
    """How many source lines a token spans beyond its first (Caddy's NumLineBreaks)."""
    breaks = token.text.count("\n")
    if token.quote == HEREDOC:
        # the opening line and the closing marker's line are not part of the text
        breaks += 2
    return breaks


def on_new_line(previous: Token, current: Token) -> bool:
    """Caddy's isNextOnNewLine: does `current` start a new logical line after `previous`?

    Tokens from another file or another import chain always do; otherwise the
    previous token's own line breaks (multi-line strings, heredocs) are counted.
    """
    if previous.file != current.file or previous.import_chain != current.import_chain:
        return True
    return previous.line + line_breaks(previous) < current.line


class _Scanner:
    """One pass over the text; `next_token` mirrors Caddy's lexer.next()."""

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.pos = 0
        self.filename = filename
        self.line = 1
        # newlines consumed that do not advance `line` yet (escaped newlines, heredoc bodies)
        self.skipped = 0

    def next_token(self) -> Token | None:
        text, n = self.text, len(self.text)
        # skip blanks on the current line cheaply, then try the plain-word fast path
        while self.pos < n and text[self.pos] in (" ", "\t"):
            self.pos += 1
        if self.pos < n and text[self.pos] not in _NOT_PLAIN_START:
            match = _PLAIN_WORD.match(text, self.pos)
            end = match.end()
            if end >= n or text[end] != "\\":
                self.pos = end
                return Token(match.group(), self.filename, self.line)
        val: list[str] = []
        token_line = self.line
        comment = quoted = backticked = in_heredoc = heredoc_escaped = escaped = False
        marker = ""

        def make(quote: str | None) -> Token:
            return Token("".join(val), self.filename, token_line, quote)

        while True:
            if self.pos >= n:
                if val:
                    if in_heredoc:
                        raise LexError(
                            f"incomplete heredoc <<{marker} on line #{self.line + self.skipped}, "
                            f"expected ending marker {marker}",
                            self.line + self.skipped,
                        )
                    return make(None)
                return None
            ch = text[self.pos]
            self.pos += 1

            # a token that starts with "<<" may be a heredoc opening
            if (
                not quoted
                and not backticked
                and not in_heredoc
                and not heredoc_escaped
                and len(val) > 1
                and val[0] == "<"
                and val[1] == "<"
            ):
                if ch == " ":
                    return make(None)  # `<<EOF arg`: a plain word
                if ch == "\r":
                    continue
                if ch == "\n":
                    if len(val) == 2:
                        raise LexError(
                            f"missing opening heredoc marker on line #{self.line}; must contain "
                            "only alphanumeric characters, dashes and underscores; got empty string",
                            self.line,
                        )
                    if val[2] == "<":
                        raise LexError(
                            f"too many '<' for heredoc on line #{self.line}; only use two, "
                            "for example <<END",
                            self.line,
                        )
                    marker = "".join(val[2:])
                    if not _HEREDOC_MARKER.fullmatch(marker):
                        raise LexError(
                            f"heredoc marker on line #{self.line} must contain only alphanumeric "
                            f"characters, dashes and underscores; got '{marker}'",
                            self.line,
                        )
                    in_heredoc = True
                    self.skipped += 1
                    val = []
                    continue
                val.append(ch)
                continue

            if in_heredoc:
                val.append(ch)
                if ch == "\n":
                    self.skipped += 1
                # the body ends as soon as it ends with the marker, even mid-line
                if len(val) >= len(marker) and "".join(val[-len(marker) :]) == marker:
                    body = self._finish_heredoc("".join(val), marker)
                    self.line += self.skipped
                    self.skipped = 0
                    return Token(body, self.filename, token_line, HEREDOC)
                continue

            if not escaped and not backticked and ch == "\\":
                escaped = True
                continue

            if quoted or backticked:
                if quoted and escaped:
                    # inside "..." only \" is an escape; keep the backslash otherwise
                    if ch != '"':
                        val.append("\\")
                    escaped = False
                elif (quoted and ch == '"') or (backticked and ch == "`"):
                    return make(ch)
                if ch == "\n":
                    self.line += 1 + self.skipped
                    self.skipped = 0
                val.append(ch)
                continue

            if ch in GO_SPACE:
                if ch == "\r":
                    continue
                if ch == "\n":
                    if escaped:
                        self.skipped += 1
                        escaped = False
                    else:
                        self.line += 1 + self.skipped
                        self.skipped = 0
                    comment = False
                if val:
                    return make(None)
                continue

            if ch == "#" and not val:
                comment = True
            if comment:
                continue

            if not val:
                token_line = self.line
                if ch == '"':
                    quoted = True
                    continue
                if ch == "`":
                    backticked = True
                    continue

            if escaped:
                if ch == "<":
                    heredoc_escaped = True  # `\<<` is a literal "<<"
                else:
                    val.append("\\")
                escaped = False

            val.append(ch)

    def _finish_heredoc(self, raw: str, marker: str) -> str:
        """Strip the closing marker's indentation from every body line (Caddy's rules)."""
        last_newline = raw.rfind("\n")
        lines = raw[: last_newline + 1].split("\n")
        padding = raw[last_newline + 1 : len(raw) - len(marker)]
        out: list[str] = []
        for number, line_text in enumerate(lines[:-1]):
            if line_text in ("", "\r"):
                out.append("\n")
                continue
            if not line_text.startswith(padding):
                shown = line_text.rstrip("\r\n")
                raise LexError(
                    f"mismatched leading whitespace in heredoc <<{marker} on line "
                    f"#{self.line + number + 1} [{shown}], expected whitespace [{padding}] "
                    "to match the closing marker",
                    self.line + number + 1,
                )
            out.append((line_text[len(padding) :] + "\n").replace("\r", ""))
        body = "".join(out)
        return body[:-1] if body.endswith("\n") else body
