import os
import sys

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "postgres"))
from pg_fixtures import make_dsn, pg_cluster  # noqa: E402,F401
