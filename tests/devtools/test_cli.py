"""The `durable-stream` CLI end to end: a subprocess against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import aiohttp
import pytest
from aiohttp import web

from durable_streams.server.testing import DurableStreamTestServer


async def http(method: str, url: str, **kwargs) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, **kwargs) as resp:
            return resp.status, dict(resp.headers), await resp.read()


async def test_create_then_write_stdin_and_read_back_exact_bytes(server, run_cli):
    payload = bytes(range(256)) * 64 + b"\r\n\x00end"
    created = await run_cli("create", "team/a/log", base_url=server.url)
    assert created.returncode == 0, created.stderr
    assert created.text.strip() == f"{server.url}/team/a/log"

    written = await run_cli("write", "team/a/log", base_url=server.url, stdin=payload)
    assert written.returncode == 0, written.stderr

    status, headers, body = await http("GET", f"{server.url}/team/a/log")
    assert (status, body) == (200, payload)
    assert headers["Content-Type"] == "application/octet-stream"

    read = await run_cli("read", "team/a/log", "--no-follow", base_url=server.url)
    assert read.returncode == 0, read.stderr
    assert read.stdout == payload


async def test_write_arguments_use_the_streams_content_type(server, run_cli):
    assert (await run_cli("create", "notes", "--content-type", "text/plain", base_url=server.url)).returncode == 0
    result = await run_cli("write", "notes", "hello", "world", base_url=server.url)
    assert result.returncode == 0, result.stderr
    status, headers, body = await http("GET", f"{server.url}/notes")
    assert body == b"hello world"
    assert headers["Content-Type"] == "text/plain"


async def test_json_write_flattens_one_level_and_read_prints_one_message_per_line(server, run_cli):
    assert (await run_cli("create", "events", "--json", base_url=server.url)).returncode == 0
    first = await run_cli("write", "events", '[{"n": 1}, [2, 3]]', base_url=server.url)
    assert first.returncode == 0, first.stderr
    # JSON Lines on stdin: one message per line (a line's own array is flattened too).
    second = await run_cli("write", "events", base_url=server.url, stdin=b'{"n": 4}\n"five"\n[[6]]\n')
    assert second.returncode == 0, second.stderr

    _, _, body = await http("GET", f"{server.url}/events")
    assert json.loads(body) == [{"n": 1}, [2, 3], {"n": 4}, "five", [6]]

    read = await run_cli("read", "events", "--no-follow", base_url=server.url)
    assert read.returncode == 0, read.stderr
    assert [json.loads(line) for line in read.text.splitlines()] == [{"n": 1}, [2, 3], {"n": 4}, "five", [6]]


async def test_json_input_errors_are_one_clear_line(server, run_cli):
    assert (await run_cli("create", "j", "--json", base_url=server.url)).returncode == 0
    for bad in ("{not json", "[]"):
        result = await run_cli("write", "j", bad, base_url=server.url)
        assert result.returncode == 1
        assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1, result.stderr
    _, headers, _ = await http("HEAD", f"{server.url}/j")
    assert headers["Stream-Next-Offset"].endswith("_0000000000000000")


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_follow_receives_a_write_made_after_it_started_then_ctrl_c(server, start_cli, live, run_cli):
    await http("PUT", f"{server.url}/chat/room-1", headers={"Content-Type": "application/json"}, data=b'{"m": "old"}')
    reader = await start_cli("read", "chat/room-1", "--live", live, base_url=server.url)
    assert json.loads(await reader.readline()) == {"m": "old"}

    written = await run_cli("write", "chat/room-1", '{"m": "new"}', base_url=server.url)
    assert written.returncode == 0, written.stderr
    assert json.loads(await reader.readline()) == {"m": "new"}

    reader.proc.send_signal(signal.SIGINT)
    returncode, stderr = await reader.wait()
    assert returncode == 130
    assert "Traceback" not in stderr


async def test_piped_stdin_is_appended_as_it_arrives_and_ctrl_c_stops_cleanly(server, start_cli):
    url = f"{server.url}/tail"
    await http("PUT", url, headers={"Content-Type": "text/plain"})
    writer = await start_cli("write", "tail", base_url=server.url, stdin_pipe=True)
    writer.proc.stdin.write(b"line 1\n")
    await writer.proc.stdin.drain()
    # The input is still open, yet what arrived so far must reach the stream.
    for _ in range(300):
        _, _, body = await http("GET", url)
        if body:
            break
        await asyncio.sleep(0.1)
    assert body == b"line 1\n"
    writer.proc.send_signal(signal.SIGINT)
    returncode, stderr = await writer.wait()
    assert (returncode, stderr) == (130, "")


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_follow_ends_when_the_stream_is_closed(server, start_cli, live):
    await http("PUT", f"{server.url}/job", headers={"Content-Type": "text/plain"}, data=b"step 1\n")
    reader = await start_cli("read", "job", "--live", live, base_url=server.url)
    assert await reader.readline() == b"step 1\n"
    await http("POST", f"{server.url}/job", headers={"Content-Type": "text/plain", "Stream-Closed": "true"},
               data=b"done\n")
    assert await reader.readline() == b"done\n"
    returncode, stderr = await reader.wait()
    assert (returncode, stderr) == (0, "")


async def test_read_from_offset_and_from_now(server, run_cli):
    url = f"{server.url}/ticks"
    await http("PUT", url, headers={"Content-Type": "text/plain"})
    _, first, _ = await http("POST", url, headers={"Content-Type": "text/plain"}, data=b"a")
    await http("POST", url, headers={"Content-Type": "text/plain"}, data=b"b")
    after_a = first["Stream-Next-Offset"]
    result = await run_cli("read", "ticks", "--no-follow", "--offset", after_a, base_url=server.url)
    assert result.stdout == b"b"

    at_end = await run_cli("read", "ticks", "--no-follow", "--offset", "now", base_url=server.url)
    assert (at_end.returncode, at_end.stdout) == (0, b"")


async def test_resume_after_server_restart_on_the_same_port(tmp_path, start_cli):
    server = DurableStreamTestServer(data_dir=str(tmp_path / "data"), long_poll_timeout=1.0)
    await server.start()
    try:
        url = f"{server.url}/logs/app"
        await http("PUT", url, headers={"Content-Type": "text/plain"}, data=b"before\n")
        reader = await start_cli("read", "logs/app", base_url=server.url)
        assert await reader.readline() == b"before\n"

        await server.stop()
        # Appended while the reader cannot reach the server: must arrive once it is back.
        offline = DurableStreamTestServer(data_dir=str(tmp_path / "data"))  # another port
        await offline.start()
        await http("POST", f"{offline.url}/logs/app", headers={"Content-Type": "text/plain"}, data=b"during\n")
        await offline.stop()

        await server.start()
        await http("POST", url, headers={"Content-Type": "text/plain"}, data=b"after\n")
        assert await reader.readline() == b"during\n"
        assert await reader.readline() == b"after\n"
        await reader.stop()
        _, stderr = await reader.wait()
        assert "resuming from offset" in stderr
    finally:
        await server.stop()


class FlakyProxy:
    """A TCP proxy that can go down (cut every connection, refuse new ones) and come back
    on the same port, like a network outage between a client and its server."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.base_events.Server | None = None

    async def come_up(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def go_down(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def _serve(self, client_reader, client_writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [client_writer, upstream_writer]

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_resume_after_a_dropped_connection_without_loss_or_duplicates(server, start_cli, live):
    url = f"{server.url}/feed"
    await http("PUT", url, headers={"Content-Type": "application/json"}, data=b'{"i": 0}')
    proxy = FlakyProxy(server.port)
    await proxy.come_up()
    try:
        via_proxy = server.url.replace(f":{server.port}/", f":{proxy.port}/")
        reader = await start_cli("read", "feed", "--live", live, base_url=via_proxy)
        assert json.loads(await reader.readline()) == {"i": 0}
        for i in (1, 2):
            await proxy.go_down()
            assert "resuming from offset" in (await reader.readline_stderr()).decode()
            # Written while the follower is cut off: it must get it after the outage, exactly once.
            await http("POST", url, headers={"Content-Type": "application/json"}, data=json.dumps({"i": i}))
            await proxy.come_up()
            assert json.loads(await reader.readline()) == {"i": i}
        await http("POST", url, headers={"Content-Type": "application/json", "Stream-Closed": "true"},
                   data=b'{"i": 3}')
        assert json.loads(await reader.readline()) == {"i": 3}
        returncode, _ = await reader.wait()
        assert returncode == 0
        assert await reader.proc.stdout.read() == b""  # nothing replayed
    finally:
        await proxy.go_down()


async def test_auth_from_flag_and_environment_is_sent_as_authorization_header(run_cli):
    seen: list[str | None] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=200, headers={"Content-Type": "text/plain", "Stream-Next-Offset": "0_0"})

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/stream"
    try:
        assert (await run_cli("head", "s", "--auth", "Bearer from-flag", base_url=base_url)).returncode == 0
        assert (await run_cli("--auth", "Bearer before-command", "head", "s", base_url=base_url)).returncode == 0
        assert (await run_cli("head", "s", base_url=base_url, STREAM_AUTH="Bearer from-env")).returncode == 0
        assert (await run_cli("head", "s", "--auth", "Basic flag-wins", base_url=base_url,
                              STREAM_AUTH="Bearer env")).returncode == 0
        assert (await run_cli("head", "s", base_url=base_url)).returncode == 0
    finally:
        await runner.cleanup()
    assert seen == ["Bearer from-flag", "Bearer before-command", "Bearer from-env", "Basic flag-wins", None]


@pytest.mark.parametrize("command", [["read", "missing", "--no-follow"], ["read", "missing"], ["head", "missing"],
                                     ["write", "missing", "x", "--content-type", "text/plain"],
                                     ["delete", "missing"], ["close", "missing"]])
async def test_missing_stream_is_one_error_line_with_status(server, command, run_cli):
    result = await run_cli(*command, base_url=server.url)
    assert result.returncode == 1
    assert result.stdout == b""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 404 "), result.stderr
    assert len(lines[0]) > len("error: 404 ")


async def test_closed_stream_write_fails_and_head_shows_closed(server, run_cli):
    await http("PUT", f"{server.url}/c", headers={"Content-Type": "text/plain"}, data=b"x")
    closed = await run_cli("close", "c", base_url=server.url)
    assert closed.returncode == 0, closed.stderr
    head = await run_cli("head", "c", base_url=server.url)
    fields = dict(line.split(": ", 1) for line in head.text.splitlines())
    assert fields["closed"] == "true"
    assert fields["content-type"] == "text/plain"
    assert fields["next-offset"] == closed.text.strip()
    write = await run_cli("write", "c", "more", base_url=server.url)
    assert write.returncode == 1 and write.stderr.startswith("error: 409 ")


async def test_idempotent_producer_writes_and_takes_over_a_newer_epoch(server, run_cli):
    url = f"{server.url}/orders"
    await http("PUT", url, headers={"Content-Type": "text/plain"})
    for word in ("a", "b"):  # each run is a new process: a new epoch, sequence from 0
        result = await run_cli("write", "orders", word, "--producer", "worker-1", base_url=server.url)
        assert result.returncode == 0, result.stderr
    # Another writer fenced the id with a far newer epoch: the CLI claims the next one.
    far_epoch = 10**15
    status, _, _ = await http("POST", url, data=b"c", headers={
        "Content-Type": "text/plain", "Producer-Id": "worker-1", "Producer-Epoch": str(far_epoch), "Producer-Seq": "0"})
    assert status == 200
    result = await run_cli("write", "orders", "d", "--producer", "worker-1", base_url=server.url)
    assert result.returncode == 0, result.stderr
    _, _, body = await http("GET", url)
    assert body == b"abcd"
    stale = await http("POST", url, data=b"x", headers={
        "Content-Type": "text/plain", "Producer-Id": "worker-1", "Producer-Epoch": str(far_epoch), "Producer-Seq": "1"})
    assert stale[0] == 403 and stale[1]["Producer-Epoch"] == str(far_epoch + 1)


async def test_fork_and_delete(server, run_cli):
    await http("PUT", f"{server.url}/base", headers={"Content-Type": "text/plain"}, data=b"one,")
    _, headers, _ = await http("POST", f"{server.url}/base", headers={"Content-Type": "text/plain"}, data=b"two,")
    await http("POST", f"{server.url}/base", headers={"Content-Type": "text/plain"}, data=b"three")

    whole = await run_cli("fork", "forks/whole", "--from", "base", base_url=server.url)
    assert whole.returncode == 0, whole.stderr
    assert whole.text.strip() == f"{server.url}/forks/whole"
    early = await run_cli("fork", "forks/early", "--from", "base", "--offset", headers["Stream-Next-Offset"],
                          base_url=server.url)
    assert early.returncode == 0, early.stderr
    assert (await run_cli("write", "forks/early", "!", base_url=server.url)).returncode == 0

    assert (await run_cli("read", "forks/whole", "--no-follow", base_url=server.url)).stdout == b"one,two,three"
    assert (await run_cli("read", "forks/early", "--no-follow", base_url=server.url)).stdout == b"one,two,!"

    missing_source = await run_cli("fork", "f2", "--from", "nope", base_url=server.url)
    assert missing_source.returncode == 1 and missing_source.stderr.startswith("error: 404 ")

    assert (await run_cli("delete", "forks/early", base_url=server.url)).returncode == 0
    assert (await http("HEAD", f"{server.url}/forks/early"))[0] == 404


async def test_progress_on_stderr_when_copying_a_large_stream(server, run_cli):
    size = 3 << 20
    await http("PUT", f"{server.url}/big", headers={"Content-Type": "application/octet-stream"},
               data=os.urandom(size))
    result = await run_cli("read", "big", "--no-follow", "--progress", "always", base_url=server.url)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == size
    assert result.stderr.splitlines()[-1] == f"3.0 MiB ({size} B) copied"
    # Without a terminal on stderr, "auto" stays quiet (no progress noise in logs or pipes).
    quiet = await run_cli("read", "big", "--no-follow", base_url=server.url)
    assert quiet.stderr == "" and len(quiet.stdout) == size


@pytest.mark.parametrize(("args", "message"), [
    (["head", "a/../b"], "error: invalid stream id"),
    (["head", "s", "--url", "ftp://example"], "error: invalid base URL"),
])
async def test_bad_input_is_one_error_line(args, message, run_cli):
    result = await run_cli(*args, base_url=None)
    assert result.returncode == 1
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1, result.stderr


async def test_unreachable_server_is_one_error_line(run_cli):
    # A port that was just free: nothing listens there.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    result = await run_cli("read", "s", base_url=f"http://127.0.0.1:{port}/v1/stream")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot connect to 127.0.0.1:") and len(result.stderr.splitlines()) == 1
