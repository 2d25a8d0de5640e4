"""Issue #4's acceptance test: SIGKILL the real daemon under concurrent HTTP writers.

The daemon (`durable-streams-server run`, file store) serves many writers at once:
binary and JSON streams with and without idempotent producer headers, one with
Stream-Seq, one JSON stream shared by two producers and a plain writer, writers that
create streams and close them (close-only and append-and-close, with and without a
producer), a writer that forks streams (and forks of forks) at acknowledged offsets
and appends to the forks, and writers that create, delete and re-create one path.
Every writer records each acknowledged request (2xx, response fully read) and the
one request it had in flight when the server died.

Five times, at a seeded random moment, the server is SIGKILLed (sometimes a second
time while it starts again; once after the writers went quiet, so the log ends with
acknowledged records only), restarted on the same data_dir, and checked over HTTP:
- every acknowledged write is there exactly once and in order; the in-flight request
  is there entirely or not at all (append-and-close: data and closure together;
  delete: gone, never an old incarnation back);
- closed streams are still closed (HEAD) and refuse appends with 409;
- forks read back their inherited prefix plus their own appends;
- offsets acknowledged before the crash still address the same data;
- Stream-Seq survived (replaying the last accepted value is refused with 409);
- a producer retrying its in-flight request gets 204 if it was committed, 200 if
  not (never a false 409), then continues with the next seq; retrying its last
  committed request is always a 204 duplicate;
- re-sending an in-flight PUT gives 200 (it landed) or 201, a DELETE 404 or 204.
Finally a clean stop (SIGTERM) and restart must keep everything as well.
The store checkpoints every 128 KiB of log ($DURABLE_STREAMS_CHECKPOINT_BYTES), so kills
also land around checkpoints; the test checks that checkpoints happened.
Set DS_CRASH_SEED to replay another schedule.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

COMMAND = Path(sys.executable).parent / "durable-streams-server"
SEED = int(os.environ.get("DS_CRASH_SEED", "4004"))
ROUNDS = 5
CHECKPOINT_BYTES = 128 << 10
RUN_SECONDS = (0.7, 2.0)  # how long writers run before the kill (seeded)
STREAMS = "/v1/stream"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ the daemon


class Daemon:
    """One `durable-streams-server run` process at a time on a fixed data_dir."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.proc: subprocess.Popen | None = None
        self.base = ""
        self.starts = 0

    async def start(self, http: aiohttp.ClientSession) -> None:
        """Start the server and wait until it answers HTTP."""
        self._spawn()
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                log = self.log.read_text()
                # Someone else took the free port between our probe and its bind: try another.
                assert "address already in use" in log and time.monotonic() < deadline, (
                    f"server exited at start:\n{log[-3000:]}"
                )
                self._spawn()
            try:
                async with http.head(f"{self.base}{STREAMS}/__ready_probe") as resp:
                    if resp.status == 404:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, f"server not ready:\n{self.log.read_text()[-3000:]}"
            await asyncio.sleep(0.05)

    async def crash_during_start(self, delay: float) -> None:
        """A second crash while the server starts (importing, recovering, or just up)."""
        self._spawn()
        await asyncio.sleep(delay)
        self.kill()

    def _spawn(self) -> None:
        port = _free_port()
        caddyfile = self.tmp_path / "Caddyfile"
        caddyfile.write_text(
            f"http://127.0.0.1:{port} {{\n"
            "\tbind 127.0.0.1\n"
            f"\troute {STREAMS}/* {{\n"
            "\t\tdurable_streams {\n"
            f"\t\t\tdata_dir {self.data_dir}\n"
            "\t\t\tlong_poll_timeout 1s\n"
            "\t\t}\n"
            "\t}\n"
            "}\n"
        )
        env = {**os.environ, "DURABLE_STREAMS_CHECKPOINT_BYTES": str(CHECKPOINT_BYTES)}
        self.starts += 1
        self.log = self.tmp_path / f"server-{self.starts}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(COMMAND), "run", "--config", str(caddyfile)], stdout=out, stderr=out, env=env
            )
        self.base = f"http://127.0.0.1:{port}"

    def kill(self) -> None:
        """SIGKILL (no chance to flush or checkpoint) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
            self.proc = None

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        self.proc = None
        return code

    def wal_generation(self) -> int:
        """The newest log file's number: each checkpoint starts the next one."""
        names = [n for n in os.listdir(self.data_dir / "wal") if n.endswith(".wal")]
        return max((int(n.split(".")[0]) for n in names), default=0)


# ------------------------------------------------------------------ the model


@dataclass
class Request:
    """One HTTP request exactly as sent, so it can be re-sent after a restart."""

    method: str
    headers: dict[str, str]
    body: bytes
    units: list  # what it adds to the stream if it lands (bytes chunks or JSON values)
    close: bool = False
    producer_seq: int | None = None
    stream_seq: int | None = None
    reached_server: bool = False  # sent, then the connection broke before a full response


@dataclass
class Model:
    """What a stream must contain: every acknowledged write, plus (maybe) one in flight."""

    path: str
    json: bool
    # "long": one writer all test; "shared": one of several writers of a stream; "closer":
    # created then closed; "fork"; "recycled": created, deleted, re-created at one path
    kind: str
    writer: str = ""  # for "shared": whose messages in the stream this model describes
    units: list = field(default_factory=list)
    created: bool = False
    closed: bool = False
    pending: Request | None = None
    producer: str | None = None
    next_seq: int = 0
    stream_seq: int | None = None  # last accepted Stream-Seq counter (writer that uses it)
    offsets: list[tuple[str, int]] = field(default_factory=list)  # acked (offset, units before it)
    last_producer_write: Request | None = None  # the producer's last committed request

    @property
    def name(self) -> str:
        return self.writer or self.path

    @property
    def content_type(self) -> str:
        return JSON_TYPE if self.json else BINARY_TYPE

    def observable(self) -> tuple:
        """(exists, content, closed) as a reader sees it."""
        return (self.created, _flatten(self.units, self.json) if self.created else None, self.closed and self.created)

    def committed(self, request: Request) -> "Model":
        """This expectation with `request` carried out (the model itself is unchanged)."""
        other = copy.copy(self)
        other.commit(request)
        return other

    def commit(self, request: Request) -> None:
        """Fold a request known to be committed into the expectation (reassigning, never
        mutating, its lists: `committed` relies on that)."""
        if request.method == "DELETE":
            self.units, self.created, self.closed, self.offsets = [], False, False, []
            return
        self.units = self.units + request.units if request.method == "POST" else list(request.units)
        self.created = True
        self.closed = self.closed or request.close
        if request.stream_seq is not None:
            self.stream_seq = request.stream_seq
        if request.producer_seq is not None:
            self.next_seq = request.producer_seq + 1
            self.last_producer_write = request


class Failures(list):
    def add(self, model: Model | None, what: str) -> None:
        self.append(f"{model.path if model else '-'}: {what}")


def _flatten(content: Any, is_json: bool) -> Any:
    return content if is_json else b"".join(content)


def _encode_units(units: list, is_json: bool, rng: random.Random) -> bytes:
    if not is_json:
        return b"".join(units)
    if len(units) == 1 and not isinstance(units[0], list) and rng.random() < 0.5:
        return json.dumps(units[0]).encode()  # a single value: one message
    return json.dumps(units).encode()  # an array: flattened one level into messages


def _writer_of(unit: Any) -> str:
    return unit["w"] if isinstance(unit, dict) else unit[2]


def _make_units(name: str, counter: int, is_json: bool, rng: random.Random) -> list:
    count = rng.randint(1, 3) if is_json else 1
    units = []
    for k in range(count):
        if is_json:
            pad = "".join(rng.choice("abcdé€𝄞 \"\\\n") for _ in range(rng.randrange(0, 200)))
            unit: Any = {"w": name, "n": counter, "k": k, "pad": pad}
            if rng.random() < 0.1:
                unit = [counter, k, name]  # an array inside the batch stays one message
            units.append(unit)
        else:
            size = rng.randrange(20_000, 90_000) if rng.random() < 0.05 else rng.randrange(0, 2000)
            units.append(f"<{name}#{counter}>".encode() + rng.randbytes(size))
    return units


# ------------------------------------------------------------------ HTTP helpers


async def _send(http: aiohttp.ClientSession, base: str, path: str, request: Request):
    """(status, headers), or None when no complete response arrived."""
    try:
        async with http.request(request.method, base + path, headers=request.headers, data=request.body) as resp:
            await resp.read()
            return resp.status, resp.headers
    except aiohttp.ClientConnectorError:
        return None  # never reached the server (it was already dead)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        request.reached_server = True
        return None


async def _answered(http, base: str, path: str, request: Request):
    """(status, headers) from a server that must be up (after a restart)."""
    result = await _send(http, base, path, request)
    assert result is not None, f"no answer to {request.method} {path} from the restarted server"
    return result


def _protocol_headers(headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith(("stream-", "producer-"))}


async def _read_all(http, base: str, model: Model, offset: str = "-1") -> tuple[list, str]:
    """Every message from `offset`, following Stream-Next-Offset until Stream-Up-To-Date."""
    units: list = []
    for _ in range(100_000):
        async with http.get(base + model.path, params={"offset": offset}) as resp:
            body = await resp.read()
            assert resp.status == 200, f"{model.path}: GET offset={offset} -> {resp.status} {body[:200]!r}"
            next_offset = resp.headers["Stream-Next-Offset"]
            up_to_date = resp.headers.get("Stream-Up-To-Date", "").lower() == "true"
        units.extend(json.loads(body) if model.json else [body])
        if up_to_date:
            return units, next_offset
        assert next_offset != offset, f"{model.path}: read made no progress at {offset}"
        offset = next_offset
    raise AssertionError(f"{model.path}: endless read")


def _post(model: Model, units: list, rng: random.Random, *, close: bool = False, stream_seq: int | None = None) -> Request:
    headers = {"Content-Type": model.content_type}
    if close:
        headers["Stream-Closed"] = "true"
    seq = None
    if model.producer is not None:
        seq = model.next_seq
        headers.update({"Producer-Id": model.producer, "Producer-Epoch": "0", "Producer-Seq": str(seq)})
    if stream_seq is not None:
        headers["Stream-Seq"] = f"{stream_seq:08d}"
    body = _encode_units(units, model.json, rng) if units else b""
    return Request("POST", headers, body, units, close, seq, stream_seq)


def _put(model: Model, units: list, rng: random.Random, fork: tuple[str, str] | None = None) -> Request:
    headers = {"Content-Type": model.content_type}
    if fork is not None:
        headers.update({"Stream-Forked-From": fork[0], "Stream-Fork-Offset": fork[1]})
        return Request("PUT", headers, b"", units)
    return Request("PUT", headers, _encode_units(units, model.json, rng) if units else b"", units)


# ------------------------------------------------------------------ writers


class Writers:
    """Every writer of one round; they stop at their first failed request (the kill)."""

    def __init__(self, http, base: str, models: dict[str, Model], round_no: int, failures: Failures) -> None:
        self.http, self.base, self.models, self.round_no = http, base, models, round_no
        self.failures = failures
        self.acked = 0
        self.stopping = False  # set to let every writer finish its request and stop

    async def do(self, model: Model, request: Request, expected: int) -> bool:
        """Send; on the expected status fold the request into the model. The request
        stays `pending` until then: if the server dies now, it may or may not be in."""
        if self.stopping:
            return False
        model.pending = request
        result = await _send(self.http, self.base, model.path, request)
        if result is None:
            return False
        status, headers = result
        if status != expected:
            self.failures.add(
                model, f"{request.method} {request.headers} -> {status} {_protocol_headers(headers)}, expected {expected}"
            )
            return False
        model.pending = None
        model.commit(request)
        self.acked += 1
        if request.units and model.kind != "shared":  # a shared stream's offsets count everyone's messages
            model.offsets.append((headers["Stream-Next-Offset"], len(model.units)))
        if model.producer is not None and request.method == "POST":
            if (headers.get("Producer-Epoch"), headers.get("Producer-Seq")) != ("0", str(request.producer_seq)):
                self.failures.add(model, f"producer headers echoed wrong: {_protocol_headers(headers)}")
                return False
        if request.close and headers.get("Stream-Closed", "").lower() != "true":
            self.failures.add(model, "close acknowledged without Stream-Closed: true")
            return False
        return True

    async def long_writer(self, model: Model, rng: random.Random) -> None:
        counter = len(model.units)
        while True:
            units = _make_units(model.name, counter, model.json, rng)
            counter += 1
            seq = model.stream_seq + 1 if model.stream_seq is not None else None
            if not await self.do(model, _post(model, units, rng, stream_seq=seq), 200 if model.producer else 204):
                return

    async def closer(self, index: int, rng: random.Random) -> None:
        for k in range(1000):
            if self.stopping:
                return
            is_json = rng.random() < 0.5
            model = Model(f"{STREAMS}/c{self.round_no}-{index}-{k}", is_json, "closer")
            if rng.random() < 0.5:
                model.producer = f"closer-{self.round_no}-{index}-{k}"
            self.models[model.name] = model
            initial = _make_units(model.path, 0, is_json, rng) if rng.random() < 0.5 else []
            if not await self.do(model, _put(model, initial, rng), 201):
                return
            for n in range(rng.randint(0, 6)):
                units = _make_units(model.path, n + 1, is_json, rng)
                if not await self.do(model, _post(model, units, rng), 200 if model.producer else 204):
                    return
            final = _make_units(model.path, 99, is_json, rng) if rng.random() < 0.5 else []
            expected = 200 if (model.producer and final) else 204
            if not await self.do(model, _post(model, final, rng, close=True), expected):
                return
            if not await self.check_refuses_append(model, rng):
                return

    async def check_refuses_append(self, model: Model, rng: random.Random) -> bool:
        probe = _post(Model(model.path, model.json, "probe"), _make_units("late", 0, model.json, rng), rng)
        result = await _send(self.http, self.base, model.path, probe)
        if result is None:
            return False  # the kill; a refused append changes nothing either way
        status, headers = result
        if status != 409 or headers.get("Stream-Closed", "").lower() != "true":
            self.failures.add(model, f"append to a closed stream -> {status} {_protocol_headers(headers)}")
            return False
        return True

    async def recycler(self, index: int, rng: random.Random) -> None:
        """Create, append, delete, re-create at one path: an old incarnation must never
        come back (each incarnation's messages are unique)."""
        path = f"{STREAMS}/r-{index}"
        model = self.models.setdefault(path, Model(path, index % 2 == 1, "recycled"))
        for k in range(1000):
            if self.stopping:
                return
            tag = f"{path}@{self.round_no}.{k}"
            if not model.created:
                initial = _make_units(tag, 0, model.json, rng) if rng.random() < 0.5 else []
                if not await self.do(model, _put(model, initial, rng), 201):
                    return
            for n in range(rng.randint(0, 4)):
                if not await self.do(model, _post(model, _make_units(tag, n + 1, model.json, rng), rng), 204):
                    return
            if not await self.do(model, Request("DELETE", {}, b"", []), 204):
                return
            await asyncio.sleep(rng.uniform(0, 0.1))  # stay deleted a while: kills land here too

    async def unanswered_append(self, model: Model, rng: random.Random) -> asyncio.StreamWriter:
        """A producer append that the server commits but whose response its client never
        reads: the crash comes first. (Writers hit this window only by chance.) Returns the
        connection, to be closed after the kill."""
        request = _post(model, _make_units(model.name, model.next_seq, model.json, rng), rng)
        request.reached_server = True
        model.pending = request
        host, port = self.base.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        head = f"POST {model.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(request.body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in request.headers.items())
        writer.write(head.encode() + b"\r\n" + request.body)
        await writer.drain()
        deadline = time.monotonic() + 20
        before = _flatten(model.units, model.json)
        while _flatten((await _read_all(self.http, self.base, model))[0], model.json) == before:
            assert time.monotonic() < deadline, "the unanswered append never became visible"
            await asyncio.sleep(0.01)  # visible to readers = committed durably
        return writer

    async def forker(self, index: int, rng: random.Random) -> None:
        for k in range(1000):
            if self.stopping:
                return
            sources = [m for m in self.models.values()
                       if m.offsets and not m.closed and m.kind in ("long", "fork")]
            if not sources:
                await asyncio.sleep(0.02)
                continue
            source = rng.choice(sources)
            offset, count = rng.choice(source.offsets)
            model = Model(f"{STREAMS}/f{self.round_no}-{index}-{k}", source.json, "fork")
            self.models[model.name] = model
            if not await self.do(model, _put(model, source.units[:count], rng, fork=(source.path, offset)), 201):
                return
            for n in range(rng.randint(1, 5)):
                if not await self.do(model, _post(model, _make_units(model.path, n, model.json, rng), rng), 204):
                    return


# ------------------------------------------------------------------ verification after a restart


class Verifier:
    def __init__(self, http, base: str, failures: Failures, rng: random.Random) -> None:
        self.http, self.base, self.failures, self.rng = http, base, failures, rng
        self.units_checked = 0
        self.landed = 0  # requests in flight at the kill that turned out committed
        self.lost = 0  # ... and that did not (allowed: they were never acknowledged)
        self.retries: dict[int, int] = {}  # status -> how many producer retries got it

    async def verify(self, model: Model) -> None:
        try:
            await self._verify(model)
        except AssertionError as exc:
            self.failures.add(model, str(exc))

    async def _head(self, model: Model) -> tuple[int, bool]:
        async with self.http.head(self.base + model.path) as resp:
            return resp.status, resp.headers.get("Stream-Closed", "").lower() == "true"

    async def _verify(self, model: Model) -> None:
        pending = model.pending
        status, closed = await self._head(model)
        assert status in (200, 404), f"HEAD -> {status}"
        content = None
        if status == 200:
            content, _ = await _read_all(self.http, self.base, model)
            if model.kind == "shared":  # this writer's messages, in stream order
                content = [u for u in content if _writer_of(u) == model.name]
        observed = (status == 200, _flatten(content, model.json) if content is not None else None, closed)
        # The acknowledged state, and the state with the in-flight request carried out:
        # the server must show one of the two, exactly (never half of the request, never twice).
        candidates = [model] + ([model.committed(pending)] if pending is not None else [])
        matches = [c.observable() == observed for c in candidates]
        if not any(matches):
            raise AssertionError(self._diff(model, status, content, closed, pending))
        landed = not matches[0]
        self.units_checked += len(model.units) if model.created else 0
        if pending is not None:
            if pending.reached_server or landed:
                self.landed += landed
                self.lost += not landed
            if landed:
                model.commit(pending)
            model.pending = None
            await self._resend(model, pending, landed)
        if model.created:
            await self._probes(model)

    def _diff(self, model: Model, status: int, content: list | None, closed: bool, pending: Request | None) -> str:
        if not model.created or content is None:
            return (f"existence mismatch: HEAD -> {status}; acknowledged created={model.created}, "
                    f"in flight: {pending.method if pending else None}")
        expected = model.units
        if not model.json:
            content = [b"".join(content)]
            joined = b"".join(expected)
            actual = content[0]
            first = next((i for i, (a, b) in enumerate(zip(actual, joined)) if a != b), min(len(actual), len(joined)))
            where = f"bytes: expected {len(joined)} (+{sum(map(len, pending.units)) if pending else 0} in flight), got {len(actual)}, first difference at {first}"
        else:
            first = next((i for i, (a, b) in enumerate(zip(content, expected)) if a != b), min(len(content), len(expected)))
            where = f"messages: expected {len(expected)} (+{len(pending.units) if pending else 0} in flight), got {len(content)}, first difference at {first}"
        return f"content/closure mismatch ({where}); closed={closed} expected closed={model.closed} pending close={pending.close if pending else None}"

    async def _resend(self, model: Model, request: Request, landed: bool) -> None:
        """Re-send the in-flight request the way a client would after reconnecting."""
        if request.method == "PUT":
            expected = 200 if landed else 201  # an identical re-create is idempotent
        elif request.method == "DELETE":
            expected = 404 if landed else 204
        elif request.producer_seq is not None:
            # Idempotent producer: a committed retry is a duplicate (204), never a 409.
            expected = 204 if landed else (200 if request.body else 204)
        elif model.kind == "closer" and request.close:
            expected = (409 if request.body else 204) if landed else 204
        else:
            return  # a plain append is not idempotent: its client would not blindly retry
        status, headers = await _answered(self.http, self.base, model.path, request)
        assert status == expected, (
            f"retry of the in-flight {request.method} ({'committed' if landed else 'not committed'}) "
            f"-> {status}, expected {expected}; {_protocol_headers(headers)}"
        )
        if request.producer_seq is not None:
            self.retries[status] = self.retries.get(status, 0) + 1
            assert headers.get("Producer-Seq") == str(request.producer_seq), f"retry echoed {_protocol_headers(headers)}"
        if not landed and status < 300:
            model.commit(request)
        if request.producer_seq is not None:
            model.next_seq = request.producer_seq + 1

    async def _probes(self, model: Model) -> None:
        last = model.last_producer_write
        if last is not None:
            # Retrying any committed producer request is a duplicate, however long ago it was.
            status, headers = await _answered(self.http, self.base, model.path, last)
            assert (status, headers.get("Producer-Seq")) == (204, str(last.producer_seq)), (
                f"retry of the last committed producer request (seq {last.producer_seq}) -> {status} "
                f"{_protocol_headers(headers)}, expected 204"
            )
        if model.closed:
            probe = _post(Model(model.path, model.json, "probe"), _make_units("late", 0, model.json, self.rng), self.rng)
            status, headers = await _answered(self.http, self.base, model.path, probe)
            assert status == 409 and headers.get("Stream-Closed", "").lower() == "true", (
                f"closed stream accepted or mis-refused an append after restart: {status}"
            )
        if model.stream_seq is not None:
            probe = _post(Model(model.path, model.json, "probe"), _make_units("replay", 0, model.json, self.rng),
                          self.rng, stream_seq=model.stream_seq)
            status, _ = await _answered(self.http, self.base, model.path, probe)
            assert status == 409, f"replayed Stream-Seq {model.stream_seq} after restart -> {status}, expected 409"
        for offset, count in self.rng.sample(model.offsets, min(2, len(model.offsets))):
            rest, _ = await _read_all(self.http, self.base, model, offset)
            assert _flatten(rest, model.json) == _flatten(model.units[count:], model.json), (
                f"reading from acknowledged offset {offset} does not give the data after it"
            )


# ------------------------------------------------------------------ the test


@pytest.mark.skipif(not COMMAND.exists(), reason=f"{COMMAND} is not installed (pip install -e .)")
async def test_sigkilled_server_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    daemon = Daemon(tmp_path)
    models: dict[str, Model] = {}
    report: list[str] = []
    timeout = aiohttp.ClientTimeout(total=20)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await daemon.start(http)
            shared = f"{STREAMS}/json-shared"  # two producers and a plain writer interleave here
            long_lived = [
                Model(f"{STREAMS}/bin-plain", False, "long"),
                Model(f"{STREAMS}/bin-seq", False, "long", stream_seq=0),
                Model(f"{STREAMS}/bin-producer", False, "long", producer="p-bin"),
                Model(f"{STREAMS}/json-plain", True, "long"),
                Model(f"{STREAMS}/json-producer", True, "long", producer="p-json"),
                Model(shared, True, "shared", writer="shared-a", producer="p-shared-a"),
                Model(shared, True, "shared", writer="shared-b", producer="p-shared-b"),
                Model(shared, True, "shared", writer="shared-plain"),
            ]
            unanswered = Model(f"{STREAMS}/bin-lost-response", False, "long", producer="p-lost")
            long_lived_plus = [*long_lived, unanswered]
            for model in long_lived_plus:
                models[model.name] = model
                request = _put(model, [], rng)
                status = (await _answered(http, daemon.base, model.path, request))[0]
                assert status == (201 if model.writer in ("", "shared-a") else 200)
                model.commit(request)
            generations = []
            for round_no in range(ROUNDS):
                failures = Failures()
                writers = Writers(http, daemon.base, models, round_no, failures)
                wrng = [random.Random(rng.random()) for _ in range(len(long_lived) + 5)]
                tasks = [asyncio.ensure_future(writers.long_writer(m, wrng.pop())) for m in long_lived]
                tasks += [asyncio.ensure_future(writers.closer(i, wrng.pop())) for i in range(2)]
                tasks.append(asyncio.ensure_future(writers.forker(0, wrng.pop())))
                tasks += [asyncio.ensure_future(writers.recycler(i, wrng.pop())) for i in range(2)]
                await asyncio.sleep(rng.uniform(*RUN_SECONDS))
                quiet = round_no == 2 or rng.random() < 0.2
                lost = None
                if quiet:  # nothing in flight: the log ends with acknowledged records only
                    writers.stopping = True
                    await asyncio.wait_for(asyncio.gather(*tasks), 30)
                else:
                    lost = await writers.unanswered_append(unanswered, rng)
                daemon.kill()  # SIGKILL at a random moment, whatever is in flight
                if lost is not None:
                    lost.close()
                await asyncio.wait_for(asyncio.gather(*tasks), 30)
                assert not failures, f"round {round_no}: writers saw wrong answers:\n" + "\n".join(failures[:20])
                assert writers.acked > 20, f"round {round_no}: only {writers.acked} writes acknowledged"
                generations.append(daemon.wal_generation())
                if rng.random() < 0.5:
                    await daemon.crash_during_start(rng.uniform(0.05, 1.2))
                await daemon.start(http)
                verifier = Verifier(http, daemon.base, failures, random.Random(rng.random()))
                limit = asyncio.Semaphore(8)

                async def verify(model: Model) -> None:
                    async with limit:
                        await verifier.verify(model)

                await asyncio.gather(*(verify(m) for m in list(models.values())))
                for name in [n for n, m in models.items() if not m.created and m.kind != "recycled"]:
                    del models[name]  # defensive: a stream nobody will write again
                assert not failures, f"round {round_no}: after restart:\n" + "\n".join(failures[:20])
                streams = len({m.path for m in models.values()})
                report.append(
                    f"round {round_no}{' (writers stopped before the kill)' if quiet else ''}: "
                    f"{writers.acked} writes acknowledged; {verifier.units_checked} acknowledged messages "
                    f"re-read in {streams} streams; requests in flight at the kill: {verifier.landed} "
                    f"committed, {verifier.lost} not; producer retries by status {verifier.retries}; "
                    f"log generation {generations[-1]}"
                )
            # The store must have checkpointed during the run (each checkpoint starts a new log file).
            assert generations[-1] > 1, "no checkpoint happened during the test; load too small"
            assert (daemon.data_dir / "checkpoint").exists()
            # A clean stop (checkpoint on close) and one more start keep everything too.
            assert daemon.terminate() == 0
            await daemon.start(http)
            failures = Failures()
            verifier = Verifier(http, daemon.base, failures, random.Random(rng.random()))
            for model in models.values():
                await verifier.verify(model)
            assert not failures, "after a clean restart:\n" + "\n".join(failures[:20])
            print("\n".join(report))
    finally:
        daemon.kill()
