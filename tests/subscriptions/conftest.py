import os
import sys

import pytest

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "retention"))  # retention_servers: the process launcher
sys.path.insert(0, os.path.join(HERE, "..", "postgres"))
from pg_fixtures import make_dsn, pg_cluster  # noqa: E402,F401
from retention_servers import client  # noqa: E402


@pytest.fixture(scope="module")
def http():
    """A blocking HTTP client for a module's tests."""
    with client() as c:
        yield c
