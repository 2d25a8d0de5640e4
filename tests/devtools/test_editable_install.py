"""A contributor's editable install (`pip install -e .`) beside the PyPI client
`durable-streams`: both import, and `durable_streams.server` is the work tree. The client's
regular package would otherwise hide our namespace package (packaging/hatch_build.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import CLIENT_REQUIREMENT, INSTALL_TIMEOUT, REPO

CHECK = """
import durable_streams, durable_streams.server as server
from durable_streams import DurableStream, stream  # the client
from durable_streams.server.caddyfile.lexer import tokenize  # our code, from the work tree
print(server.__path__[0])
print(durable_streams.__file__)
"""


def _run(*command, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, command))}:\n{done.stdout}\n{done.stderr}"
    return done


def test_editable_install_beside_the_client(tmp_path: Path):
    _run(sys.executable, "-m", "hatchling", "build", "-t", "wheel:editable", "-d", tmp_path / "dist", cwd=REPO)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    # the client with its dependencies, and the one our import below needs (lark)
    _run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", CLIENT_REQUIREMENT, "lark")
    _run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", wheel)
    server_path, client_file = _run(python, "-c", CHECK, cwd=tmp_path).stdout.split()
    assert Path(server_path) == REPO / "durable_streams" / "server"
    assert "site-packages" in client_file  # the client is still the installed one
