import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from pg_fixtures import pg_cluster, pg_dsn  # noqa: E402,F401
