"""The adapted model: routes, order, grouping, servers, TLS, warnings; and `adapt` JSON
compared route for route with real `caddy adapt` where the config is plain Caddy."""

from __future__ import annotations

import re

import json

import pytest

from durable_streams.server.config import DEV_CADDYFILE, load_config
from durable_streams.server.caddyfile.errors import CaddyfileError
from durable_streams.server.config.model import (
    DurableStreams,
    Headers,
    RequestBody,
    StaticResponse,
    StripPathPrefix,
)

from .oracle import caddy_adapt, stub_durable_streams


def _handlers(obj):
    """Every handler in a route tree, depth first."""
    for route in getattr(obj, "routes", ()):
        for h in route.handle:
            yield h
            yield from _handlers(h)


def _all(config, kind):
    return [h for s in config.servers for r in s.routes for top in r.handle for h in (top, *_handlers(top)) if isinstance(h, kind)]


def test_dev_config() -> None:
    config = load_config(DEV_CADDYFILE)
    assert config.admin_off and config.auto_https == ("off",)
    (server,) = config.servers
    assert [str(a) for a in server.listen] == [":4437"]
    assert not server.tls
    (route,) = server.routes
    assert not route.match  # every path is a stream, as with the Node dev server
    (ds,) = _all(config, DurableStreams)
    assert ds == DurableStreams(data_dir=None, max_file_handles=100, long_poll_timeout=30.0, sse_reconnect_interval=60.0)


@pytest.mark.parametrize(
    "block,expected",
    [
        ("", DurableStreams()),
        (
            "data_dir /var/lib/ds\n\t\t\tmax_file_handles 500\n\t\t\tlong_poll_timeout 1m30s\n\t\t\tsse_reconnect_interval 2d",
            DurableStreams("/var/lib/ds", 500, 90.0, 172800.0),
        ),
        # the plugin's Provision turns zero values into defaults; Sscanf("%d") reads "10abc" as 10
        ("max_file_handles 0\n\t\t\tlong_poll_timeout 0\n\t\t\tsse_reconnect_interval 0s", DurableStreams()),
        ("max_file_handles 10abc\n\t\t\tlong_poll_timeout 500ms", DurableStreams(None, 10, 0.5, 60.0)),
    ],
)
def test_durable_streams_options(block: str, expected: DurableStreams) -> None:
    text = ":80 {\n\troute {\n\t\tdurable_streams {\n\t\t\t" + block + "\n\t\t}\n\t}\n}\n"
    assert _all(load_config(text), DurableStreams) == [expected]


def test_durable_streams_matcher_and_ignored_extra_args() -> None:
    config = load_config(":80 {\n\troute {\n\t\tdurable_streams /v1/* extra args\n\t}\n}\n")
    inner = config.servers[0].routes[0].handle[0].routes[0]
    assert inner.match[0].config() == {"path": ["/v1/*"]}


def test_order_option_allows_site_level_durable_streams() -> None:
    text = "{\n\torder durable_streams before respond\n}\n:80 {\n\trespond 404\n\tdurable_streams /v1/stream/*\n}\n"
    routes = load_config(text).servers[0].routes
    assert isinstance(routes[0].handle[0], DurableStreams)
    assert isinstance(routes[1].handle[0], StaticResponse)
    text_last = text.replace("before respond", "last")
    routes = load_config(text_last).servers[0].routes
    assert isinstance(routes[-1].handle[0], DurableStreams)


def test_site_directives_follow_caddy_order_and_route_keeps_file_order() -> None:
    text = (
        ":80 {\n\trespond 404\n\troute /r/* {\n\t\trespond r\n\t\theader X r\n\t}\n\thandle /h/* {\n\t\trespond h\n\t}\n"
        "\trequest_body {\n\t\tmax_size 1KB\n\t}\n\theader X-Site a\n}\n"
    )
    routes = load_config(text).servers[0].routes
    # header, request_body, handle, route, respond: Caddy's defaultDirectiveOrder
    # (header and request_body share a matcher, so they are consolidated into one route)
    assert [type(h).__name__ for h in routes[0].handle] == ["Headers", "RequestBody"]
    assert [r.match[0].config()["path"] for r in routes[1:3]] == [["/h/*"], ["/r/*"]]
    assert isinstance(routes[3].handle[0], StaticResponse)
    route_block = routes[2].handle[0]
    assert [type(h).__name__ for r in route_block.routes for h in r.handle] == ["StaticResponse", "Headers"]


def test_handles_are_mutually_exclusive_group() -> None:
    text = ":80 {\n\thandle /a/* {\n\t\trespond a\n\t}\n\thandle /a/b/* {\n\t\trespond b\n\t}\n\thandle {\n\t\trespond c\n\t}\n}\n"
    routes = load_config(text).servers[0].routes
    assert len({r.group for r in routes}) == 1 and routes[0].group is not None
    # most specific path first, the catch-all handle last
    assert [r.match[0].config()["path"][0] if r.match else None for r in routes] == ["/a/b/*", "/a/*", None]


def test_single_handle_has_no_group() -> None:
    routes = load_config(":80 {\n\thandle /a {\n\t\trespond a\n\t}\n}\n").servers[0].routes
    assert routes[0].group is None


def test_handle_path_strips_prefix() -> None:
    text = ":80 {\n\thandle_path /api/* {\n\t\trespond hi\n\t}\n}\n"
    (route,) = load_config(text).servers[0].routes
    assert route.match[0].config() == {"path": ["/api/*"]}
    strip, respond = route.handle[0].routes
    assert strip.handle == (StripPathPrefix("/api"),)
    assert isinstance(respond.handle[0], StaticResponse)


def test_header_ops() -> None:
    text = ":80 {\n\theader {\n\t\tx-frame-options DENY\n\t\t+Vary Origin\n\t\t-Server\n\t\t?Cache-Control no-store\n\t}\n}\n"
    (h,) = _all(load_config(text), Headers)
    assert [(o.action, o.field, o.value) for o in h.ops] == [
        ("set", "X-Frame-Options", "DENY"),
        ("add", "Vary", "Origin"),
        ("delete", "Server", ""),
        ("default", "Cache-Control", "no-store"),
    ]
    assert h.deferred  # deletes force deferral, as in Caddy


def test_request_body_sizes() -> None:
    for size, expected in [("10MB", 10_000_000), ("64MiB", 64 << 20), ("1024", 1024), ("1.5k", 1500)]:
        text = f":80 {{\n\trequest_body {{\n\t\tmax_size {size}\n\t}}\n}}\n"
        assert _all(load_config(text), RequestBody) == [RequestBody(expected)]


def test_tls_site_with_certificate_and_redirects(tmp_path) -> None:
    text = "example.test {\n\ttls /etc/ds/cert.pem /etc/ds/key.pem\n\troute {\n\t\tdurable_streams\n\t}\n}\n"
    config = load_config(text)
    https, redirect = config.servers
    assert [str(a) for a in https.listen] == [":443"] and https.tls
    assert https.certificates[0].hosts == ("example.test",)
    assert https.routes[0].match[0].config() == {"host": ["example.test"]}
    assert [str(a) for a in redirect.listen] == [":80"]
    # Caddy adds the redirect server when it starts: `adapt` does not print it
    assert redirect.routes == () and redirect.name not in config.to_json()["apps"]["http"]["servers"]
    (r,) = redirect.runtime_routes
    assert r.handle[0].status == 308
    assert dict(r.handle[0].headers)["Location"] == "https://{http.request.host}{http.request.uri}"
    no_redirects = load_config("{\n\tauto_https disable_redirects\n}\n" + text)
    assert len(no_redirects.servers) == 1


def test_mixing_http_and_https_on_one_port_is_refused() -> None:
    from durable_streams.server.config import CaddyfileError

    text = "a.test:8443 {\n\ttls c.pem k.pem\n}\n:8443 {\n\trespond hi\n}\n"
    with pytest.raises(CaddyfileError, match="would serve both HTTP"):
        load_config(text)


def test_server_options() -> None:
    text = (
        "{\n\tservers {\n\t\ttimeouts {\n\t\t\tidle 2m\n\t\t\tread_header 10s\n\t\t}\n\t\tmax_header_size 16KB\n"
        "\t\ttrusted_proxies static 10.0.0.0/8\n\t\tclient_ip_headers X-Real-IP\n\t}\n\tgrace_period 5s\n"
        "\tshutdown_delay 1s\n\tdebug\n}\n:80 {\n}\n"
    )
    config = load_config(text)
    (server,) = config.servers
    assert server.timeouts.idle == 120 and server.timeouts.read_header == 10
    assert server.max_header_size == 16000
    assert server.trusted_proxies == ("10.0.0.0/8",) and server.client_ip_headers == ("X-Real-IP",)
    assert (config.grace_period, config.shutdown_delay, config.log_level) == (5, 1, "DEBUG")


def test_log_option() -> None:
    config = load_config("{\n\tlog {\n\t\toutput stdout\n\t\tformat json\n\t\tlevel warn\n\t}\n}\n:80 {\n}\n")
    (log,) = config.logs
    assert (log.output, log.format, log.level) == ("stdout", "json", "WARNING")
    assert config.log_level == "WARNING"


@pytest.mark.parametrize(
    "text,warning",
    [
        ("{\n\tpersist_config off\n}\n:80 {\n}\n", "Caddyfile:2: global option 'persist_config' accepted but ignored by durable-streams daemon"),
        ("{\n\tstorage_check off\n}\n:80 {\n}\n", "Caddyfile:2: global option 'storage_check' accepted but ignored by durable-streams daemon"),
        (":80 {\n\tencode gzip\n}\n", "Caddyfile:2: directive 'encode' accepted but ignored by durable-streams daemon"),
        (":80 {\n\troute {\n\t\ttracing\n\t}\n}\n", "Caddyfile:3: directive 'tracing' accepted but ignored by durable-streams daemon"),
    ],
)
def test_accepted_with_warning(text: str, warning: str) -> None:
    assert warning in load_config(text).warnings


# Plain-Caddy configs (durable_streams stubbed as respond): our routes must equal Caddy's.
SAME_AS_CADDY = [
    ":80 {\n\trespond /a \"x\" 404\n\thandle /b/* {\n\t\trespond b\n\t}\n\thandle {\n\t\trespond c\n\t}\n\theader X-Y z\n}\n",
    ":80 {\n\troute /v1/stream/* {\n\t\tdurable_streams\n\t}\n\trespond 404\n}\n",
    ":80 {\n\t@auth {\n\t\tnot header Authorization \"Bearer k\"\n\t}\n\troute /v1/* {\n\t\trespond @auth 401\n\t\tdurable_streams\n\t}\n}\n",
    ":80 {\n\thandle_path /api/* {\n\t\trespond hi\n\t}\n\tredir /old /new permanent\n\tabort /x\n}\n",
    ":80 {\n\t@m {\n\t\tmethod GET HEAD\n\t\tpath /a/* /b\n\t\tquery live=sse\n\t\tremote_ip 10.0.0.0/8\n\t}\n\trespond @m ok\n}\n",
    ":80 {\n\t@r path_regexp ^/s/[a-z]+$\n\t@h header_regexp tok X-Tok ^t\n\trespond @r r\n\trespond @h h\n}\n",
    ":80 {\n\trequest_body /up/* {\n\t\tmax_size 10MB\n\t}\n\theader {\n\t\t-Server\n\t\t>X-A b\n\t\t+Vary Origin\n\t}\n}\n",
    "http://a.test:8080 {\n\trespond a\n}\nhttp://b.test:8080, http://c.test:8080 {\n\trespond bc\n}\n:8080 {\n\trespond other\n}\n",
    ":80 {\n\troute {\n\t\thandle /a {\n\t\t\trespond a\n\t\t}\n\t\thandle {\n\t\t\trespond b\n\t\t}\n\t}\n}\n",
    ":80 {\n\t@n not path /x/*\n\thandle @n {\n\t\trespond n\n\t}\n}\n",
    ":80 {\n\troute {\n\t\trespond a\n\t} respond b\n}\n",
    ":80 {\n\tlog\n\tlog_skip /health\n\trespond ok\n}\n",
]


@pytest.mark.parametrize("text", SAME_AS_CADDY)
def test_routes_equal_real_caddy(text: str, tmp_path) -> None:
    stubbed = stub_durable_streams(text)
    accepted, out = caddy_adapt(stubbed, tmp_path)
    assert accepted, out
    theirs = {name: s.get("routes", []) for name, s in json.loads(out)["apps"]["http"]["servers"].items()}
    ours = {name: s.get("routes", []) for name, s in load_config(stubbed).to_json()["apps"]["http"]["servers"].items()}
    assert ours == theirs


def test_example_caddyfile_adapts_and_real_caddy_accepts_its_syntax(tmp_path) -> None:
    from pathlib import Path

    text = (Path(__file__).parents[2] / "Caddyfile").read_text()
    config = load_config(text, env={})
    (ds,) = _all(config, DurableStreams)
    assert ds.data_dir == "./data" and ds.long_poll_timeout == 30
    assert config.warnings == ()
    accepted, out = caddy_adapt(stub_durable_streams(text), tmp_path)
    assert accepted, out


def test_admin_and_metrics_options() -> None:
    from durable_streams.server.config.addresses import ListenAddress
    from durable_streams.server.config.model import MetricsEndpoint

    config = load_config("{\n\tadmin localhost:2019\n\tmetrics\n}\n:80 {\n\tmetrics /metrics\n}\n")
    assert config.admin == ListenAddress("tcp", "localhost", 2019) and config.metrics
    assert _all(config, MetricsEndpoint) == [MetricsEndpoint()]
    assert load_config("{\n\tadmin\n}\n:80 {\n}\n").admin == ListenAddress("tcp", "localhost", 2019)
    off = load_config("{\n\tadmin off\n}\n:80 {\n}\n")
    assert off.admin is None and off.admin_off
    # no admin option: no operations endpoint (Caddy would open localhost:2019)
    assert load_config(":80 {\n}\n").admin is None
    assert load_config("{\n\tservers {\n\t\tmetrics\n\t}\n}\n:80 {\n}\n").metrics


# Whole realistic files (snippets, imports with args, env defaults, heredocs, matchers):
# the full pipeline must give the same routes as real Caddy.
REALISTIC = [
    '(common) {\n\theader {\n\t\tX-Content-Type-Options nosniff\n\t\t-Server\n\t}\n}\n{\n\tadmin off\n\tauto_https off\n}\n:{$PORT:4437} {\n\timport common\n\t@unauthorized {\n\t\tnot header Authorization "Bearer {$TOKEN:secret}"\n\t}\n\troute /v1/stream/* {\n\t\trespond @unauthorized 401\n\t\tdurable_streams {\n\t\t\tdata_dir ./data\n\t\t}\n\t}\n\trespond <<EOF\n\t\tnot found\n\t\tEOF 404\n}\n',
    '(site) {\n\thttp://{args[0]}:8080 {\n\t\trespond "{args[1]}"\n\t}\n}\nimport site a.test A\nimport site b.test B\n',
    '{\n\tauto_https off\n}\nhttp://localhost:4437 {\n\troute /v1/stream/* {\n\t\tdurable_streams\n\t}\n}\n',
    ':4437 {\n\thandle /v1/* {\n\t\troute {\n\t\t\tdurable_streams\n\t\t}\n\t}\n\thandle {\n\t\trespond 404\n\t}\n}\n',
    '{\n\tservers :4437 {\n\t\ttimeouts {\n\t\t\tread_body 30s\n\t\t\tidle 5m\n\t\t}\n\t\ttrusted_proxies static private_ranges\n\t}\n}\n:4437 {\n\t@local remote_ip 127.0.0.1/8 ::1\n\troute {\n\t\trespond @local "hi {remote_host}"\n\t}\n}\n',
]


@pytest.mark.parametrize("text", REALISTIC)
def test_realistic_files_equal_real_caddy(text: str, tmp_path) -> None:
    test_routes_equal_real_caddy(text, tmp_path)


def test_unformatted_input_warns_like_caddy() -> None:
    config = load_config(":80 {\n\trespond a\n  respond /b b\n}\n")
    assert config.warnings[0] == (
        "Caddyfile:3: Caddyfile input is not formatted; run 'durable-streams-server fmt --overwrite' to fix inconsistencies"
    )
    assert load_config(":80 {\n\trespond a\n}\n").warnings == ()


@pytest.mark.parametrize(
    "options, expected",
    [
        ("webhook_callback_url https://streams.example.com", (True, "https://streams.example.com")),
        ("subscriptions", (True, None)),
        ("max_file_handles 10", (False, None)),
    ],
)
def test_subscriptions_are_opt_in(options, expected):
    """`webhook_callback_url` (the plugin's option) and `subscriptions` (ours) both turn
    the reserved subscription APIs on; without either they stay off."""
    config = load_config(f":80 {{\n\troute {{\n\t\tdurable_streams {{\n\t\t\t{options}\n\t\t}}\n\t}}\n}}\n")
    adapted = json.dumps(config.to_json())
    enabled, base = expected
    assert ('"subscriptions": true' in adapted) is enabled
    assert ('"webhook_callback_url"' in adapted) is (base is not None)
    if base:
        assert f'"webhook_callback_url": "{base}"' in adapted
    assert config.warnings == ()


@pytest.mark.parametrize(
    "line, message",
    [
        ("webhook_callback_url ftp://x", "invalid webhook_callback_url: expected an absolute http:// or https:// URL"),
        ("webhook_callback_url /relative", "invalid webhook_callback_url: expected an absolute http:// or https:// URL"),
        ("webhook_callback_url http://x/?q=1", "invalid webhook_callback_url: must not have a query or fragment"),
        ("subscriptions on", "subscriptions takes no arguments"),
    ],
)
def test_subscription_options_refused(line, message):
    with pytest.raises(CaddyfileError, match=re.escape(message)):
        load_config(f":80 {{\n\troute {{\n\t\tdurable_streams {{\n\t\t\t{line}\n\t\t}}\n\t}}\n}}\n")
