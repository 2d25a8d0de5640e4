"""The `retention` subdirective of `durable_streams` (our extension): rules in file order,
Caddy durations and sizes, what adapt prints, and the errors `validate` gives."""

from __future__ import annotations

import json

import pytest

from durable_streams.server.caddyfile.errors import CaddyfileError
from durable_streams.server.config import load_config
from durable_streams.server.config.model import DurableStreams, Retention


def _site(block: str) -> str:
    return ":80 {\n\troute {\n\t\tdurable_streams {\n\t\t\t" + block + "\n\t\t}\n\t}\n}\n"


def _handler(text: str) -> DurableStreams:
    return load_config(text).servers[0].routes[0].handle[0].routes[0].handle[0]


def test_rules_in_file_order() -> None:
    ds = _handler(_site(
        "retention /v1/stream/logs/** {\n\t\t\t\tmax_age 7d\n\t\t\t}\n"
        "\t\t\tretention {\n\t\t\t\tmax_size 1GiB\n\t\t\t\tmax_age 1h30m\n\t\t\t}"))
    assert ds.retention == (
        Retention("/v1/stream/logs/**", 7 * 86400.0, None),
        Retention(None, 5400.0, 1 << 30),
    )


def test_adapt_prints_rules_and_omits_none() -> None:
    config = load_config(_site("retention * {\n\t\t\t\tmax_size 10MB\n\t\t\t}"))
    assert '"retention": [{"match": "*", "max_size": 10000000}]' in json.dumps(config.to_json())
    plain = load_config(_site("data_dir /tmp/x"))
    assert "retention" not in json.dumps(plain.to_json())  # adapts as the plugin's config


@pytest.mark.parametrize("block,message", [
    ("retention", "retention needs a block"),
    ("retention {\n\t\t\t\tmax_files 3\n\t\t\t}", "unknown subdirective: max_files"),
    ("retention {\n\t\t\t\tmax_age 0s\n\t\t\t}", "invalid max_age: must be positive"),
    ("retention {\n\t\t\t\tmax_age soon\n\t\t\t}", "invalid duration"),
    ("retention {\n\t\t\t\tmax_size lots\n\t\t\t}", "invalid max_size"),
    ("retention logs/** {\n\t\t\t\tmax_size 1MiB\n\t\t\t}", "must start with / or"),
    ("retention /a /b {\n\t\t\t\tmax_size 1MiB\n\t\t\t}", "unknown subdirective: /b"),
])
def test_config_errors(block: str, message: str) -> None:
    with pytest.raises(CaddyfileError, match=message):
        load_config(_site(block))
