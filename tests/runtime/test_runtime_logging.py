"""Logging: JSON lines off a terminal, level from the config, access logs from site `log`."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest
import structlog

from durable_streams.server.ops.logging import configure_logging

from .helpers import port_of, serve


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    structlog.reset_defaults()


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_json_lines_and_level(tmp_path) -> None:
    out = tmp_path / "log.jsonl"
    configure_logging("WARNING", output="file", file_path=str(out))
    log = structlog.get_logger("durable_streams.test")
    log.info("hidden")
    log.warning("shown", key=1)
    logging.getLogger("aiohttp.test").error("stdlib too")
    entries = _lines(out)
    assert [e["event"] for e in entries] == ["shown", "stdlib too"]
    assert entries[0]["level"] == "warning" and entries[0]["key"] == 1 and "timestamp" in entries[0]
    assert entries[1]["logger"] == "aiohttp.test"


def test_console_format_when_asked(tmp_path) -> None:
    out = tmp_path / "log.txt"
    configure_logging("INFO", fmt="console", output="file", file_path=str(out))
    structlog.get_logger("x").info("hello", n=2)
    text = out.read_text()
    assert "hello" in text and "n=2" in text and not text.lstrip().startswith("{")


@pytest.mark.asyncio
async def test_site_log_directive_writes_access_lines(tmp_path) -> None:
    out = tmp_path / "access.jsonl"
    configure_logging("INFO", output="file", file_path=str(out))
    async with serve(":0 {\n\tbind 127.0.0.1\n\tlog\n\tlog_skip /health\n\trespond /x hi 201\n}\n") as app:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port_of(app)}/health") as r:
                assert r.status == 200
            async with session.get(f"http://127.0.0.1:{port_of(app)}/x?q=1") as r:
                assert r.status == 201
    access = [e for e in _lines(out) if e["event"] == "handled request"]
    assert len(access) == 1
    assert (access[0]["method"], access[0]["uri"], access[0]["status"]) == ("GET", "/x?q=1", 201)


def test_unconfigured_structlog_writes_to_stderr_not_stdout() -> None:
    import subprocess
    import sys

    code = (
        "import structlog\n"
        "import durable_streams.server.runtime.app\n"  # what the CLI and embedders import
        "structlog.get_logger('x').info('hello-from-structlog')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "hello-from-structlog" in done.stderr


@pytest.mark.asyncio
async def test_malformed_request_is_one_warning_line(tmp_path) -> None:
    out = tmp_path / "log.jsonl"
    configure_logging("INFO", output="file", file_path=str(out))
    async with serve(":0 {\n\tbind 127.0.0.1\n\trespond ok\n}\n") as app:
        import asyncio

        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(app))
        writer.write(b"GET /x?token=abc HTTP/1.1\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 431 ")
        writer.close()
    text = out.read_text()
    assert "Traceback" not in text and "bbbbbbbb" not in text and "abc" not in text
    (entry,) = [e for e in _lines(out) if e["logger"] == "durable_streams.server.http"]
    assert entry["level"] == "warning"
    assert entry["event"].startswith("malformed request from 127.0.0.1: header line longer than")
