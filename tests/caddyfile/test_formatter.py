"""`caddy fmt`: Caddy's formatter table plus idempotence on every table output."""

from __future__ import annotations

import pytest

from durable_streams.server.caddyfile import format_caddyfile

from .formatter_table import FORMATTER_CASES


@pytest.mark.parametrize(("description", "text", "expected"), FORMATTER_CASES, ids=[c[0] for c in FORMATTER_CASES])
def test_caddy_formatter_table(description: str, text: str, expected: str) -> None:
    assert format_caddyfile(text) == expected


@pytest.mark.parametrize(("description", "text", "expected"), FORMATTER_CASES, ids=[c[0] for c in FORMATTER_CASES])
def test_formatting_is_stable(description: str, text: str, expected: str) -> None:
    once = format_caddyfile(text)
    assert format_caddyfile(once) == once


def test_typical_durable_streams_config() -> None:
    messy = "{\nadmin off\n  auto_https off\n}\n:4437 {\n    route /v1/stream/* {\n  durable_streams {\n data_dir ./data\n}\n}\n}"
    assert format_caddyfile(messy) == (
        # consecutive lines stay consecutive: fmt does not insert a blank line after `}`
        "{\n\tadmin off\n\tauto_https off\n}\n:4437 {\n\troute /v1/stream/* {\n"
        "\t\tdurable_streams {\n\t\t\tdata_dir ./data\n\t\t}\n\t}\n}\n"
    )


# Caddy 2.11.7 (the released binary, newer than the formatter_test.go table) also writes
# a `{` that ends the input, with the usual placement rules. Checked with `caddy fmt -`.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a {", "a {\n"),
        ("a\n{", "a {\n"),
        ("a\n\n{", "a {\n"),
        ("{", "{\n"),
        ("import x\n{", "import x\n{\n"),
        ("import x\nimport y\n{", "import x\nimport y\n{\n"),
        ("a {\n}\n{", "a {\n}\n\n{\n"),
        ("x\n}\n{", "x\n}\n\n{\n"),
        ("a {\nb {", "a {\n\tb {\n"),
        ("a {\n\tb\n\t{", "a {\n\tb {\n"),
        ("a #c\n{", "a #c\n{\n"),
        ("a\\\n{", "a\\\n {\n"),
        ('"a" {', '"a" {\n'),
        ("a `x` {", "a `x` {\n"),
    ],
)
def test_open_brace_at_end_of_input(text: str, expected: str) -> None:
    assert format_caddyfile(text) == expected
