"""The `postgres` subdirective of `durable_streams` (our extension): the shared store's
DSN and pool size, what adapt prints, and the errors `validate` gives."""

from __future__ import annotations

import pytest

from durable_streams.server.caddyfile.errors import CaddyfileError
from durable_streams.server.config import load_config
import json

from durable_streams.server.config.dsn import check_dsn
from durable_streams.server.config.model import DurableStreams, Postgres


def _site(block: str) -> str:
    return ":80 {\n\troute {\n\t\tdurable_streams {\n\t\t\t" + block + "\n\t\t}\n\t}\n}\n"


def _handler(text: str) -> DurableStreams:
    route = load_config(text).servers[0].routes[0]
    return route.handle[0].routes[0].handle[0] if not isinstance(route.handle[0], DurableStreams) else route.handle[0]


def test_postgres_dsn_and_default_pool() -> None:
    ds = _handler(_site('postgres "postgresql://ds@db.internal:5432/streams?sslmode=require"'))
    assert ds.postgres == Postgres("postgresql://ds@db.internal:5432/streams?sslmode=require", 10)
    assert ds.data_dir is None


def test_postgres_pool_size_block_and_env(monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://ds:secret@db:5432/streams")
    ds = _handler(_site("postgres {$DATABASE_URL} {\n\t\t\t\tpool_size 32\n\t\t\t}"))
    assert ds.postgres == Postgres("postgresql://ds:secret@db:5432/streams", 32)
    # libpq's key=value form has spaces: it is one token only when quoted
    ds = _handler(_site('postgres "host=/run/postgresql dbname=streams"'))
    assert ds.postgres.dsn == "host=/run/postgresql dbname=streams"


def test_adapt_prints_the_store() -> None:
    config = load_config(_site("postgres postgres://localhost/streams {\n\t\t\t\tpool_size 4\n\t\t\t}"))
    text = json.dumps(config.to_json())
    assert '"postgres": {"dsn": "postgres://localhost/streams", "pool_size": 4}' in text


@pytest.mark.parametrize("block,message", [
    ("data_dir /var/lib/ds\n\t\t\tpostgres postgres://db/x", "data_dir and postgres cannot be used together"),
    ("postgres mysql://db/x", "unsupported scheme 'mysql'"),
    ("postgres", "wrong argument count"),
    ("postgres postgres://db/x {\n\t\t\t\tpool_size 1\n\t\t\t}", "invalid pool_size"),
    ("postgres postgres://db/x {\n\t\t\t\tpool_size many\n\t\t\t}", "invalid pool_size"),
    ("postgres postgres://db/x {\n\t\t\t\tmax_conns 5\n\t\t\t}", "unknown subdirective: max_conns"),
    ('postgres "host=db port"', "malformed key=value"),
])
def test_config_errors(block: str, message: str) -> None:
    with pytest.raises(CaddyfileError, match=message):
        load_config(_site(block))


@pytest.mark.parametrize("dsn,ok", [
    ("postgresql://u:p@h:5432/d?sslmode=verify-full", True),
    ("postgres:///d?host=/tmp", True),
    ("postgresql://h:notaport/d", False),
    ("host=h port=5432 dbname=d password='a b'", True),
    ("host=h =x", False),
    ("   ", False),
])
def test_dsn_syntax(dsn: str, ok: bool) -> None:
    assert (check_dsn(dsn) is None) is ok
