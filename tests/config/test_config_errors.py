"""Every config error path: exact Caddy-shaped message with file:line.

Where real Caddy reports the same mistake (no plugin or daemon policy involved), the
test also asks real `caddy adapt` and requires the identical message.
"""

from __future__ import annotations

import pytest

from durable_streams.server.config import CaddyfileError, load_config

from .oracle import caddy_adapt

ORDER_MSG = (
    "directive 'durable_streams' is not an ordered HTTP handler, so it cannot be used here"
    " - try placing within a route block or using the order global option"
)
NEEDS_TLS = (
    "site {key} needs HTTPS, but {reason}:"
    " add 'tls <cert_file> <key_file>' to the site, or serve plain HTTP with an http:// address or a ':port'"
    " address without a host"
)
AUTO_OFF = "auto_https turns off automatic certificates, and durable-streams-server serves no TLS site without one"
NO_HOST = "the address has no host name to issue a certificate for (automatic HTTPS needs one)"

# (id, Caddyfile, expected message, real Caddy reports the same)
CASES = [
    ("unknown-directive", ":80 {\n\tfrobnicate\n}\n", "Caddyfile:2: unrecognized directive: frobnicate", True),
    ("unknown-option", "{\n\tfrobnicate\n}\n:80 {\n}\n", "Caddyfile:2: unrecognized global option: frobnicate", True),
    (
        "unknown-nested-directive",
        ":80 {\n\troute /x {\n\t\tfrob\n\t}\n}\n",
        "parsing caddyfile tokens for 'route': unrecognized directive: frob - are you sure your Caddyfile"
        " structure (nesting and braces) is correct?, at Caddyfile:4",
        True,
    ),
    (
        "second-site-without-braces",
        ":80\nrespond hi\n:81\nrespond x\n",
        "Caddyfile:3: unrecognized directive: :81\nDid you mean to define a second site? If so, you must use"
        " curly braces around each site to separate their configurations.",
        True,
    ),
    ("ds-at-site-level", ":80 {\n\tdurable_streams\n}\n", ORDER_MSG, False),
    (
        "ds-in-handle",
        ":80 {\n\thandle {\n\t\tdurable_streams\n\t}\n}\n",
        "parsing caddyfile tokens for 'handle': " + ORDER_MSG,
        False,
    ),
    (
        "ds-unknown-subdirective",
        ":80 {\n\troute {\n\t\tdurable_streams {\n\t\t\tx 1\n\t\t}\n\t}\n}\n",
        "parsing caddyfile tokens for 'route': parsing caddyfile tokens for 'durable_streams':"
        " unknown subdirective: x, at Caddyfile:4, at Caddyfile:6",
        False,
    ),
    (
        "ds-data-dir-missing-arg",
        ":80 {\n\troute {\n\t\tdurable_streams {\n\t\t\tdata_dir\n\t\t}\n\t}\n}\n",
        "parsing caddyfile tokens for 'route': parsing caddyfile tokens for 'durable_streams':"
        " wrong argument count or unexpected line ending after 'data_dir', at Caddyfile:4, at Caddyfile:6",
        False,
    ),
    (
        "ds-data-dir-two-args",
        ":80 {\n\troute {\n\t\tdurable_streams {\n\t\t\tdata_dir ./a ./b\n\t\t}\n\t}\n}\n",
        "parsing caddyfile tokens for 'route': parsing caddyfile tokens for 'durable_streams':"
        " unknown subdirective: ./b, at Caddyfile:4, at Caddyfile:6",
        False,
    ),
    (
        "ds-duration-without-unit",
        ":80 {\n\troute {\n\t\tdurable_streams {\n\t\t\tlong_poll_timeout 30\n\t\t}\n\t}\n}\n",
        "parsing caddyfile tokens for 'route': parsing caddyfile tokens for 'durable_streams':"
        ' invalid duration: time: missing unit in duration "30", at Caddyfile:4, at Caddyfile:6',
        False,
    ),
    (
        "ds-bad-sse-interval",
        ":80 {\n\troute {\n\t\tdurable_streams {\n\t\t\tsse_reconnect_interval 5x\n\t\t}\n\t}\n}\n",
        "parsing caddyfile tokens for 'route': parsing caddyfile tokens for 'durable_streams':"
        ' invalid duration: time: unknown unit "x" in duration "5x", at Caddyfile:4, at Caddyfile:6',
        False,
    ),
    (
        "ds-max-file-handles-not-int",
        ":80 {\n\troute {\n\t\tdurable_streams {\n\t\t\tmax_file_handles many\n\t\t}\n\t}\n}\n",
        "parsing caddyfile tokens for 'route': parsing caddyfile tokens for 'durable_streams':"
        " invalid max_file_handles: expected integer, at Caddyfile:4, at Caddyfile:6",
        False,
    ),
    (
        "order-unknown-directive",
        "{\n\torder frobnicate before respond\n}\n:80 {\n}\n",
        "parsing caddyfile tokens for 'order': frobnicate is not a registered directive, at Caddyfile:2",
        True,
    ),
    (
        "order-unknown-position",
        "{\n\torder durable_streams beside respond\n}\n:80 {\n}\n",
        "parsing caddyfile tokens for 'order': unknown positional 'beside', at Caddyfile:2",
        False,
    ),
    (
        "respond-too-many-args",
        ":80 {\n\troute {\n\t\trespond a b c d e\n\t}\n}\n",
        "parsing caddyfile tokens for 'route': parsing caddyfile tokens for 'respond': wrong argument count"
        " or unexpected line ending after 'e', at Caddyfile:3, at Caddyfile:4",
        True,
    ),
    (
        "respond-unknown-subdirective",
        ":80 {\n\trespond hi {\n\t\tcolour red\n\t}\n}\n",
        "parsing caddyfile tokens for 'respond': unrecognized subdirective 'colour', at Caddyfile:3",
        True,
    ),
    ("unknown-matcher-name", ":80 {\n\trespond @nope hi\n}\n", "parsing caddyfile tokens for 'respond': unrecognized matcher name: @nope", True),
    (
        "unknown-matcher-name-nested",
        ":80 {\n\troute {\n\t\trespond @nope hi\n\t}\n}\n",
        "parsing caddyfile tokens for 'route': parsing caddyfile tokens for 'respond': unrecognized matcher"
        " name: @nope, at Caddyfile:4",
        True,
    ),
    ("matcher-defined-twice", ":80 {\n\t@a path /x\n\t@a method GET\n\trespond hi\n}\n", "matcher is defined more than once: @a", True),
    (
        "matcher-defined-twice-nested",
        ":80 {\n\troute {\n\t\t@a method GET\n\t\t@a method GET\n\t\trespond @a hi\n\t}\n}\n",
        "parsing caddyfile tokens for 'route': matcher is defined more than once: @a",
        True,
    ),
    (
        "matcher-module-unknown",
        ":80 {\n\t@a status 200\n\trespond hi\n}\n",
        "getting matcher module 'status': module not registered: http.matchers.status",
        True,
    ),
    (
        "query-matcher-malformed",
        ":80 {\n\t@a query foo\n\trespond hi\n}\n",
        "malformed query matcher token: foo; must be in param=val format, at Caddyfile:2",
        True,
    ),
    (
        "header-matcher-null-with-value",
        ":80 {\n\t@a header !X y\n\trespond hi\n}\n",
        "malformed header matcher: null matching headers cannot have a field value, at Caddyfile:2",
        True,
    ),
    (
        "expression-matcher",
        ':80 {\n\t@a `{method} == "GET"`\n\trespond @a hi\n}\n',
        "matcher 'expression' is not supported by durable-streams-server, at Caddyfile:2",
        False,
    ),
    (
        "reverse-proxy-rejected",
        ":80 {\n\treverse_proxy localhost:9000\n}\n",
        "Caddyfile:2: unsupported directive: reverse_proxy - this daemon serves Durable Streams only;"
        " run it behind Caddy/another proxy for this",
        False,
    ),
    (
        "forward-auth-rejected-in-route",
        ":80 {\n\troute {\n\t\tforward_auth localhost:9000 {\n\t\t\turi /auth\n\t\t}\n\t\tdurable_streams\n\t}\n}\n",
        "parsing caddyfile tokens for 'route': unsupported directive: forward_auth - not implemented; never"
        " ignored (use basic_auth, an @matcher + respond 401, or a proxy in front), at Caddyfile:7",
        False,
    ),
    (
        # Caddy serves TLS there with no certificate (every handshake fails): refused
        "auto-https-off-still-needs-cert",
        "{\n\tauto_https off\n}\nlocalhost:4437 {\n\trespond hi\n}\n",
        "Caddyfile:4: " + NEEDS_TLS.format(key="localhost:4437", reason=AUTO_OFF),
        False,
    ),
    (
        "disable-certs-still-needs-cert",
        "{\n\tauto_https disable_certs\n}\n127.0.0.1:4437 {\n\trespond hi\n}\n",
        "Caddyfile:4: " + NEEDS_TLS.format(key="127.0.0.1:4437", reason=AUTO_OFF),
        False,
    ),
    ("https-scheme-without-cert", "https://:8443 {\n\trespond hi\n}\n", "Caddyfile:1: " + NEEDS_TLS.format(key="https://:8443", reason=NO_HOST), False),
    ("tls-internal-without-host", ":8443 {\n\ttls internal\n}\n", "Caddyfile:1: " + NEEDS_TLS.format(key=":8443", reason=NO_HOST), False),
    ("storage-module", "{\n\tstorage redis\n}\n:80 {\n}\n", "parsing caddyfile tokens for 'storage': getting storage module 'redis': module not registered: caddy.storage.redis, at Caddyfile:2", False),
    (
        "scheme-port-convention",
        "http://x:443 {\n\trespond hi\n}\n",
        "server block 0, key 0 (http://x:443): determining listener address: [http://x:443] scheme and port violate convention",
        True,
    ),
    ("invalid-port", ":http {\n\trespond hi\n}\n", "parsing key: invalid port 'http': strconv.Atoi: parsing \"http\": invalid syntax", True),
    ("port-out-of-range", ":99999 {\n\trespond hi\n}\n", "parsing key: port 99999 is out of range", True),
    (
        "unsupported-scheme",
        "foo://x {\n\trespond hi\n}\n",
        "server block 0, key 0 (foo://x): determining listener address: unsupported URL scheme foo://",
        True,
    ),
    (
        "wss-scheme",
        "wss://x {\n\trespond hi\n}\n",
        "server block 0, key 0 (wss://x): determining listener address: the scheme wss:// is only supported in browsers; use https:// instead",
        True,
    ),
    ("ambiguous-site", ":80 {\n\trespond a\n}\n:80 {\n\trespond b\n}\n", "ambiguous site definition: :80", True),
    (
        "grace-period-no-unit",
        "{\n\tgrace_period 10\n}\n:80 {\n}\n",
        "parsing caddyfile tokens for 'grace_period': time: missing unit in duration \"10\"",
        True,
    ),
    (
        "http-port-not-int",
        "{\n\thttp_port eighty\n}\n:80 {\n}\n",
        "parsing caddyfile tokens for 'http_port': converting port 'eighty' to integer value: strconv.Atoi:"
        " parsing \"eighty\": invalid syntax, at Caddyfile:2",
        True,
    ),
    (
        "auto-https-bad-value",
        "{\n\tauto_https sometimes\n}\n:80 {\n}\n",
        "parsing caddyfile tokens for 'auto_https': auto_https must be one of 'off', 'disable_redirects',"
        " 'disable_certs', or 'ignore_loaded_certs', at Caddyfile:2",
        True,
    ),
    (
        "admin-off-with-more",
        "{\n\tadmin off {\n\t\torigins x\n\t}\n}\n:80 {\n}\n",
        "parsing caddyfile tokens for 'admin': No more option is allowed after turning off admin config, at Caddyfile:2",
        True,
    ),
    (
        "servers-timeouts-unknown",
        "{\n\tservers {\n\t\ttimeouts {\n\t\t\tforever 1s\n\t\t}\n\t}\n}\n:80 {\n}\n",
        "parsing caddyfile tokens for 'servers': unrecognized timeouts option 'forever', at Caddyfile:4",
        True,
    ),
    (
        "servers-timeout-bad-duration",
        "{\n\tservers {\n\t\ttimeouts {\n\t\t\tidle 5\n\t\t}\n\t}\n}\n:80 {\n}\n",
        "parsing caddyfile tokens for 'servers': parsing idle timeout duration: time: missing unit in duration \"5\", at Caddyfile:4",
        True,
    ),
    (
        "site-key-is-directive",
        "respond {\n}\n",
        "Caddyfile:1: parsed 'respond' as a site address, but it is a known directive; directives must appear in a site block",
        True,
    ),
    (
        "handle-path-needs-slash",
        ":80 {\n\thandle_path x {\n\t\trespond hi\n\t}\n}\n",
        "parsing caddyfile tokens for 'handle_path': path matcher must begin with '/', got x, at Caddyfile:2",
        True,
    ),
    (
        "tls-in-handle",
        ":80 {\n\thandle {\n\t\ttls a b\n\t}\n}\n",
        "parsing caddyfile tokens for 'handle': directive 'tls' is not an ordered HTTP handler, so it cannot be"
        " used here - try placing within a route block or using the order global option",
        True,
    ),
    (
        "header-args-and-block",
        ":80 {\n\theader X y {\n\t\tZ w\n\t}\n}\n",
        "parsing caddyfile tokens for 'header': cannot specify headers in both arguments and block, at Caddyfile:3",
        True,
    ),
    (
        "request-body-bad-size",
        ":80 {\n\trequest_body {\n\t\tmax_size 10zz\n\t}\n}\n",
        "parsing caddyfile tokens for 'request_body': parsing max_size: unhandled size name: zz, at Caddyfile:3",
        True,
    ),
    (
        "request-body-unknown",
        ":80 {\n\trequest_body {\n\t\tmin_size 1\n\t}\n}\n",
        "parsing caddyfile tokens for 'request_body': unrecognized request_body subdirective 'min_size', at Caddyfile:3",
        True,
    ),
    (
        "tokens-after-closing-brace-join-the-block",
        ":80 {\n\trespond a {\n\t\tclose\n\t} 404\n}\n",
        "parsing caddyfile tokens for 'respond': unrecognized subdirective '404', at Caddyfile:4",
        True,
    ),
    (
        "global-block-not-first",
        ":80 {\n}\n{\n\tadmin off\n}\n",
        "server block without any key is global configuration, and if used, it must be first",
        True,
    ),
]


@pytest.mark.parametrize("text,expected", [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_error_message(text: str, expected: str) -> None:
    with pytest.raises(CaddyfileError) as info:
        load_config(text)
    assert str(info.value) == expected


@pytest.mark.parametrize("text,expected", [c[1:3] for c in CASES if c[3]], ids=[c[0] for c in CASES if c[3]])
def test_real_caddy_agrees(text: str, expected: str, tmp_path) -> None:
    accepted, message = caddy_adapt(text, tmp_path)
    assert not accepted
    assert message == expected


def test_error_carries_location() -> None:
    with pytest.raises(CaddyfileError) as info:
        load_config(":80 {\n\n\tfrobnicate\n}\n", filename="/etc/ds/Caddyfile")
    assert str(info.value) == "/etc/ds/Caddyfile:3: unrecognized directive: frobnicate"
    assert (info.value.file, info.value.line) == ("/etc/ds/Caddyfile", 3)


def test_two_stores_on_one_data_dir_are_refused() -> None:
    text = (
        ":80 {\n\troute /a/* {\n\t\tdurable_streams {\n\t\t\tdata_dir ./data\n\t\t}\n\t}\n}\n"
        ":81 {\n\troute /b/* {\n\t\tdurable_streams {\n\t\t\tdata_dir data/\n\t\t}\n\t}\n}\n"
    )
    with pytest.raises(CaddyfileError) as info:
        load_config(text)
    assert str(info.value) == (
        "Caddyfile:9: data_dir data/ is already used by another durable_streams block (in the directive at"
        " Caddyfile:2); give each block its own data_dir"
    )
    # one block served on two ports is one store: fine
    load_config(":80, :81 {\n\troute {\n\t\tdurable_streams {\n\t\t\tdata_dir ./data\n\t\t}\n\t}\n}\n")


# Configs where real Caddy and this adapter must agree: both accept, or both reject with
# the same message (argument counts, matcher forms, options, address forms).
PARITY = [
    ":80 {\n\theader\n}\n",
    ":80 {\n\theader X\n}\n",
    ":80 {\n\trespond\n}\n",
    ":80 {\n\trespond /x\n}\n",
    ":80 {\n\tabort extra\n}\n",
    ":80 {\n\tredir\n}\n",
    ":80 {\n\tredir /a /b 299\n}\n",
    ":80 {\n\thandle_path\n}\n",
    ":80 {\n\thandle /x extra {\n\t\trespond hi\n\t}\n}\n",
    ":80 {\n\troute /x extra {\n\t\trespond hi\n\t}\n}\n",
    ":80 {\n\trequest_body {\n\t\tmax_size\n\t}\n}\n",
    ":80 {\n\t@a {\n\t}\n\trespond @a hi\n}\n",
    ":80 {\n\t@a path_regexp\n\trespond @a hi\n}\n",
    ":80 {\n\t@a header\n\trespond @a hi\n}\n",
    ":80 {\n\t@a header X a b\n\trespond @a hi\n}\n",
    ":80 {\n\t@a protocol\n\trespond @a hi\n}\n",
    ":80 {\n\t@a not\n\trespond @a hi\n}\n",
    ":80 {\n\t@a host\n\trespond @a hi\n}\n",
    ":80 {\n\t@a query\n\trespond @a hi\n}\n",
    ":80 {\n\ttls a\n}\n",
    ":80 {\n\ttls a b c\n}\n",
    ":80 {\n\tbind\n}\n",
    "{\n\thttp_port\n}\n:80 {\n}\n",
    "{\n\thttp_port 1 2\n}\n:80 {\n}\n",
    "{\n\tgrace_period\n}\n:80 {\n}\n",
    "{\n\tauto_https\n}\n:80 {\n}\n",
    "{\n\torder\n}\n:80 {\n}\n",
    "{\n\torder respond\n}\n:80 {\n}\n",
    "{\n\torder respond first extra\n}\n:80 {\n}\n",
    "{\n\torder respond before nothing\n}\n:80 {\n}\n",
    "{\n\tlog {\n\t\tlevel\n\t}\n}\n:80 {\n}\n",
    "{\n\tlog {\n\t\tbogus x\n\t}\n}\n:80 {\n}\n",
    "{\n\tlog a\n\tlog a\n}\n:80 {\n}\n",
    "{\n\tservers {\n\t\tbogus\n\t}\n}\n:80 {\n}\n",
    "{\n\tservers {\n\t\tprotocols h9\n\t}\n}\n:80 {\n}\n",
    "{\n\tservers {\n\t\ttrusted_proxies\n\t}\n}\n:80 {\n}\n",
    "{\n\tdefault_bind {\n\t\tbogus\n\t}\n}\n:80 {\n}\n",
    "{\n\tadmin localhost:2019 extra\n}\n:80 {\n}\n",
    "{\n\tdebug\n}\n:80 {\n}\n",
    ":80 {\n\terror\n}\n",
    ":80 {\n\trespond {\n\t\tbody a\n\t\tbody b\n\t}\n}\n",
    ":80 {\n\tlog {\n\t\toutput stdout\n\t}\n}\n",
    "http://localhost {\n\trespond hi\n}\n",
    ":80/path {\n\trespond hi\n}\n",
    "localhost:80 {\n\trespond hi\n}\n",
    "[::1]:8080 {\n\ttls a.pem b.pem\n}\n",
    "*.example.com:8443 {\n\ttls a.pem b.pem\n}\n",
    ":80 {\n\tredir /a /b html\n}\n",
    ":80 {\n\tlog_skip x\n}\n",
]


@pytest.mark.parametrize("text", PARITY)
def test_same_verdict_as_real_caddy(text: str, tmp_path) -> None:
    accepted, message = caddy_adapt(text, tmp_path)
    try:
        load_config(text)
        ours = (True, "")
    except CaddyfileError as exc:
        ours = (False, str(exc))
    assert ours == (accepted, "" if accepted else message)
