"""The CLI's pure pieces: stream ids to URL paths, JSON input to messages, argument parsing."""

from __future__ import annotations

import pytest

from durable_streams.server.cli.client import UsageError, build_parser, json_messages, parse_args
from durable_streams.server.cli.stream_client import StreamClient, StreamIdError, stream_path_for


@pytest.mark.parametrize(("stream_id", "path"), [
    ("plain", "plain"),
    ("account-123/chat/room-1", "account-123/chat/room-1"),
    ("/leading/and/trailing/", "leading/and/trailing"),
    ("with space/ünï", "with%20space/%C3%BCn%C3%AF"),
    ("q?x#y%z", "q%3Fx%23y%25z"),
])
def test_stream_ids_become_encoded_paths(stream_id, path):
    assert stream_path_for(stream_id) == path


@pytest.mark.parametrize("stream_id", ["", "/", "a//b", "a/../b", "./a", "a/.."])
def test_stream_ids_that_would_change_meaning_are_refused(stream_id):
    with pytest.raises(StreamIdError):
        stream_path_for(stream_id)


def test_urls_and_fork_source_paths_follow_the_base_url():
    client = StreamClient("http://h:1/v1/stream/", auth=None)
    assert client.url_for("a/b") == "http://h:1/v1/stream/a/b"
    assert client.path_for("a b") == "/v1/stream/a%20b"
    with pytest.raises(ValueError):
        StreamClient("localhost:4437/v1/stream")


@pytest.mark.parametrize(("text", "messages"), [
    ('{"a": 1}', [{"a": 1}]),
    ("[1, 2]", [1, 2]),
    ("[[1, 2]]", [[1, 2]]),
    ("[[[1]]]", [[[1]]]),
    ('"s"', ["s"]),
    ("null", [None]),
    ('{"a": 1}\n{"b": 2}\n', [{"a": 1}, {"b": 2}]),
    ("[1]\n\n[2, [3]]\n", [1, 2, [3]]),
])
def test_json_input_is_flattened_one_level_per_document(text, messages):
    assert json_messages(text) == messages


@pytest.mark.parametrize("text", ["", "{", "[]", "[]\n[]", '{"a": 1}\n{oops'])
def test_json_input_without_messages_is_a_usage_error(text):
    with pytest.raises(UsageError):
        json_messages(text)


def test_global_options_work_before_and_after_the_command():
    parser = build_parser()
    before = parser.parse_args(["--auth", "A", "--url", "http://x/s", "read", "id"])
    after = parser.parse_args(["read", "id", "--auth", "A", "--url", "http://x/s"])
    for args in (before, after):
        assert (args.auth, args.url, args.stream_id, args.offset, args.live) == ("A", "http://x/s", "id", "-1", "long-poll")
    assert not hasattr(parser.parse_args(["head", "id"]), "auth")


def test_json_flag_is_the_json_content_type_and_excludes_an_explicit_one():
    assert parse_args(["create", "s", "--json"]).content_type == "application/json"
    with pytest.raises(SystemExit):
        parse_args(["write", "s", "--json", "--content-type", "text/plain"])


@pytest.mark.parametrize("argv", [
    ["write", "s", "--json", "a", "b"],
    ["write", "s", "a", "--json", "b"],
    ["write", "s", "a", "b", "--json"],
    ["write", "--json", "s", "a", "b"],
])
def test_write_content_may_come_before_or_after_options(argv):
    args = parse_args(argv)
    assert (args.stream_id, args.content, args.content_type) == ("s", ["a", "b"], "application/json")


def test_unknown_arguments_are_refused():
    for argv in (["read", "s", "extra"], ["write", "s", "a", "--bogus"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
