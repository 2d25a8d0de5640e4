"""Fixtures of a real PostgreSQL (imported by the conftests of tests/postgres,
tests/engine, tests/retention and tests/subscriptions): one throwaway server per test session (pg_cluster.py), a fresh database
per test. In CI (`CI` set) a PostgreSQL that cannot be started fails these tests;
elsewhere they are skipped with the reason."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from pg_cluster import PgCluster, PostgresUnavailable

_databases = itertools.count(1)


def running_cluster(**options) -> Iterator[PgCluster]:
    """A started throwaway server, stopped (immediate) and removed afterwards; a failure
    in CI, a skip elsewhere, when none can be started."""
    try:
        cluster = PgCluster(**options).init().start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        cluster.remove()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    yield from running_cluster()


def new_database(cluster: PgCluster) -> str:
    """The DSN of a new empty database on `cluster`."""
    name = f"t{os.getpid()}_{next(_databases)}"
    cluster.psql(f"CREATE DATABASE {name}")
    return cluster.dsn.replace("/postgres?", f"/{name}?")


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> str:
    """A new empty database on the session's server."""
    return new_database(pg_cluster)


@pytest.fixture(scope="module")
def make_dsn(request):
    """A function returning a new empty database's DSN, for modules whose tests run on
    several stores: PostgreSQL is started on first use only (and skipped, or failed in
    CI, as above when it cannot start)."""
    return lambda: new_database(request.getfixturevalue("pg_cluster"))
