#!/usr/bin/env bash
# Build a single-file Linux executable, dist/durable-streams-server, with PyInstaller.
#
# PyInstaller is a build-time tool only: it is installed, together with a normal
# (non-editable) install of this project, into a private build venv, never into
# the project's runtime dependencies. The result bundles CPython, the package,
# its dependencies (aiohttp, uvloop, lark, structlog, prometheus-client) and the
# Caddyfile grammar. It runs on Linux hosts with a glibc at least as new as the
# build machine's: build on the oldest distribution you deploy to.
#
# Usage: packaging/build-executable.sh          (PYTHON=python3.12 to choose the interpreter)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=${BUILD_DIR:-$repo/build/executable}
venv=$work/venv
name=durable-streams-server

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "pyinstaller>=6.0" "$repo"
# The build venv is reused between builds; the project's code must be fresh.
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$repo"

# PyInstaller wants a script, not an entry point.
entry=$work/entry.py
cat > "$entry" <<'PY'
import sys

from durable_streams.server.cli.main import main

sys.exit(main())
PY

# The grammar is data, not code: bundle it where the wheel puts it
# (durable_streams/server/caddyfile/caddyfile.lark), so the parser finds it
# next to its own module either way. The CLI and runtime import some modules
# lazily, and uvloop loads a private submodule from C: collect them all
# (PyInstaller's own hooks cover aiohttp and its C extensions).
"$venv/bin/python" -m PyInstaller \
    --noconfirm --clean --onefile \
    --name "$name" \
    --distpath "$repo/dist" \
    --workpath "$work/pyinstaller" \
    --specpath "$work" \
    --add-data "$repo/grammar/caddyfile.lark:durable_streams/server/caddyfile" \
    --collect-submodules durable_streams \
    --collect-submodules uvloop \
    --collect-data lark \
    --log-level WARN \
    "$entry"

"$repo/dist/$name" version
echo "built $repo/dist/$name"
