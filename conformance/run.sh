#!/usr/bin/env bash
# Run the official Durable Streams conformance suite against a server.
#   conformance/run.sh http://127.0.0.1:4437 [extra vitest args]
# The URL is the origin: the suite appends /v1/stream/<name> to it.
# Exit status is vitest's (0 = every test passed).
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 BASE_URL [vitest args...]" >&2
  exit 2
fi
url=$1
shift
cd "$(dirname "$0")"
command -v npm >/dev/null || { echo "error: node/npm are required (Node 20+)" >&2; exit 2; }
if [ ! -f node_modules/@durable-streams/server-conformance-tests/dist/test-runner.js ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
# The suite reads its target from CONFORMANCE_TEST_URL (dist/test-runner.js).
export CONFORMANCE_TEST_URL=$url
exec node_modules/.bin/vitest run --config vitest.config.mjs --no-coverage --reporter=default "$@"
