#!/usr/bin/env bash
# Runs the HTTP benchmark: our server against the Node reference server, same run.
#
#   bench/run_all.sh            full set (about 4-5 minutes on 2 cores)
#   bench/run_all.sh --quick    smoke run (under a minute)
#   bench/run_all.sh --quick --tests appends,live     any other http_bench.py option passes through
#
# Installs the Node peer (npm ci in bench/node) the first time. Results: bench/results/*.json
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-$repo/.venv/bin/python}"

if ! command -v node >/dev/null 2>&1; then
    echo "run_all.sh: node (>= 18) is required for the reference peer" >&2
    exit 2
fi
if [[ ! -x "$python" ]]; then
    echo "run_all.sh: $python not found (create the venv, or set PYTHON=...)" >&2
    exit 2
fi

# (Re)install the peer when it is missing or the lockfile changed since the last install.
node_dir="$here/node"
if [[ ! -f "$node_dir/node_modules/.package-lock.json" \
      || "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]]; then
    echo "installing the Node peer (npm ci in bench/node)..."
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

cd "$repo"
exec "$python" "$here/http_bench.py" "$@"
