"""Block structure and parser errors, from Caddy's parse_test.go tables and real-Caddy checks."""

from __future__ import annotations

import pytest

from durable_streams.server.caddyfile import CaddyfileError, parse
from durable_streams.server.caddyfile.tree import Caddyfile


def shape(tree: Caddyfile) -> list[tuple[list[str], list[int]]]:
    """Each block as (keys, number of Caddy segment tokens per directive line)."""
    return [([k.text for k in b.keys], [len(d.tokens()) for d in b.directives]) for b in tree.blocks]


STRUCTURE_CASES = [
    ("localhost", [(["localhost"], [])]),
    ("localhost\n  dir1", [(["localhost"], [1])]),
    ("localhost:1234\n  dir1 foo bar", [(["localhost:1234"], [3])]),
    ("localhost {\n    dir1\n  }", [(["localhost"], [1])]),
    ("localhost:1234 {\n  dir1 foo bar\n  dir2\n}", [(["localhost:1234"], [3, 1])]),
    ("http://localhost https://localhost\n  dir1 foo bar", [(["http://localhost", "https://localhost"], [3])]),
    ("http://localhost https://localhost {\n  dir1 foo bar\n}", [(["http://localhost", "https://localhost"], [3])]),
    ("http://localhost, https://localhost {\n  dir1 foo bar\n}", [(["http://localhost", "https://localhost"], [3])]),
    ("host1:80, http://host2.com\n  dir1 foo bar\n  dir2 baz", [(["host1:80", "http://host2.com"], [3, 2])]),
    (
        "http://host1.com,\n  http://host2.com,\n  https://host3.com",
        [(["http://host1.com", "http://host2.com", "https://host3.com"], [])],
    ),
    (
        "http://host1.com:1234, https://host2.com\n  dir1 foo {\n    bar baz\n  }\n  dir2",
        [(["http://host1.com:1234", "https://host2.com"], [6, 1])],
    ),
    ("127.0.0.1\n  dir1 {\n    bar baz\n  }\n  dir2 {\n    foo bar\n  }", [(["127.0.0.1"], [5, 5])]),
    ("localhost\n  dir1 {\n  }", [(["localhost"], [3])]),
    (
        "localhost\n  dir1 {\n    nested {\n      foo\n    }\n  }\n  dir2 foo bar",
        [(["localhost"], [7, 3])],
    ),
    ('""', []),
    ("# only a comment\n", []),
    ('localhost\n  dir1 "{" a b "}"', [(["localhost"], [5])]),
    ('localhost\n  dir1 "{}"', [(["localhost"], [2])]),
    ('localhost {\n dir1 "{" `}`\n dir2 "}"\n dir3 "{"\n}', [(["localhost"], [3, 2, 2])]),
    ('localhost {\n  dir1 "{" {\n    a b\n  }\n  dir2 foo\n}', [(["localhost"], [6, 2])]),
    # TestParseAll
    ("localhost:1234 {\n}\nlocalhost:2015 {\n}", [(["localhost:1234"], []), (["localhost:2015"], [])]),
    ("localhost:1234, http://host2", [(["localhost:1234", "http://host2"], [])]),
    ("foo.example.com   ,   example.com", [(["foo.example.com", "example.com"], [])]),
    (
        "http://host1.com, http://host2.com {\n}\nhttps://host3.com, https://host4.com {\n}",
        [(["http://host1.com", "http://host2.com"], []), (["https://host3.com", "https://host4.com"], [])],
    ),
    # real-Caddy behaviour (checked with caddy 2.11.7 adapt)
    (":80 { respond hi\n}", [([":80"], [2])]),  # the site's `{` may share a line
    (":80 { }", [([":80"], [])]),
    ("{\n}\n:80 {\n}", [([":80"], [])]),  # an empty keyless block is dropped, as Caddy does
    (":80\n{\n\trespond hi\n}", [([":80"], [2])]),  # the site brace may sit on the next line
    (":80 {\n}\n:81 {\n} :82 {\n}", [([":80"], []), ([":81"], []), ([":82"], [])]),
    ('":80" {\n}', [([":80"], [])]),
    (":80 {\n\thandle {\n\t\trespond x\n\t} respond y\n}", [([":80"], [7])]),  # glued after `}`
    (":80 {\n\thandle {\n\t\trespond hi }\n}", [([":80"], [5])]),  # a nested `}` may end a line
    (":80 {\n\thandle {\n\t\trespond x\n\t} {\n\t}\n}", [([":80"], [7])]),  # second block kept flat
    (":80 {\n\thandle {\n\t}", [([":80"], [3])]),  # unclosed, but the last token is `}`
    (":80 {\n}\n}", [([":80"], []), (["}"], [])]),  # a stray `}` becomes a site key
    ("localhost\nrespond hi\n}\n:81 {\n}", [(["localhost"], [2]), ([":81"], [])]),
    ("{\n\tadmin off\n}\n:80 {\n}", [([], [2]), ([":80"], [])]),
    ("(snip) {\n\trespond x\n}\n{\n\tdebug\n}", [([], [1])]),  # snippets may precede global options
    (":80 {\n\trespond <<EOF\n\tbody\n\tEOF 200\n}", [([":80"], [3])]),
    (':80 {\n\trespond "a\nb" 200\n\tnext\n}', [([":80"], [3, 1])]),
    # found by fuzzing against real Caddy
    ('""\nrespond hi', [([], [2])]),  # all keys empty: a keyless braceless block (Caddy: options)
    ("}\n}\n", [(["}"], [])]),  # a `}` key, then a `}` line ends the braceless body
    (":80 {\n\t{\n\t}\n}", [([":80"], [1]), (["}"], [])]),  # `{` first in a body is a name
]


@pytest.mark.parametrize(("text", "expected"), STRUCTURE_CASES, ids=range(len(STRUCTURE_CASES)))
def test_structure(text: str, expected: list[tuple[list[str], list[int]]]) -> None:
    assert shape(parse(text)) == expected


def test_tree_objects() -> None:
    tree = parse("{\n\tadmin off\n}\n\n:4437 {\n\troute /v1/* {\n\t\tdurable_streams {\n\t\t\tdata_dir ./d\n\t\t}\n\t}\n}\n")
    glob, site = tree.blocks
    assert glob.is_global_options and not site.is_global_options
    assert site.has_braces
    route = site.directives[0]
    assert (route.name.text, route.line, [a.text for a in route.args]) == ("route", 6, ["/v1/*"])
    ds = route.block[0]
    assert ds.name.text == "durable_streams" and ds.args == ()
    assert [(d.name.text, d.args[0].text, d.line) for d in ds.block] == [("data_dir", "./d", 8)]
    assert ds.block_open.line == 7 and ds.block_close.line == 9
    assert route.block[0].block[0].block is None


def test_braceless_site_and_named_route() -> None:
    tree = parse("localhost\nrespond hi")
    assert not tree.blocks[0].has_braces
    tree = parse("&(r) {\n\trespond x\n}\n:80 {\n\tinvoke r\n}")
    route, site = tree.blocks
    assert route.named_route and route.keys[0].text == "&(r)" and route.directives[0].name.text == "respond"
    assert not site.named_route


def test_quoted_and_heredoc_tokens_keep_their_kind() -> None:
    tree = parse(':80 {\n\trespond "{" `x` <<EOF\n\tbody\n\tEOF\n}')
    args = tree.blocks[0].directives[0].args
    assert [(a.text, a.quote) for a in args] == [("{", '"'), ("x", "`"), ("body", "<<")]


ERROR_CASES = [
    # stray / misplaced braces
    (":80 {\n\trespond hi }", "Unexpected '}' because no matching opening brace, at Caddyfile:2"),
    ("localhost\n  dir1 {\n  } }", "Unexpected '}' because no matching opening brace, at Caddyfile:3"),
    (":80 {\n\thandle {\n\t} }\n}", "Unexpected '}' because no matching opening brace, at Caddyfile:3"),
    (":80 {\n\thandle { respond hi }\n}", "Unexpected next token after '{' on same line, at Caddyfile:2"),
    ("localhost\n  dir1 { a b }", "Unexpected next token after '{' on same line, at Caddyfile:2"),
    (":80 {\n\thandle { }\n}", "Unexpected next token after '{' on same line, at Caddyfile:2"),
    (":80 {\n\trespond\n\t{ x\n\t}\n}", "Unexpected next token after '{' on same line, at Caddyfile:3"),
    (
        "localhost\ndir1\n{\n\ta b\n}",
        "Unexpected '{' on a new line; did you mean to place the '{' on the previous line?, at Caddyfile:3",
    ),
    (
        ":80 {\n\thandle {\n\t\trespond\n\t\t{\n\t\t}\n\t}\n}",
        "Unexpected '{' on a new line; did you mean to place the '{' on the previous line?, at Caddyfile:4",
    ),
    ("localhost\n  dir1 {}", "Unexpected '{}' at end of line, at Caddyfile:2"),
    (":80 {\n\trespond {}\n}", "Unexpected '{}' at end of line, at Caddyfile:2"),
    # unclosed blocks
    ("localhost\n  dir1 {\n    foo", "unexpected EOF, at Caddyfile:3"),
    (":80 {\n\thandle {", "unexpected EOF, at Caddyfile:2"),
    (":80 {\n\trespond hi", "syntax error: unexpected token 'hi', expecting '}', at Caddyfile:2 import chain: ['']"),
    (":80 {", "syntax error: unexpected token '{', expecting '}', at Caddyfile:1 import chain: ['']"),
    (
        ":80 {\n\trespond hi\n}\n:81 {",
        "syntax error: unexpected token '{', expecting '}', at Caddyfile:4 import chain: ['']",
    ),
    ("(snip)\nrespond hi", "syntax error: unexpected token 'respond', expecting '{', at Caddyfile:2 import chain: ['']"),
    ("(s) {\n\trespond x", "syntax error: unexpected token 'x', expecting '}', at Caddyfile:2 import chain: ['']"),
    ("&(r) {\n\trespond x", "syntax error: unexpected token 'x', expecting '}', at Caddyfile:2 import chain: ['']"),
    # site keys
    ("localhost{\n    dir1\n  }", "Site addresses cannot end with a curly brace: 'localhost{' - put a space "
     "between the token and the brace, at Caddyfile:1"),
    ("a,b {\n}", "Site addresses cannot contain a comma ',': 'a,b' - put a space after the comma to "
     "separate site addresses, at Caddyfile:1"),
    ("http://localhost, {\n}", "Expected another address but had '{' - check for extra comma, at Caddyfile:1"),
    ("localhost:1234, http://host2,", "unexpected EOF, at Caddyfile:1"),
    ("\n\n@rejected path /foo\n:80 {\n}", "request matchers may not be defined globally, they must be in a "
     "site block; found @rejected, at Caddyfile:3"),
    # snippets and global options
    ("(a) {\n}\n(a) {\n}", "redeclaration of previously declared snippet a, at Caddyfile:3"),
    ("{\n\tdebug\n}\n:80 {\n}\n{\n\tdebug\n}", "server block without any key is global configuration, and if "
     "used, it must be first"),
    (":80 {\n}\n{\n\tdebug\n}", "server block without any key is global configuration, and if used, it must be first"),
    # lexer errors surface unchanged (Caddy prints them without a location)
    (":80 {\n\trespond <<EOF\n\thi", "incomplete heredoc <<EOF on line #3, expected ending marker EOF"),
    ("", "EOF"),
    # Caddy checks the next *source* token, before a later import is expanded
    ("route import\n\"{\"\n\t:81\n:81 {}\nimport nope.conf", "Unexpected '{}' at end of line, at Caddyfile:4"),
    ('"x <<EOF "q" &(r)\n\t(s) { {}\n\t', "Unexpected next token after '{' on same line, at Caddyfile:2"),
    ("<<EOF\nEOF\n#c\n@m } `b`\n", "Unexpected '}' because no matching opening brace, at Caddyfile:4"),
]


@pytest.mark.parametrize(("text", "message"), ERROR_CASES, ids=range(len(ERROR_CASES)))
def test_errors(text: str, message: str) -> None:
    with pytest.raises(CaddyfileError) as info:
        parse(text)
    assert str(info.value) == message


def test_error_carries_location_fields() -> None:
    with pytest.raises(CaddyfileError) as info:
        parse(":80 {\n\trespond {}\n}", filename="conf/site.caddy")
    err = info.value
    assert (err.file, err.line, err.message) == ("conf/site.caddy", 2, "Unexpected '{}' at end of line")


def test_grammar_comes_from_the_repo_and_is_built_once() -> None:
    from pathlib import Path

    from durable_streams.server.caddyfile import parser

    assert parser._grammar_path() == Path(__file__).resolve().parents[2] / "grammar" / "caddyfile.lark"
    assert parser._lark_parser() is parser._lark_parser()
