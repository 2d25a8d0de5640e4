import itertools
import os
import sys

import pytest

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "retention"))  # retention_servers: the process launcher
sys.path.insert(0, os.path.join(HERE, "..", "postgres"))
from pg_fixtures import pg_cluster  # noqa: E402,F401
from retention_servers import client  # noqa: E402

_databases = itertools.count(1)


@pytest.fixture(scope="module")
def make_dsn(request):
    """A function returning a new empty database's DSN (PostgreSQL started on first use)."""
    def make() -> str:
        cluster = request.getfixturevalue("pg_cluster")
        name = f"s{os.getpid()}_{next(_databases)}"
        cluster.psql(f"CREATE DATABASE {name}")
        return cluster.dsn.replace("/postgres?", f"/{name}?")
    return make


@pytest.fixture(scope="module")
def http():
    """A blocking HTTP client for a module's tests."""
    with client() as c:
        yield c
