"""Block heads, snippets, named routes and `import`, resolved at the token level.

Caddy expands `import` while it reads the file, so what an import means depends on
where it stands (a site key line, a directive line, inside a snippet definition) and
on which snippets were defined *before* it. `BlockWalker` walks the lexed tokens the
way Caddy's parser does, splices imported tokens in place, collects snippet
definitions, and hands the Lark grammar a stream of classified tokens:

    FIRST_KEY KEY*        site addresses of one block (commas already removed)
    NAMED_ROUTE           the `&(name)` key of a named route
    OPEN_BLOCK/CLOSE_BLOCK the braces of a top-level block (site, global options, route)
    LBRACE/RBRACE         braces inside a block
    WORD                  every other token

Everything inside blocks (segments, nesting, line rules) is left to the grammar.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from .env import substitute_env
from .errors import CaddyfileError
from .lexer import GO_SPACE, on_new_line, tokenize
from .tree import Token

_GO_SPACE_CHARS = "".join(GO_SPACE)

FIRST_KEY, KEY, NAMED_ROUTE = "FIRST_KEY", "KEY", "NAMED_ROUTE"
OPEN_BLOCK, CLOSE_BLOCK, LBRACE, RBRACE, WORD = "OPEN_BLOCK", "CLOSE_BLOCK", "LBRACE", "RBRACE", "WORD"


@dataclass(frozen=True, slots=True)
class Item:
    kind: str
    token: Token


def is_open_brace(token: Token | None) -> bool:
    return token is not None and token.text == "{" and token.quote is None


def is_close_brace(token: Token | None) -> bool:
    return token is not None and token.text == "}" and token.quote is None


def located_error(message: str, token: Token | None) -> CaddyfileError:
    """An error placed like Caddy's Dispenser.Err: `msg, at FILE:LINE [import chain [...]]`."""
    if token is None:
        return CaddyfileError(message, "", 0, style="wrap")
    return CaddyfileError(message, token.file, token.line, style="wrap", import_chain=token.import_chain)


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


class BlockWalker:
    """Walk top-level blocks like Caddy's parser, expanding imports; yields `Item`s."""

    def __init__(
        self,
        tokens: list[Token],
        env: Mapping[str, str] | None,
        warnings: list[str],
    ) -> None:
        self.d = Dispenser(tokens)
        self.env = env
        self.warnings = warnings
        self.snippets: dict[str, list[Token]] = {}
        self.graph = _ImportGraph()

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
            body = self._raw_block(keys, keep_braces=True)
            yield Item(NAMED_ROUTE, keys[0])
            yield Item(OPEN_BLOCK, body[0])
            for token in body[1:-1]:
                yield Item(_inner_kind(token), token)
            yield Item(CLOSE_BLOCK, body[-1])
            return
        if len(keys) == 1 and keys[0].text.startswith("(") and keys[0].text.endswith(")"):
            name = keys[0].text[1:-1]
            if name in self.snippets:
                raise located_error(f"redeclaration of previously declared snippet {name}", self.d.token)
            body = self._raw_block(keys, keep_braces=False)
            self.snippets[name] = [
                Token(t.text, t.file, t.line, t.quote, t.import_chain, name) for t in body
            ]
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
            if value == "import" and d.is_new_line():
                self._import(0)
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
                    keys.append(_retext(token, value))
            has_next = d.next()
            if expecting_another and not has_next:
                raise located_error("unexpected EOF", d.token)
            if not has_next:
                return keys, True
            if not expecting_another and d.is_new_line():
                return keys, False

    def _raw_block(self, keys: list[Token], keep_braces: bool) -> list[Token]:
        """A snippet or named route body, stored unexpanded (Caddy's blockTokens)."""
        d = self.d
        if not is_open_brace(d.token):
            if d.val == "import" and all(k.text.startswith("(") and k.text.endswith(")") for k in keys):
                raise located_error(
                    "global options block must appear before import directives; move the "
                    "global options block to the top of the Caddyfile",
                    d.token,
                )
            raise syntax_error(d.token, "{")
        depth = 1
        body = [d.token] if keep_braces else []
        while d.next():
            token = d.token
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
            raise syntax_error(d.token, "}")
        return body

    def _body(self, braced: bool) -> Iterator[Item]:
        """The lines of a site or global block, up to its closing brace (or EOF).

        Applies Caddy's per-token checks where Caddy applies them: on the token list
        as it stands, before later imports are spliced in (so errors come in Caddy's
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
                if token.text == "import":
                    self._import(1)
                    d.cursor -= 1  # the loop's next() lands on the first imported token
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
            elif token.text == "import" and d.is_new_line():
                self._import(1)
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

    # -- import --------------------------------------------------------------------------

    def _import(self, nesting: int) -> None:
        """Replace `import pattern [args...] [{ block }]` by the tokens it names (doImport)."""
        d = self.d
        if not d.next_arg():
            raise located_error("wrong argument count or unexpected line ending after 'import'", d.token)
        pattern = d.val
        if pattern == "":
            raise located_error("Import requires a non-empty filepath", d.token)
        args = [t.text for t in d.remaining_args()]
        block = d.block_tokens()
        blocks_by_name = self._named_blocks(block)

        if pattern in self.snippets:
            imported = self.snippets[pattern]
            nodes = [f"{imported[0].file}:{imported[0].snippet}"] if imported else []
        else:
            nodes = self._matching_files(pattern)
            imported = []
            for path in nodes:
                imported.extend(self._read_import(path))

        here = d.token
        node = here.file + (f":{here.snippet}" if here.snippet else "")
        self.graph.add_node(node)
        for n in nodes:
            self.graph.add_node(n)
        try:
            for n in nodes:
                self.graph.add_edge(node, n)
        except CaddyfileError:
            for n in nodes:
                self.graph.nodes.discard(n)
            raise

        spliced = _substitute(imported, args, block, blocks_by_name, nesting, here)
        # Splice exactly where Caddy does (its arithmetic leaves `import x` of a block
        # import in the list, before the cursor, where nothing reads it again).
        tokens = d.tokens
        before = tokens[: d.cursor - 1 - len(args) - len(block)]
        after = tokens[d.cursor + 1 :]
        d.tokens = before + spliced + after
        d.cursor -= len(args) + len(block) + 1

    def _named_blocks(self, block: list[Token]) -> dict[str, list[Token]]:
        """`{blocks.NAME}` sources: each line (with its sub-block) inside the import block."""
        mapping: dict[str, list[Token]] = {}
        if not block:
            return mapping
        sub = Dispenser(block)
        while sub.next():
            if is_open_brace(sub.token):
                raise located_error("anonymous blocks are not supported", self.d.token)
            name = sub.val
            tokens = sub.remaining_args()
            tokens.extend(sub.block_tokens())
            mapping[name] = tokens
        return mapping

    def _matching_files(self, pattern: str) -> list[str]:
        here = self.d.token
        current_file = os.path.abspath(here.file)
        if os.path.isabs(pattern):
            glob_pattern = pattern
        else:
            glob_pattern = os.path.normpath(os.path.join(os.path.dirname(current_file), pattern))
        if (
            glob_pattern.count("*") > 1
            or glob_pattern.count("?") > 1
            or ("[" in glob_pattern and "]" in glob_pattern)
        ):
            raise located_error(
                f"Glob pattern may only contain one wildcard (*), but has others: {glob_pattern}", here
            )
        if "[" in glob_pattern:
            # Go's filepath.Glob rejects an unterminated character class
            raise located_error(f"Failed to use import pattern {pattern}: syntax error in pattern", here)
        matches = sorted(glob.glob(glob_pattern, include_hidden=True))
        if not matches:
            if any(c in glob_pattern for c in "*?[]"):
                self.warnings.append(f"No files matching import glob pattern: {pattern}")
                return []
            raise located_error(f"File to import not found: {pattern}", here)
        if os.path.basename(glob_pattern).startswith("*"):
            # `dir/*` skips dotfiles (`dir/.*` still reads them)
            matches = [m for m in matches if not os.path.basename(m).startswith(".")]
        return matches

    def _read_import(self, path: str) -> list[Token]:
        here = self.d.token
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except IsADirectoryError:
            raise located_error(f"Could not import {path}: is a directory", here) from None
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise located_error(f"Could not import {path}: open {path}: {reason}", here) from None
        text = raw.decode("utf-8", errors="replace")
        if not _strip_go_space(text):
            self.warnings.append(f"Import file is empty: {path}")
            return []
        try:
            return tokenize(substitute_env(text, self.env), os.path.abspath(path))
        except CaddyfileError as exc:
            raise located_error(f"Could not read tokens while importing {path}: {exc.message}", here) from None


def _retext(token: Token, text: str) -> Token:
    return Token(text, token.file, token.line, token.quote, token.import_chain, token.snippet)


def _is_brace_word(token: Token) -> bool:
    """`{` and `{}` are checked before Caddy looks at line breaks."""
    return token.quote is None and token.text in ("{", "{}")


def _inner_kind(token: Token) -> str:
    if is_open_brace(token):
        return LBRACE
    if is_close_brace(token):
        return RBRACE
    return WORD


def _strip_go_space(text: str) -> str:
    return text.strip(_GO_SPACE_CHARS)


def _substitute(
    imported: list[Token],
    args: list[str],
    block: list[Token],
    blocks_by_name: dict[str, list[Token]],
    nesting: int,
    here: Token,
) -> list[Token]:
    """Tag imported tokens with the import chain and fill in `{args[...]}`/`{block}`.

    Snippet definitions that arrive through a top-level import are copied untouched:
    their placeholders belong to the later import of that snippet.
    """
    out: list[Token] = []
    in_snippet = maybe_snippet_name = False
    index = 0
    for i, token in enumerate(imported):
        via = f"(import {token.snippet})" if token.snippet else "(import)"
        token = Token(
            token.text,
            token.file,
            token.line,
            token.quote,
            token.import_chain + (f"{here.file}:{here.line} {via}",),
            token.snippet,
        )
        if not in_snippet and nesting == 0:
            if i == 0 or not out or on_new_line(out[-1], token):
                index = 0
            else:
                index += 1
            text = token.text
            if index == 0 and len(text) >= 3 and text.startswith("(") and text.endswith(")"):
                maybe_snippet_name = True
        if is_open_brace(token):
            nesting += 1
            if index == 1 and maybe_snippet_name and nesting == 1:
                in_snippet = True
                maybe_snippet_name = False
        elif is_close_brace(token):
            nesting -= 1
            if nesting == 0 and in_snippet:
                in_snippet = False

        if token.text == "{block}":
            out.extend([token] if in_snippet else block)
            continue
        if token.text.startswith("{blocks.") and token.text.endswith("}"):
            name = token.text[len("{blocks.") : -1]
            out.extend([token] if in_snippet else blocks_by_name.get(name, []))
            continue
        if in_snippet:
            out.append(token)
            continue
        span = variadic_range(token.text, len(args))
        if span is not None:
            out.extend(_retext(token, arg) for arg in args[span[0] : span[1]])
        else:
            text = replace_args(token.text, args)
            out.append(token if text == token.text else _retext(token, text))
    return out


_GO_INT = re.compile(r"[+-]?[0-9]+")


def _atoi(text: str) -> int | None:
    return int(text) if _GO_INT.fullmatch(text) else None


def variadic_range(text: str, arg_count: int) -> tuple[int, int] | None:
    """`{args[a:b]}` as a whole token -> (start, end) of the args to splice, else None."""
    if not (text.startswith("{args[") and text.endswith("]}")):
        return None
    spec = text[len("{args[") : -len("]}")]
    if not spec:
        return None
    start_text, colon, end_text = spec.partition(":")
    if not colon or "}" in start_text or "{" in end_text:
        return None
    start = _atoi(start_text) if start_text else 0
    end = _atoi(end_text) if end_text else arg_count
    if start is None or end is None:
        return None
    if start < 0 or start > end or end > arg_count:
        return None
    return start, end


_DEPRECATED_ARG = re.compile(r"args\.(.+)")
_INDEXED_ARG = re.compile(r"args\[(.+)]")


def _arg_value(key: str, args: list[str]) -> str | None:
    match = _DEPRECATED_ARG.search(key)
    if match is None:
        match = _INDEXED_ARG.search(key)
        if match is not None and ":" in match.group(1):
            return None  # a variadic placeholder must be a token on its own
    if match is None or match.group(0) != key:
        return None
    index = _atoi(match.group(1))
    if index is None or index < 0 or index >= len(args):
        return None
    return args[index]


def replace_args(text: str, args: list[str]) -> str:
    """Fill `{args[N]}` (and deprecated `{args.N}`) inside a token, like Caddy's
    ReplaceKnown: unknown placeholders stay, `\\{` / `\\}` lose their backslash."""
    if "{" not in text and "}" not in text:
        return text
    out: list[str] = []
    written = 0
    unclosed = 0
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        if i > 0 and text[i - 1] == "\\" and ch in "{}":
            out.append(text[written : i - 1])
            written = i
            i += 1
            continue
        if ch != "{":
            i += 1
            continue
        if unclosed > 100:
            return ""  # Caddy gives up ("too many unclosed placeholders") and yields ""
        end = text.find("}", i)
        if end < 0:
            unclosed += 1
            i += 1
            continue
        abandoned = False
        while 0 < end < n - 1 and text[end - 1] == "\\":
            further = text.find("}", end + 1)
            if further < 0:
                unclosed += 1
                abandoned = True
                break
            end = further
        if abandoned:
            i += 1
            continue
        out.append(text[written:i])
        value = _arg_value(text[i + 1 : end], args)
        if value is None:
            written = i
            i += 1
            continue
        out.append(value)
        i = end + 1
        written = i
    out.append(text[written:])
    return "".join(out)


class _ImportGraph:
    """Files and snippets as nodes, imports as edges; refuses an edge that closes a cycle."""

    def __init__(self) -> None:
        self.nodes: set[str] = set()
        self.edges: dict[str, list[str]] = {}

    def add_node(self, name: str) -> None:
        self.nodes.add(name)

    def add_edge(self, source: str, target: str) -> None:
        if source not in self.nodes or target not in self.nodes:
            raise CaddyfileError("one of the nodes does not exist", style="bare")
        if source in self._reachable_from(target):
            raise CaddyfileError(f"a cycle of imports exists between {source} and {target}", style="bare")
        targets = self.edges.setdefault(source, [])
        if target not in targets:
            targets.append(target)

    def _reachable_from(self, start: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.edges.get(start, ()))
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(self.edges.get(node, ()))
        return seen
