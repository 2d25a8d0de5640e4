"""`{$VAR}` substitution: Caddy's replaceEnvVars table, and its effect on parsing."""

from __future__ import annotations

import pytest

from durable_streams.server.caddyfile import parse
from durable_streams.server.caddyfile.env import substitute_env

ENV = {"FOOBAR": "foobar", "CHAINED": "$FOOBAR", "EMPTY": "", "TWO": "hello world"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("foo", "foo"),
        ("{$NOT_SET}", ""),
        ("foo{$NOT_SET}bar", "foobar"),
        ("{$FOOBAR}", "foobar"),
        ("foo {$FOOBAR} bar", "foo foobar bar"),
        ("foo{$FOOBAR}bar", "foofoobarbar"),
        ("foo\n{$FOOBAR}\nbar", "foo\nfoobar\nbar"),
        ("{$FOOBAR} {$FOOBAR}", "foobar foobar"),
        ("{$FOOBAR}{$FOOBAR}", "foobarfoobar"),
        ("{$CHAINED}", "$FOOBAR"),  # values are not expanded again
        ("{$FOO:default}", "default"),
        ("foo{$BAR:bar}baz", "foobarbaz"),
        ("foo{$BAR:$FOOBAR}baz", "foo$FOOBARbaz"),
        ("{$X:a:b}", "a:b"),  # the default is everything after the first ':'
        ("{$EMPTY:default}", ""),  # set-but-empty is not unset
        ("{$FOOBAR", "{$FOOBAR"),
        ("{$LONGER_NAME $FOOBAR}", ""),
        ("{$}", "{$}"),
        ("{$}{$FOOBAR}", "{$}foobar"),
        ("{$$}", ""),
        ("{$", "{$"),
        ("}{$", "}{$"),
        ('"{$FOOBAR}" # {$FOOBAR}', '"foobar" # foobar'),  # inside quotes and comments too
    ],
)
def test_substitution_table(text: str, expected: str) -> None:
    assert substitute_env(text, ENV) == expected


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DS_TEST_PORT", "9999")
    assert substitute_env(":{$DS_TEST_PORT}") == ":9999"


def test_value_with_spaces_becomes_several_tokens() -> None:
    tree = parse(":80 {\n\trespond {$TWO}\n}\n", env=ENV)
    respond = tree.blocks[0].directives[0]
    assert [t.text for t in respond.args] == ["hello", "world"]


def test_unset_address_turns_site_into_global_block() -> None:
    tree = parse("{$HOST} {\n\trespond hi\n}\n", env={})
    assert tree.blocks[0].is_global_options


def test_env_applies_to_imported_files(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "part.conf").write_text("respond {$BODY:fallback}\n")
    main = tmp_path / "Caddyfile"
    tree = parse(":80 {\n\timport part.conf\n}\n", str(main), env={"BODY": "from-env"})
    assert tree.blocks[0].directives[0].args[0].text == "from-env"
    tree = parse(":80 {\n\timport part.conf\n}\n", str(main), env={})
    assert tree.blocks[0].directives[0].args[0].text == "fallback"
