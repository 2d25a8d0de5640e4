#!/usr/bin/env bash
# Install everything from scratch into .venv (and the conformance suite into
# conformance/node_modules), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# The PostgreSQL store's tests start a throwaway PostgreSQL server (tests/postgres).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1 \
    && command -v apt-get >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
  $SUDO apt-get install -y -q postgresql >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q postgresql >/dev/null; }
fi
# The ACME tests run Pebble, Let's Encrypt's test CA, with its mock DNS (tests/acme).
if ! command -v pebble >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
  $SUDO apt-get install -y -q pebble >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q pebble >/dev/null; }
fi
# The benchmarks' smoke tests drive both servers with wrk, a C load generator (tests/bench).
if ! command -v wrk >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
  $SUDO apt-get install -y -q wrk >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q wrk >/dev/null; }
fi
# h2load (nghttp2-client): the HTTP/2 benchmark's load generator (tests/bench/test_h2_bench.py).
if ! command -v h2load >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
  $SUDO apt-get install -y -q nghttp2-client >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q nghttp2-client >/dev/null; }
fi
if [ -f conformance/package.json ]; then
  (cd conformance && npm ci --no-audit --no-fund --loglevel=error)
fi
# The Node reference server, the peer of the benchmarks' smoke tests.
if [ -f bench/node/package.json ]; then
  (cd bench/node && npm ci --no-audit --no-fund --loglevel=error)
fi
exec .venv/bin/python -m pytest "$@"
