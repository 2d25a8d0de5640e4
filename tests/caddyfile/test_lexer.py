"""Tokenizer: Caddy's own lexer table plus the quirks real Caddy 2.11 shows."""

from __future__ import annotations

import pytest

from durable_streams.server.caddyfile import CaddyfileError
from durable_streams.server.caddyfile.lexer import GO_SPACE, on_new_line, tokenize
from durable_streams.server.caddyfile.tree import Token

from .lexer_table import LEXER_CASES


def _lex(text: str) -> list[tuple[int, str]]:
    return [(t.line, t.text) for t in tokenize(text, "Caddyfile")]


@pytest.mark.parametrize(("text", "expected"), LEXER_CASES, ids=range(len(LEXER_CASES)))
def test_caddy_lexer_table(text: str, expected: list[tuple[int, str]] | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(CaddyfileError) as info:
            tokenize(text)
        assert str(info.value) == expected
    else:
        assert _lex(text) == expected


def _words(text: str) -> list[str]:
    return [t.text for t in tokenize(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # quotes only open a token; a quote inside a word is a literal character
        ('a"b c"d', ['a"b', 'c"d']),
        ('"a"b', ["a", "b"]),
        # outside quotes a backslash stays, except before whitespace (dropped)
        (r"a\"b", [r"a\"b"]),
        ("a\\ b", ["a", "b"]),
        ("x \\ b", ["x", "\\b"]),
        # inside double quotes only \" is an escape
        (r'"a\\"', ["a\\\\"]),
        (r'"C:\php"', ["C:\\php"]),
        # backticks: no escapes at all
        ("`a\\`", ["a\\"]),
        # `{` and `}` are words like any other; only the parser gives them meaning
        ("foo{ } {}", ["foo{", "}", "{}"]),
        # comments start only at a token start
        ("a#b # c d\ne", ["a#b", "e"]),
        # an unterminated quote at EOF still yields its text
        ('respond "x y', ["respond", "x y"]),
        ('"', []),
        # \r is dropped outside quotes, kept inside
        ("a\r\nb", ["a", "b"]),
        ('"a\r\nb"', ["a\r\nb"]),
        # `<<EOF` followed by a space is a plain word; `\<<` disables heredocs
        ("respond <<EOF 200", ["respond", "<<EOF", "200"]),
        ("a \\<<EOF", ["a", "<<EOF"]),
        # a heredoc closes as soon as the text ends with the marker, even mid-line
        ("h <<EOF\nsay EOF\n", ["h", ""]),
        # the BOM is removed only at the very start
        ("\ufeffa \ufeffb", ["a", "\ufeffb"]),
        # only-comment input gives no tokens
        ("# just a comment\n", []),
    ],
)
def test_word_rules(text: str, expected: list[str]) -> None:
    assert _words(text) == expected


def test_go_whitespace_set_is_not_pythons() -> None:
    # U+001C..U+001F are str.isspace() in Python but not whitespace for Go/Caddy
    assert _words("a\x1cb") == ["a\x1cb"]
    assert _words("a\vb\xa0c\u3000d\u2028e\x85f") == ["a", "b", "c", "d", "e", "f"]
    assert "\x1c" not in GO_SPACE and "\u200b" not in GO_SPACE


def test_quote_kinds_are_recorded() -> None:
    tokens = tokenize('plain "dq" `bt` <<EOF\nbody\nEOF')
    assert [(t.text, t.quote) for t in tokens] == [
        ("plain", None),
        ("dq", '"'),
        ("bt", "`"),
        ("body", "<<"),
    ]


def test_line_continuation_keeps_logical_line() -> None:
    tokens = tokenize("a \\\n b\nc")
    assert [(t.text, t.line) for t in tokens] == [("a", 1), ("b", 1), ("c", 3)]


def test_backslash_in_comment_joins_next_line() -> None:
    # Caddy quirk: the escape flag set inside a comment swallows the comment's newline
    tokens = tokenize("respond hi # see C:\\dir\nheader X y\nlast")
    assert [(t.text, t.line) for t in tokens] == [
        ("respond", 1),
        ("hi", 1),
        ("header", 1),
        ("X", 1),
        ("y", 1),
        ("last", 3),
    ]


def test_multiline_tokens_do_not_end_the_line() -> None:
    tokens = tokenize('respond "a\nb" 200\nnext\nx <<EOF\nbody\nEOF 201\ny')
    by_text = {t.text: t for t in tokens}
    assert not on_new_line(by_text["a\nb"], by_text["200"])
    assert on_new_line(by_text["200"], by_text["next"])
    assert not on_new_line(by_text["body"], by_text["201"])
    assert on_new_line(by_text["201"], by_text["y"])


def test_on_new_line_across_files_and_chains() -> None:
    a = Token("a", "Caddyfile", 1)
    assert on_new_line(a, Token("b", "other", 1))
    assert on_new_line(a, Token("b", "Caddyfile", 1, import_chain=("Caddyfile:3 (import)",)))
    assert not on_new_line(a, Token("b", "Caddyfile", 1))


def test_empty_input_is_an_error() -> None:
    with pytest.raises(CaddyfileError) as info:
        tokenize("")
    assert str(info.value) == "EOF"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("h <<\n", "missing opening heredoc marker on line #1; must contain only alphanumeric "
         "characters, dashes and underscores; got empty string"),
        ("\nh <<<EOF\nx\nEOF", "too many '<' for heredoc on line #2; only use two, for example <<END"),
        ("h <<E.F\nx\nE.F", "heredoc marker on line #1 must contain only alphanumeric characters, "
         "dashes and underscores; got 'E.F'"),
        ("h <<EOF\nx\n\ny", "incomplete heredoc <<EOF on line #4, expected ending marker EOF"),
        ("a\nh <<EOF\n x\n\tEOF", "mismatched leading whitespace in heredoc <<EOF on line #3 [ x], "
         "expected whitespace [\t] to match the closing marker"),
    ],
)
def test_heredoc_errors(text: str, message: str) -> None:
    with pytest.raises(CaddyfileError) as info:
        tokenize(text)
    assert str(info.value) == message
