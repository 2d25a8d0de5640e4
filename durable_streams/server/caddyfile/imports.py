"""`import` and snippets, expanded at the token level (parse.go's doImport, importgraph.go).

`Importer` is the walker's `Expander`: a top-level `(name) { ... }` stores a snippet,
and a line led by `import` is replaced, in the walker's token list, by the snippet's
tokens or by the tokens of the files a path or glob names, with `{args[...]}`,
`{block}` and `{blocks.NAME}` filled in. Invariants, as in Caddy: a snippet can be
imported only after its definition; every imported token records its import chain;
snippet definitions that arrive through an import keep their placeholders for their
own later import; an import that would close a cycle of files/snippets is refused.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping

from .dispenser import Dispenser, is_close_brace, is_open_brace, located_error, retext
from .env import substitute_env
from .errors import CaddyfileError
from .lexer import GO_SPACE, on_new_line, tokenize
from .tree import Token

_GO_SPACE_CHARS = "".join(GO_SPACE)


class Importer:
    """Snippets defined so far and the import graph of one parse."""

    words = frozenset({"import"})

    def __init__(self, env: Mapping[str, str] | None, warnings: list[str]) -> None:
        self.env = env
        self.warnings = warnings
        self.snippets: dict[str, list[Token]] = {}
        self.graph = _ImportGraph()

    def define(self, d: Dispenser, key: Token) -> bool:
        """A `(name) { ... }` block: store its tokens, unexpanded, as snippet `name`."""
        if not (key.text.startswith("(") and key.text.endswith(")")):
            return False
        name = key.text[1:-1]
        if name in self.snippets:
            raise located_error(f"redeclaration of previously declared snippet {name}", d.token)
        if not is_open_brace(d.token) and d.val == "import":
            raise located_error(
                "global options block must appear before import directives; move the "
                "global options block to the top of the Caddyfile",
                d.token,
            )
        body = d.braced_block(keep_braces=False)
        self.snippets[name] = [Token(t.text, t.file, t.line, t.quote, t.import_chain, name) for t in body]
        return True

    def expand(self, d: Dispenser, nesting: int) -> None:
        """Replace `import pattern [args...] [{ block }]` by the tokens it names (doImport)."""
        if not d.next_arg():
            raise located_error("wrong argument count or unexpected line ending after 'import'", d.token)
        pattern = d.val
        if pattern == "":
            raise located_error("Import requires a non-empty filepath", d.token)
        args = [t.text for t in d.remaining_args()]
        block = d.block_tokens()
        blocks_by_name = self._named_blocks(d, block)

        if pattern in self.snippets:
            imported = self.snippets[pattern]
            nodes = [f"{imported[0].file}:{imported[0].snippet}"] if imported else []
        else:
            nodes = self._matching_files(d.token, pattern)
            imported = []
            for path in nodes:
                imported.extend(self._read_import(d.token, path))

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

    def _named_blocks(self, d: Dispenser, block: list[Token]) -> dict[str, list[Token]]:
        """`{blocks.NAME}` sources: each line (with its sub-block) inside the import block."""
        mapping: dict[str, list[Token]] = {}
        if not block:
            return mapping
        sub = Dispenser(block)
        while sub.next():
            if is_open_brace(sub.token):
                raise located_error("anonymous blocks are not supported", d.token)
            name = sub.val
            tokens = sub.remaining_args()
            tokens.extend(sub.block_tokens())
            mapping[name] = tokens
        return mapping

    def _matching_files(self, here: Token, pattern: str) -> list[str]:
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

    def _read_import(self, here: Token, path: str) -> list[Token]:
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
            out.extend(retext(token, arg) for arg in args[span[0] : span[1]])
        else:
            text = replace_args(token.text, args)
            out.append(token if text == token.text else retext(token, text))
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
