"""`durable-streams-server` subcommands: output, exit codes, messages (no tracebacks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from durable_streams.server import __version__
from durable_streams.server.cli import main as cli
from durable_streams.server.config import DEV_CADDYFILE, load_config

SCRIPT = Path(sys.executable).parent / "durable-streams-server"
GOOD = ":4437 {\n\troute /v1/stream/* {\n\t\tdurable_streams {\n\t\t\tdata_dir {$DS_DIR:./data}\n\t\t}\n\t}\n}\n"


def run_cli(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, input=stdin, timeout=60)


def test_version(tmp_path) -> None:
    proc = run_cli("version", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, f"durable-streams-server {__version__}\n")


@pytest.mark.parametrize("command", ["run", "reload", "dev", "adapt", "validate", "fmt", "version"])
def test_help_on_every_command(command, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    assert f"usage: durable-streams-server {command}" in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2


def test_adapt_prints_config_json(tmp_path) -> None:
    (tmp_path / "Caddyfile").write_text(GOOD)
    proc = run_cli("adapt", "--config", "Caddyfile", "--pretty", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("{\n  ")
    data = json.loads(proc.stdout)
    assert data == load_config(GOOD).to_json()
    server = data["apps"]["http"]["servers"]["srv0"]
    assert server["listen"] == [":4437"]
    assert "./data" in proc.stdout


def test_adapt_uses_envfile(tmp_path) -> None:
    (tmp_path / "Caddyfile").write_text(GOOD)
    (tmp_path / "ds.env").write_text("# comment\nexport DS_DIR=/srv/streams\n")
    proc = run_cli("adapt", "--config", "Caddyfile", "--envfile", "ds.env", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "/srv/streams" in proc.stdout


def test_adapt_defaults_to_adjacent_caddyfile(tmp_path) -> None:
    (tmp_path / "Caddyfile").write_text(GOOD)
    assert run_cli("adapt", cwd=tmp_path).returncode == 0


def test_adapt_shows_warnings_on_stderr(tmp_path) -> None:
    (tmp_path / "Caddyfile").write_text("{\n\tpersist_config off\n}\n" + GOOD)
    proc = run_cli("adapt", "--config", "Caddyfile", cwd=tmp_path)
    assert proc.returncode == 0
    assert "WARNING: Caddyfile:2: global option 'persist_config' accepted but ignored" in proc.stderr


@pytest.mark.parametrize("command", ["adapt", "validate", "run"])
def test_bad_config_exits_1_with_one_message(tmp_path, command) -> None:
    (tmp_path / "Caddyfile").write_text(":4437 {\n\tfrobnicate\n}\n")
    proc = run_cli(command, "--config", "Caddyfile", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == "Error: adapting config using caddyfile: Caddyfile:2: unrecognized directive: frobnicate\n"
    assert proc.stdout == ""


def test_syntax_error_exits_1(tmp_path) -> None:
    (tmp_path / "Caddyfile").write_text(":4437 {\n\trespond hi\n")
    proc = run_cli("validate", "--config", "Caddyfile", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: adapting config using caddyfile: ")
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_missing_config_file(tmp_path) -> None:
    proc = run_cli("validate", "--config", "nope.caddy", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (1, "Error: reading config file: open nope.caddy: no such file or directory\n")
    proc = run_cli("adapt", cwd=tmp_path)
    assert proc.returncode == 1 and "no ./Caddyfile" in proc.stderr


def test_missing_envfile(tmp_path) -> None:
    (tmp_path / "Caddyfile").write_text(GOOD)
    proc = run_cli("adapt", "--envfile", "missing.env", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: loading environment file:")


def test_validate(tmp_path) -> None:
    (tmp_path / "Caddyfile").write_text(GOOD)
    proc = run_cli("validate", "--config", "Caddyfile", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "Valid configuration\n")


def test_validate_reports_automatic_certificates_and_their_issuers(tmp_path) -> None:
    store = tmp_path / "store"
    (tmp_path / "Caddyfile").write_text(
        f"{{\n\temail ops@example.com\n\tstorage file_system {store}\n}}\n"
        "streams.example.com {\n\trespond a\n}\n"
        "localhost:4437 {\n\trespond b\n}\n"
        "b.example.com {\n\ttls {\n\t\tissuer acme https://ca.test/dir\n\t\tissuer internal\n\t}\n}\n"
        "c.example.com {\n\ttls internal\n}\n"
    )
    proc = run_cli("validate", "--config", "Caddyfile", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "Valid configuration\n")
    assert sorted(proc.stderr.splitlines()) == [
        "automatic HTTPS: b.example.com: ACME https://ca.test/dir (then local CA)",
        f"automatic HTTPS: c.example.com: local CA, stored in {store}/certificates/local/c.example.com",
        f"automatic HTTPS: localhost: local CA, stored in {store}/certificates/local/localhost",
        "automatic HTTPS: streams.example.com: ACME https://acme-v02.api.letsencrypt.org/directory (then ZeroSSL)",
    ]


def test_validate_loads_certificates(tmp_path) -> None:
    (tmp_path / "Caddyfile").write_text("a.test:8443 {\n\ttls missing.crt missing.key\n\trespond hi\n}\n")
    proc = run_cli("validate", "--config", "Caddyfile", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: loading TLS certificate for srv0:")


def test_fmt(tmp_path) -> None:
    messy = ":4437 {\nroute /v1/stream/* {\ndurable_streams\n}\n}\n"
    tidy = ":4437 {\n\troute /v1/stream/* {\n\t\tdurable_streams\n\t}\n}\n"
    path = tmp_path / "Caddyfile"
    path.write_text(messy)
    proc = run_cli("fmt", cwd=tmp_path)
    assert proc.stdout == tidy
    assert proc.returncode == 1 and proc.stderr.startswith("Error: Caddyfile:2: Caddyfile input is not formatted")
    proc = run_cli("fmt", "Caddyfile", "--diff", cwd=tmp_path)
    assert "- route /v1/stream/* {" in proc.stdout and "+ \troute /v1/stream/* {" in proc.stdout
    assert run_cli("fmt", "--overwrite", cwd=tmp_path).returncode == 0
    assert path.read_text() == tidy
    proc = run_cli("fmt", "Caddyfile", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, tidy)
    proc = run_cli("fmt", "-", cwd=tmp_path, stdin=messy)
    assert (proc.returncode, proc.stdout) == (0, tidy)


def test_fmt_overwrite_and_diff_are_exclusive(tmp_path) -> None:
    assert run_cli("fmt", "--overwrite", "--diff", cwd=tmp_path).returncode == 2


def test_dev_runs_the_embedded_config(monkeypatch, capsys) -> None:
    seen = {}

    def fake_run(config, **kw):
        seen["config"] = config
        return 0

    import durable_streams.server.runtime.app as app_module

    monkeypatch.setattr(app_module, "run", fake_run)
    assert cli.main(["dev"]) == 0
    assert seen["config"] == load_config(DEV_CADDYFILE)
    banner = capsys.readouterr().err
    assert "http://localhost:4437/<name>" in banner and "in-memory" in banner
    # Like the Node dev server: one catch-all handler, so every path is a stream.
    (route,) = seen["config"].to_json()["apps"]["http"]["servers"]["srv0"]["routes"]
    assert "match" not in route

    assert cli.main(["dev", "--port", "5001"]) == 0
    assert [str(a) for a in seen["config"].servers[0].listen] == [":5001"]
    assert "http://localhost:5001/<name>" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_dev_rejects_a_bad_port(port, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["dev", "--port", port])
    assert info.value.code == 2
    assert f"invalid port '{port}': expected 1-65535" in capsys.readouterr().err


def test_run_without_caddyfile_uses_dev_default(tmp_path, monkeypatch) -> None:
    seen = {}
    import durable_streams.server.runtime.app as app_module

    monkeypatch.setattr(app_module, "run", lambda config, **kw: seen.setdefault("config", config) and 0)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run"]) == 0
    assert seen["config"] == load_config(DEV_CADDYFILE)
    (tmp_path / "Caddyfile").write_text(":5000 {\n\trespond hi\n}\n")
    seen.clear()
    assert cli.main(["run"]) == 0
    assert [str(a) for a in seen["config"].servers[0].listen] == [":5000"]


def test_run_reports_port_in_use(tmp_path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        (tmp_path / "Caddyfile").write_text(f":{port} {{\n\tbind 127.0.0.1\n\trespond hi\n}}\n")
        proc = run_cli("run", "--config", "Caddyfile", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Error: starting server:" in proc.stderr and "Traceback" not in proc.stderr
