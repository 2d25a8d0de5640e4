#!/usr/bin/env bash
# Install everything from scratch into .venv (and the conformance suite into
# conformance/node_modules), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
if [ -f conformance/package.json ]; then
  (cd conformance && npm ci --no-audit --no-fund --loglevel=error)
fi
exec .venv/bin/python -m pytest "$@"
