"""`caddy fmt`: re-indent a Caddyfile the way Caddy 2.11 does.

The formatter works on characters, not tokens: it owns braces, indentation and blank
lines, and copies words, comments, quoted text, escapes and heredoc bodies verbatim.
That is why it also accepts text that would not parse. Behaviour follows
caddyconfig/caddyfile/formatter.go (and its tests), including its rough edges:
- a `{` ends up at the end of the line before it unless it follows a top-level
  `import` line; a `}` always goes on its own line;
- at most one blank line is kept between lines, and top-level blocks are separated
  by exactly one;
- indentation is one tab per level, capped at 10 levels.
"""

from __future__ import annotations

import re

from .lexer import GO_SPACE

_MARKER = re.compile(r"[A-Za-z0-9_-]+")
_SPACE_CHARS = "".join(GO_SPACE)

_CLOSED, _OPENING, _OPENED = 0, 1, 2  # heredoc states


class _Formatter:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.last = ""  # last character written
        self.beginning_of_line = True
        self.nesting = 0

    def write(self, ch: str) -> None:
        self.out.append(ch)
        self.last = ch

    def newline(self) -> None:
        self.write("\n")
        self.beginning_of_line = True

    def indent(self) -> None:
        for _ in range(self.nesting):
            self.write("\t")

    def run(self, text: str) -> str:  # noqa: C901, PLR0912, PLR0915 - one state machine
        space = True  # current/previous character was whitespace (start counts)
        open_brace = False  # the current word is, or began with, '{'
        open_brace_written = False
        open_brace_space = False  # a non-newline space preceded the '{'
        open_brace_own_line = False
        new_lines = 0
        comment = False
        quotes = ""  # '', '`', '"', '"`', '`"'
        escaped = False
        heredoc = _CLOSED
        heredoc_escaped = False
        marker: list[str] = []
        closing: list[str] = []
        token: list[str] = []
        line_first_token = ""
        prev_line_top_level_import = False

        def finish_token() -> None:
            nonlocal line_first_token
            if token:
                if not line_first_token:
                    line_first_token = "".join(token)
                token.clear()

        def finish_line() -> None:
            nonlocal line_first_token, prev_line_top_level_import
            finish_token()
            if line_first_token:
                prev_line_top_level_import = self.nesting == 0 and line_first_token == "import"
            elif not open_brace or not open_brace_own_line or open_brace_written:
                prev_line_top_level_import = False
            line_first_token = ""

        def write_open_brace() -> None:
            """Place a pending `{` at the end of its line (or alone after a top-level import)."""
            nonlocal open_brace, open_brace_written, open_brace_own_line, new_lines
            if self.nesting == 0 and self.last == "}":
                self.newline()
                self.newline()
            open_brace = False
            if open_brace_own_line and prev_line_top_level_import:
                if self.last != "\n":
                    self.newline()
                self.indent()
            elif self.beginning_of_line:
                self.indent()
            elif not open_brace_space or self.last not in GO_SPACE:
                self.write(" ")
            self.write("{")
            open_brace_written = True
            open_brace_own_line = False
            self.newline()
            new_lines = 0
            if self.nesting < 10:  # cap runaway nesting like Caddy
                self.nesting += 1

        for ch in text.strip(_SPACE_CHARS):
            if quotes == "" and heredoc == _CLOSED and not heredoc_escaped and space and self.last == "<" and ch == "<":
                self.write(ch)
                heredoc = _OPENING
                space = False
                continue

            if heredoc == _OPENING:
                if ch == "\n":
                    if marker and _MARKER.fullmatch("".join(marker)):
                        heredoc = _OPENED
                    else:
                        marker = []
                        heredoc = _CLOSED
                        self.newline()
                        continue
                    self.write(ch)
                    continue
                if ch in GO_SPACE:
                    marker = []  # `<<EOF arg`: not a heredoc after all
                    heredoc = _CLOSED
                else:
                    marker.append(ch)
                    self.write(ch)
                    continue

            if heredoc == _OPENED:
                closing.append(ch)
                if len(closing) > len(marker) + 1:
                    del closing[0]
                if ch in GO_SPACE and closing[:-1] == marker:
                    marker = []
                    closing = []
                    heredoc = _CLOSED
                else:
                    self.write(ch)
                    if ch == "\n":
                        closing.clear()
                    continue

            if self.last == "<" and space:
                space = False

            if comment:
                if ch == "\n":
                    comment = False
                    space = True
                    self.newline()
                else:
                    self.write(ch)
                continue

            if not escaped and ch == "\\":
                if space:
                    self.write(" ")
                    space = False
                self.write(ch)
                escaped = True
                continue

            if escaped:
                if ch == "<":
                    heredoc_escaped = True
                self.write(ch)
                escaped = False
                continue

            if ch == "`":
                quotes = {'"`': '"', "`": "", '"': '"`'}.get(quotes, "`")

            if quotes == '"':
                if ch == '"':
                    quotes = ""
                self.write(ch)
                continue

            if ch == '"':
                if quotes == "":
                    if space:
                        quotes = '"'
                elif quotes == '`"':
                    quotes = "`"
                elif quotes == '"`':
                    quotes = ""

            if "`" in quotes:
                if ch == "`" and space and not self.beginning_of_line:
                    self.write(" ")
                self.write(ch)
                space = False
                continue

            if ch in GO_SPACE:
                finish_token()
                space = True
                heredoc_escaped = False
                if ch == "\n":
                    finish_line()
                    new_lines += 1
                continue
            space_prior = space
            space = False

            # From here on: a regular character (not space, comment, quote or escape).
            if ch == "#":
                comment = True

            if open_brace and space_prior and not open_brace_written:
                write_open_brace()

            if ch == "{":
                finish_token()
                open_brace = True
                open_brace_space = space_prior and not self.beginning_of_line
                open_brace_own_line = new_lines > 0
                if open_brace_space and new_lines == 0:
                    self.write(" ")
                open_brace_written = False
                if quotes == "`":
                    self.write("{")
                    open_brace_written = True
                    open_brace_own_line = False
                continue

            if ch == "}" and (space_prior or not open_brace):
                finish_token()
                if quotes == "`":
                    self.write("}")
                    continue
                if self.last != "\n":
                    self.newline()
                if self.nesting > 0:
                    self.nesting -= 1
                self.indent()
                self.write("}")
                new_lines = 0
                continue

            for _ in range(min(new_lines, 2)):
                self.newline()
            new_lines = 0
            if self.beginning_of_line:
                self.indent()
            if self.nesting == 0 and self.last == "}" and self.beginning_of_line:
                self.newline()
                self.newline()

            if not self.beginning_of_line and space_prior:
                self.write(" ")

            if open_brace and not open_brace_written:
                self.write("{")
                open_brace_written = True

            if space_prior and ch == "<":
                space = True

            token.append(ch)
            self.write(ch)
            self.beginning_of_line = False

        if open_brace and not open_brace_written:
            write_open_brace()  # Caddy 2.11.7 also flushes a `{` that ends the input
        return "".join(self.out).strip(_SPACE_CHARS) + "\n"


def format_caddyfile(text: str) -> str:
    """Return `text` formatted like `caddy fmt` (always ends with one newline)."""
    return _Formatter().run(text)
