"""The pytest plugin, exercised in a separate pytest run (pytester) as a user's suite would."""

from __future__ import annotations

import importlib.metadata

pytest_plugins = ["pytester"]

PLUGIN = "durable_streams.server.pytest_plugin"


def plugin_args() -> list[str]:
    """`-p PLUGIN` unless the installed distribution's pytest11 entry point loads it already
    (naming it twice would register it twice, which pytest refuses)."""
    installed = any(ep.value == PLUGIN for ep in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", PLUGIN]

USER_TESTS = '''
import asyncio
import json
import urllib.request

SEEN = []


def call(method, url, data=None, content_type=None):
    request = urllib.request.Request(url, data=data, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=20) as resp:
        return resp.status, resp.read()


def test_server_is_running(durable_streams_server):
    assert durable_streams_server.url.startswith("http://127.0.0.1:")
    assert durable_streams_server.url.endswith("/v1/stream")


def test_fresh_urls_are_unique_and_usable(durable_stream_url, durable_streams_server):
    first, second = durable_stream_url(), durable_stream_url("orders")
    assert first != second
    assert first.startswith(durable_streams_server.url + "/test_fresh_urls_are_unique_and_usable-")
    assert second.startswith(durable_streams_server.url + "/orders-")
    assert call("PUT", first, b"[1]", "application/json")[0] == 201
    call("POST", first, b"[2, 3]", "application/json")
    assert json.loads(call("GET", first)[1]) == [1, 2, 3]
    SEEN.append(first)


def test_the_server_is_shared_but_streams_are_not(durable_stream_url, durable_streams_server):
    url = durable_stream_url()
    assert url not in SEEN
    assert call("PUT", url)[0] == 201
    # The stream of the previous test is still there: one server for the session.
    assert call("HEAD", SEEN[0])[0] == 200


def test_any_path_of_the_server_is_a_stream(durable_streams_server):
    assert call("PUT", durable_streams_server.origin + "/anywhere/else")[0] == 201
    assert call("HEAD", durable_streams_server.origin + "/anywhere/else")[0] == 200


def test_usable_from_async_code(durable_stream_url):
    async def main():
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, call, "PUT", durable_stream_url())
    assert asyncio.run(main())[0] == 201
'''


def test_plugin_fixtures_in_a_user_suite(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_plugin_fixture_can_be_overridden(pytester):
    pytester.makeconftest('''
import pytest
from durable_streams.server.testing import BlockingDurableStreamTestServer

@pytest.fixture(scope="session")
def durable_streams_server():
    with BlockingDurableStreamTestServer(path_prefix="/custom") as server:
        yield server
''')
    pytester.makepyfile(test_user='''
def test_custom(durable_stream_url):
    assert "/custom/test_custom-" in durable_stream_url()
''')
    result = pytester.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
