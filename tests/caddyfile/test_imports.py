"""Imports, snippets, arguments and import blocks (Caddy's parse_test.go/importargs cases)."""

from __future__ import annotations

from pathlib import Path

import pytest

from durable_streams.server.caddyfile import CaddyfileError, parse
from durable_streams.server.caddyfile.imports import replace_args, variadic_range

from .test_parser import shape

FIX = Path(__file__).resolve().parent / "fixtures"
MAIN = str(FIX / "Caddyfile")  # imports resolve relative to this (non-existent) file's directory


def parse_here(text: str):  # noqa: ANN201
    return parse(text, MAIN)


def error_of(text: str, filename: str = MAIN) -> str:
    with pytest.raises(CaddyfileError) as info:
        parse(text, filename)
    return str(info.value)


IMPORT_STRUCTURE = [
    ("localhost\n  dir1 arg1\n  import lines.conf", [(["localhost"], [2, 3, 1])]),
    ("import site.conf", [(["host1"], [1, 2])]),
    ("import empty.conf", []),
    ("import blank.conf", []),
    ("localhost\n  dir1 arg1\n  import glob/*", [(["localhost"], [2, 3, 1])]),  # skips dotfiles
    ("import glob/.*", [(["host1"], [1, 2])]),  # ...unless asked for
    ("import args0.conf a", [(["a"], [])]),
    ("import args1.conf a b", [(["a", "b"], [])]),
    ("import args*.conf a b", [(["a"], [2])]),
    (
        "import multi/*.conf",
        [(["multi0.host0"], [2]), (["multi0.host1"], []), (["multi1.host0"], [1, 2]), (["multi2.host0"], [2])],
    ),
    ("import nomatch/*", []),
    ("localhost\ndir1\nproxy {\n\timport props.conf\n\ttransparent\n}", [(["localhost"], [1, 8])]),
    (":80 { import lines.conf\n}", [([":80"], [3, 1])]),  # an import may follow the site's `{`
    # `import` that is not the first token of a line is an ordinary argument
    (":80 {\n\tbasic_auth / import password\n}", [([":80"], [4])]),
]


@pytest.mark.parametrize(("text", "expected"), IMPORT_STRUCTURE, ids=range(len(IMPORT_STRUCTURE)))
def test_import_structure(text: str, expected) -> None:  # noqa: ANN001
    assert shape(parse_here(text)) == expected


def test_warnings_for_empty_and_unmatched_imports() -> None:
    assert parse_here("import empty.conf").warnings == (f"Import file is empty: {FIX}/empty.conf",)
    assert parse_here("import nomatch/*").warnings == ("No files matching import glob pattern: nomatch/*",)


IMPORT_ERRORS = [
    ("import not_found.conf", f"File to import not found: not_found.conf, at {MAIN}:1"),
    (":80 {\n\timport\n}", f"wrong argument count or unexpected line ending after 'import', at {MAIN}:2"),
    (':80 {\n\timport ""\n}', f"Import requires a non-empty filepath, at {MAIN}:2"),
    ('import }{$"', f'File to import not found: }}{{$", at {MAIN}:1'),
    ("import /*/*.txt", f"Glob pattern may only contain one wildcard (*), but has others: /*/*.txt, at {MAIN}:1"),
    ("import /???/?*?o", f"Glob pattern may only contain one wildcard (*), but has others: /???/?*?o, at {MAIN}:1"),
    ("import /??", f"Glob pattern may only contain one wildcard (*), but has others: /??, at {MAIN}:1"),
    ("import /[a-z]", f"Glob pattern may only contain one wildcard (*), but has others: /[a-z], at {MAIN}:1"),
    ("import [a", f"Failed to use import pattern [a: syntax error in pattern, at {MAIN}:1"),
    ("import {$}", f"File to import not found: {{$}}, at {MAIN}:1"),
    ("import {%}", f"File to import not found: {{%}}, at {MAIN}:1"),
    ("import {$$}", f"wrong argument count or unexpected line ending after 'import', at {MAIN}:1"),
    (":80 {\n\timport dir\n}", f"Could not import {FIX}/dir: is a directory, at {MAIN}:2"),
    (
        ":80 {\n\timport bad_heredoc.conf\n}",
        f"Could not read tokens while importing {FIX}/bad_heredoc.conf: incomplete heredoc <<EOF on line #3, "
        f"expected ending marker EOF, at {MAIN}:2",
    ),
    (
        "localhost\ndir1\nproxy {\n\timport nonexistent_file\n\ttransparent\n}",
        f"File to import not found: nonexistent_file, at {MAIN}:4",
    ),
    # cycles: through files and through snippets
    ("import cycle/self.conf", f"a cycle of imports exists between {FIX}/cycle/self.conf and {FIX}/cycle/self.conf"),
    ("import cycle/a.conf", f"a cycle of imports exists between {FIX}/cycle/c.conf and {FIX}/cycle/a.conf"),
    ("(A) {\n\timport A\n}\n:80\nimport A", f"a cycle of imports exists between {MAIN}:A and {MAIN}:A"),
    (
        "(A) {\n\timport B\n}\n(B) {\n\timport A\n}\n:80\nimport A",
        f"a cycle of imports exists between {MAIN}:B and {MAIN}:A",
    ),
    # a snippet used before its definition is taken for a file name
    (":80 {\n\timport later\n}\n(later) {\n}", f"File to import not found: later, at {MAIN}:2"),
    (
        "(site) {\n\thttp://{args[0]} https://{args[0]} {\n\t\t{block}\n\t}\n}\n"
        "import site test.domain {\n\t{\n\t\theader_up Host {host}\n\t}\n}",
        f"anonymous blocks are not supported, at {MAIN}:9",
    ),
    (
        "import snippet_name_only.conf\nimport snippet_name_only.conf\n{\n\tdebug\n}",
        "global options block must appear before import directives; move the global options block to the "
        f"top of the Caddyfile, at {MAIN}:2",
    ),
    # errors inside imported tokens name the import chain
    (
        "(s) {\n\trespond {}\n}\n:80 {\n\timport s\n}",
        f"Unexpected '{{}}' at end of line, at {MAIN}:2 import chain ['{MAIN}:5 (import s)']",
    ),
    (
        "(s) {\n\trespond hi\n:80 {\n\timport s\n}",
        f"syntax error: unexpected token '}}', expecting '}}', at {MAIN}:5 import chain: ['']",
    ),
]


@pytest.mark.parametrize(("text", "message"), IMPORT_ERRORS, ids=range(len(IMPORT_ERRORS)))
def test_import_errors(text: str, message: str) -> None:
    assert error_of(text) == message


def test_recursive_relative_and_absolute_imports(tmp_path: Path) -> None:
    nested = tmp_path / "sub"
    nested.mkdir()
    (nested / "second").write_text("dir2 1")
    (nested / "first").write_text("localhost\ndir1\nimport second")  # relative to sub/
    for pattern in ("sub/first", str(nested / "first")):
        tree = parse(f"import {pattern}", str(tmp_path / "Caddyfile"))
        assert shape(tree) == [(["localhost"], [1, 2])]
    (nested / "first").write_text(f"localhost\ndir1\nimport {nested / 'second'}")
    assert shape(parse("import sub/first", str(tmp_path / "Caddyfile"))) == [(["localhost"], [1, 2])]


def test_snippets() -> None:
    tree = parse_here(
        "(common) {\n\tgzip foo\n\terrors stderr\n}\nhttp://example.com {\n\timport common\n}\n"
    )
    (site,) = tree.blocks
    assert [k.text for k in site.keys] == ["http://example.com"]
    assert [d.name.text for d in site.directives] == ["gzip", "errors"]
    assert site.directives[1].args[0].text == "stderr"
    # imported tokens keep their own file/line and record where they were imported
    gzip = site.directives[0].name
    assert (gzip.file, gzip.line, gzip.import_chain) == (MAIN, 2, (f"{MAIN}:6 (import common)",))


def test_snippet_with_quoted_braces() -> None:
    tree = parse_here('(quoted) {\n\tdir1 "}"\n\tdir2 "{"\n}\nexample.com {\n\timport quoted\n\tdir3 foo\n}')
    assert [[t.text for t in d.tokens()] for d in tree.blocks[0].directives] == [
        ["dir1", "}"],
        ["dir2", "{"],
        ["dir3", "foo"],
    ]


def test_snippet_defined_in_main_used_in_imported_file(tmp_path: Path) -> None:
    (tmp_path / "site.conf").write_text("http://example.com {\n\timport common\n}\n")
    tree = parse("(common) {\n\tgzip foo\n}\nimport site.conf\n", str(tmp_path / "Caddyfile"))
    assert [d.name.text for d in tree.blocks[0].directives] == ["gzip"]
    chain = tree.blocks[0].directives[0].name.import_chain
    assert chain == (f"{tmp_path}/site.conf:2 (import common)",)


def test_imported_file_tokens_name_their_file() -> None:
    tree = parse_here(":80 {\n\timport lines.conf\n}")
    first = tree.blocks[0].directives[0].name
    assert (first.file, first.line, first.import_chain) == (f"{FIX}/lines.conf", 1, (f"{MAIN}:2 (import)",))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("import snippets.conf\nimport site example.com {\n\tredir https://example.net\n}", ["respond", "redir", "respond"]),
        ("import snippets.conf\nimport site example.com", ["respond", "respond"]),
    ],
)
def test_imported_snippet_definition_keeps_block_placeholder(text: str, expected: list[str]) -> None:
    (site,) = parse_here(text).blocks
    assert [k.text for k in site.keys] == ["http://example.com"]
    assert [d.name.text for d in site.directives] == expected


def test_site_import_with_braces() -> None:
    tree = parse_here(
        "(site) {\n\thttp://{args[0]} https://{args[0]} {\n\t\t{block}\n\t}\n}\n"
        "import site test.domain {\n\treverse_proxy http://192.168.1.1:8080 {\n\t\theader_up Host {host}\n\t}\n}"
    )
    (site,) = tree.blocks
    assert [k.text for k in site.keys] == ["http://test.domain", "https://test.domain"]
    proxy = site.directives[0]
    assert proxy.name.text == "reverse_proxy" and [d.name.text for d in proxy.block] == ["header_up"]


def test_arguments_and_variadics() -> None:
    tree = parse_here(
        "(resp) {\n\trespond {args[0]} {args[1]}\n\theader X-All {args[:]}\n\theader X-Rest {args[1:]}\n"
        "\theader X-Mid pre-{args[0]}-post {args[5]} {args.1}\n}\n:80 {\n\timport resp \"hello world\" 201\n}"
    )
    lines = [[t.text for t in d.tokens()] for d in tree.blocks[0].directives]
    assert lines == [
        ["respond", "hello world", "201"],
        ["header", "X-All", "hello world", "201"],
        ["header", "X-Rest", "201"],
        ["header", "X-Mid", "pre-hello world-post", "{args[5]}", "201"],
    ]


def test_named_import_blocks() -> None:
    tree = parse_here(
        "(hdr) {\n\theader {\n\t\t{blocks.set}\n\t}\n\tlog {blocks.missing}\n}\n"
        ":80 {\n\timport hdr {\n\t\tset X-A 1\n\t}\n}"
    )
    header, log = tree.blocks[0].directives
    assert [t.text for t in header.tokens()] == ["header", "{", "X-A", "1", "}"]
    assert [t.text for t in log.tokens()] == ["log"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("{args[1", None),
        ("1]}", None),
        ("{args[:]}aaaaa", None),
        ("aaaaa{args[:]}", None),
        ("{args.}", None),
        ("{args.1}", None),
        ("{args[]}", None),
        ("{args[:]}", (0, 10)),
        ("{args[0:]}", (0, 10)),
        ("{args[:0]}", (0, 0)),
        ("{args[-1:]}", None),
        ("{args[:11]}", None),
        ("{args[10:0]}", None),
        ("{args[0:10]}", (0, 10)),
        ("{args[0]}:{args[1]}:{args[2]}", None),
    ],
)
def test_variadic_placeholders(text: str, expected: tuple[int, int] | None) -> None:
    assert variadic_range(text, 10) == expected


@pytest.mark.parametrize(
    ("args", "text", "expected"),
    [
        (["123"], "{args[0]}", "123"),
        (["123"], '{"key":"{args[0]}"}', '{"key":"123"}'),
        (["123", "123"], '{"key":[{args[0]},{args[1]}]}', '{"key":[123,123]}'),
        (["a"], "{args[1]}", "{args[1]}"),  # out of range stays literal
        (["a"], "{args[0:1]}x", "{args[0:1]}x"),  # a variadic inside a token is not replaced
        (["a"], "\\{args[0]}", "{args[0]}"),  # Caddy's replacer drops the escaping backslash
        (["a"], "{path}/{args[0]}", "{path}/a"),
    ],
)
def test_argument_replacement(args: list[str], text: str, expected: str) -> None:
    assert replace_args(text, args) == expected


def test_unreadable_import(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_open = builtins.open
    target = str(FIX / "lines.conf")

    def fake_open(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if str(path) == target:
            raise PermissionError(13, "Permission denied", target)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert error_of(":80 {\n\timport lines.conf\n}") == (
        f"Could not import {target}: open {target}: permission denied, at {MAIN}:2"
    )
