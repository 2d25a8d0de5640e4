"""Matchers: Caddyfile forms -> matcher sets, and pure request-time evaluation."""

from __future__ import annotations

import pytest

from durable_streams.server.config import load_config
from durable_streams.server.config.matchers import HeaderMatcher, HostMatcher, MatcherSet, PathMatcher
from durable_streams.server.runtime.matching import RequestView, matches, path_pattern_matches, sets_match


@pytest.mark.parametrize(
    "pattern,path,expected",
    [
        ("/v1/stream/*", "/v1/stream/a", True),
        ("/v1/stream/*", "/v1/stream/a/b", True),
        ("/v1/stream/*", "/v1/stream", False),
        ("/v1/stream/*", "/V1/STREAM/x", True),  # case-insensitive, like Caddy
        ("/exact", "/exact", True),
        ("/exact", "/exact/", False),
        ("*.json", "/a/b.json", True),
        ("*/mid/*", "/a/mid/b", True),
        ("/a/*/c", "/a/b/c", True),
        ("/a/*/c", "/a/b/x/c", False),  # a glob star never crosses '/'
        ("/v1/stream/*", "/v1//stream/a", True),  # slashes merged before matching
        ("/v1/stream/*", "/v1/x/../stream/a", True),  # dot segments resolved
        ("/private/*", "/public/../private/x", True),
        ("*", "/anything", True),
    ],
)
def test_path_patterns(pattern: str, path: str, expected: bool) -> None:
    assert path_pattern_matches(pattern, path) is expected


def _set(text_block: str) -> MatcherSet:
    """The matcher set named @m defined in a site (first route's first set)."""
    config = load_config(":80 {\n" + text_block + "\n\trespond @m hit\n}\n")
    # a lone catch-all site is flattened into the server's routes (as Caddy does),
    # unless it uses a host matcher inside: then it stays wrapped in a subroute
    route = config.servers[0].routes[0]
    if route.terminal and not route.match:
        route = route.handle[0].routes[0]
    return route.match[0]


def view(**kw) -> RequestView:
    base = dict(method="GET", path="/", headers={}, host="example.test", query={}, remote_ip="10.1.2.3")
    base.update(kw)
    return RequestView(**base)


def test_named_block_is_anded_and_values_ored() -> None:
    m = _set("\t@m {\n\t\tpath /a/* /b/*\n\t\tmethod GET HEAD\n\t}")
    assert matches(m, view(path="/a/x", method="HEAD"))
    assert matches(m, view(path="/b/x"))
    assert not matches(m, view(path="/a/x", method="POST"))
    assert not matches(m, view(path="/c"))


def test_repeated_matcher_lines_concatenate() -> None:
    m = _set("\t@m {\n\t\tpath /a\n\t\tpath /b\n\t}")
    assert matches(m, view(path="/a")) and matches(m, view(path="/b"))


def test_header_matcher_forms() -> None:
    m = _set('\t@m {\n\t\theader Authorization "Bearer *"\n\t\theader !X-Debug\n\t\theader X-Present\n\t}')
    ok = {"Authorization": ["Bearer abc"], "X-Present": ["1"]}
    assert matches(m, view(headers=ok))
    assert not matches(m, view(headers={**ok, "X-Debug": ["1"]}))
    assert not matches(m, view(headers={"Authorization": ["Basic x"], "X-Present": ["1"]}))
    assert not matches(m, view(headers={"Authorization": ["Bearer abc"]}))


def test_not_header_is_the_static_key_pattern() -> None:
    m = _set('\t@m {\n\t\tnot header Authorization "Bearer secret"\n\t}')
    assert matches(m, view(headers={}))
    assert matches(m, view(headers={"authorization": ["Bearer wrong"]}))
    assert not matches(m, view(headers={"Authorization": ["Bearer secret"]}))


def test_not_block_negates_the_and() -> None:
    m = _set("\t@m {\n\t\tnot {\n\t\t\tpath /a\n\t\t\tmethod GET\n\t\t}\n\t}")
    assert not matches(m, view(path="/a", method="GET"))
    assert matches(m, view(path="/a", method="POST"))


def test_regexp_matchers() -> None:
    assert matches(_set("\t@m path_regexp ^/v1/stream/[a-z]+$"), view(path="/v1/stream/abc"))
    assert not matches(_set("\t@m path_regexp ^/v1/stream/[a-z]+$"), view(path="/v1/stream/ABC1"))
    hr = _set("\t@m header_regexp tok Authorization ^Bearer\\s+\\w+$")
    assert matches(hr, view(headers={"Authorization": ["Bearer x1"]}))
    assert not matches(hr, view(headers={}))


def test_host_matcher_wildcard_is_one_label() -> None:
    m = _set("\t@m host *.example.test api.other.test")
    assert matches(m, view(host="a.example.test:4437"))
    assert not matches(m, view(host="a.b.example.test"))
    assert matches(m, view(host="API.other.test"))


def test_query_matcher() -> None:
    m = _set("\t@m query live=sse live=long-poll offset=*")
    assert matches(m, view(query={"live": ["sse"], "offset": ["-1"]}))
    assert not matches(m, view(query={"live": ["sse"]}))
    assert not matches(m, view(query={"live": ["x"], "offset": ["1"]}))


def test_ip_matchers() -> None:
    m = _set("\t@m remote_ip 10.0.0.0/8 ::1")
    assert matches(m, view(remote_ip="10.9.9.9"))
    assert matches(m, view(remote_ip="::1"))
    assert not matches(m, view(remote_ip="192.168.1.1"))
    p = _set("\t@m remote_ip private_ranges")
    assert matches(p, view(remote_ip="192.168.1.1")) and not matches(p, view(remote_ip="8.8.8.8"))
    c = _set("\t@m client_ip 203.0.113.0/24")
    assert matches(c, view(remote_ip="10.0.0.1", client_ip="203.0.113.7"))
    assert not matches(c, view(remote_ip="203.0.113.7", client_ip="10.0.0.1"))


def test_protocol_matcher() -> None:
    assert matches(_set("\t@m protocol https"), view(scheme="https"))
    assert not matches(_set("\t@m protocol https"), view(scheme="http"))
    assert matches(_set("\t@m protocol http/1.1"), view(version=(1, 1)))
    assert matches(_set("\t@m protocol http/1.0+"), view(version=(1, 1)))
    assert not matches(_set("\t@m protocol http/2+"), view(version=(1, 1)))


def test_method_matcher_is_uppercased() -> None:
    assert matches(_set("\t@m method post"), view(method="POST"))


def test_sets_are_ored_and_no_sets_match_everything() -> None:
    a = MatcherSet((PathMatcher(("/a",)),))
    b = MatcherSet((HostMatcher(("h.test",)),))
    assert sets_match((a, b), view(path="/zzz", host="h.test"))
    assert not sets_match((a, b), view(path="/zzz"))
    assert sets_match((), view())


def test_header_matcher_host_field_reads_host() -> None:
    m = MatcherSet((HeaderMatcher((("Host", ("example.*",)),)),))
    assert matches(m, view(host="example.test"))


def test_matcher_token_forms_in_handlers() -> None:
    config = load_config(":80 {\n\trespond * all\n\trespond /only only\n}\n")
    routes = config.servers[0].routes
    # the path-matched respond sorts first (more specific), the '*' one has no matcher
    assert routes[0].match[0].config() == {"path": ["/only"]}
    assert routes[1].match == ()


def test_definitions_in_route_blocks_are_local_and_inherit() -> None:
    text = (
        ":80 {\n\t@outer method POST\n\troute {\n\t\t@inner path /x\n\t\trespond @inner a\n\t\trespond @outer b\n\t}\n"
        "\trespond @inner c\n}\n"
    )
    from durable_streams.server.config import CaddyfileError

    with pytest.raises(CaddyfileError, match="unrecognized matcher name: @inner"):
        load_config(text)
    load_config(text.replace("\trespond @inner c\n", ""))
