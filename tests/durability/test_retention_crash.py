"""Retention floors survive SIGKILL on the file store, mid-compaction.

A server with `retention { max_size 64KiB }` (compacted every 8 KiB of growth: a RETAIN
log record, then holes punched in the data file) takes continuous appends of random
bytes on a few streams, while a poller records each stream's floor from HEAD and a
reader checks catch-up reads against what was written. At seeded random moments the
server is SIGKILLed (log checkpoints every 256 KiB, so kills land around them too),
restarted on the same data_dir, and checked:
- the floor never moved back from the last one a HEAD reported before the kill, and it
  is an append boundary;
- the tail is every acknowledged append, plus the one in flight or not;
- everything from the floor on is there byte-exact (acknowledged appends, and the one
  in flight if it landed);
- reads below the floor are 410 with Stream-Earliest-Offset, never the zeros of the
  punched holes or other bytes.
Set DS_RETENTION_CRASH_SEED to replay another schedule."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "retention"))
from retention_servers import Server, retention_block  # noqa: E402

from durable_streams.server.engine.offsets import format_offset, parse_position  # noqa: E402

SEED = int(os.environ.get("DS_RETENTION_CRASH_SEED", "5150"))
ROUNDS = 5
MAX_SIZE = 64 << 10
RUN_SECONDS = (0.4, 1.2)  # how long the writers run before each kill (seeded)
BINARY = {"Content-Type": "application/octet-stream"}
EARLIEST = "Stream-Earliest-Offset"
STREAMS = {"a": (512, 8192), "b": (64, 1024), "c": (3000, 20000)}  # piece sizes


@dataclass
class Model:
    name: str
    sizes: tuple[int, int]
    data: bytearray = field(default_factory=bytearray)  # every acknowledged append, from 0
    starts: list[int] = field(default_factory=list)  # where each append began
    pending: bytes | None = None  # the append in flight when the server died
    floor_seen: int = 0  # the highest floor a HEAD (or a 410) reported

    @property
    def tail(self) -> int:
        return len(self.data)

    def add(self, piece: bytes) -> None:
        self.starts.append(len(self.data))
        self.data += piece


async def _writer(http: aiohttp.ClientSession, url: str, model: Model, rng: random.Random) -> None:
    while True:
        piece = rng.randbytes(rng.randint(*model.sizes))
        model.pending = piece
        try:
            async with http.post(url, data=piece, headers=BINARY) as r:
                assert r.status == 204, (r.status, await r.text())
                end = parse_position(r.headers["Stream-Next-Offset"])
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return  # the server died: `pending` may or may not have landed
        assert end == model.tail + len(piece), (model.name, end, model.tail, len(piece))
        model.pending = None
        model.add(piece)


def _note_floor(model: Model, headers) -> int:
    value = headers.get(EARLIEST)
    floor = 0 if value is None else parse_position(value)
    model.floor_seen = max(model.floor_seen, floor)
    return floor


async def _poller(http: aiohttp.ClientSession, url: str, model: Model) -> None:
    """HEAD now and then: the floor it reports is durable, never to move back."""
    while True:
        try:
            async with http.head(url) as r:
                assert r.status == 200, r.status
                previous = model.floor_seen
                assert _note_floor(model, r.headers) >= previous, "the floor moved back while serving"
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return
        await asyncio.sleep(0.03)


async def _reader(http: aiohttp.ClientSession, url: str, model: Model, rng: random.Random) -> None:
    """Catch-up reads from acknowledged boundaries at or above the floor seen: the bytes
    written there, or 410 once the floor passed them; never anything else."""
    while True:
        candidates = [s for s in model.starts if s >= model.floor_seen]
        if not candidates:
            await asyncio.sleep(0.01)
            continue
        start = rng.choice(candidates)
        try:
            async with http.get(url, params={"offset": format_offset(start)}) as r:
                body = await r.read()
                if r.status == 410:
                    assert _note_floor(model, r.headers) > start
                    continue
                assert r.status == 200, r.status
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return
        known = min(len(body), model.tail - start)  # more may be an append not yet acknowledged
        assert body[:known] == bytes(model.data[start:start + known]), f"{model.name}: wrong bytes at {start}"
        await asyncio.sleep(0.01)


async def _check_after_restart(http: aiohttp.ClientSession, url: str, model: Model, rng: random.Random) -> None:
    async with http.head(url) as r:
        assert r.status == 200, r.status
        tail = parse_position(r.headers["Stream-Next-Offset"])
        value = r.headers.get(EARLIEST)
    floor = 0 if value is None else parse_position(value)
    assert floor >= model.floor_seen, f"{model.name}: floor moved back from {model.floor_seen} to {floor}"
    # the in-flight append landed whole or not at all
    if model.pending is not None and tail == model.tail + len(model.pending):
        model.add(model.pending)
    model.pending = None
    assert tail == model.tail, (model.name, tail, model.tail)
    assert floor == 0 or floor in model.starts or floor == tail, f"{model.name}: floor {floor} not a boundary"
    model.floor_seen = floor
    # from the floor on: byte-exact
    async with http.get(url, params={"offset": "-1"}) as r:
        assert r.status == 200, r.status
        assert r.headers["Stream-Next-Offset"] == format_offset(tail)
        body = await r.read()
    assert body == bytes(model.data[floor:]), f"{model.name}: retained bytes differ"
    above = [s for s in model.starts if s >= floor]
    for start in rng.sample(above, min(3, len(above))):
        async with http.get(url, params={"offset": format_offset(start)}) as r:
            assert r.status == 200 and await r.read() == bytes(model.data[start:])
    # below it: gone, in every read mode, never zeros or other bytes
    if floor > 0:
        belows = {0, floor - 1, rng.randrange(floor), *[s for s in model.starts if s < floor][-2:]}
        for below in belows:
            for live in (None, "long-poll"):
                params = {"offset": format_offset(below), **({"live": live} if live else {})}
                async with http.get(url, params=params) as r:
                    body = await r.read()
                    assert r.status == 410, (model.name, below, floor, r.status, body[:64])
                    assert r.headers[EARLIEST] == format_offset(floor)


async def test_floors_survive_sigkill_mid_compaction(tmp_path):
    rng = random.Random(SEED)
    server = Server(tmp_path, "file", [retention_block(max_size="64KiB")],
                    env={"DURABLE_STREAMS_CHECKPOINT_BYTES": str(256 << 10)}).start()
    models = {name: Model(name, sizes) for name, sizes in STREAMS.items()}
    timeout = aiohttp.ClientTimeout(total=20)  # a guard against a hung server
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for name in models:
                async with http.put(server.url(name), headers=BINARY) as r:
                    assert r.status == 201
            for round_no in range(ROUNDS):
                tasks = []
                for name, model in models.items():
                    url = server.url(name)
                    seeded = random.Random(rng.random())
                    tasks += [asyncio.create_task(_writer(http, url, model, seeded)),
                              asyncio.create_task(_poller(http, url, model)),
                              asyncio.create_task(_reader(http, url, model, seeded))]
                await asyncio.sleep(rng.uniform(*RUN_SECONDS))
                for task in tasks:
                    assert not task.done() or task.exception() is None, task.exception()
                server.kill()
                await asyncio.gather(*tasks)  # each returns once its connection broke
                server.start()
                for name, model in models.items():
                    await _check_after_restart(http, server.url(name), model, rng)
            # retention really ran: every stream's floor moved, and far
            for model in models.values():
                assert model.floor_seen > 0 and model.tail > 2 * MAX_SIZE, (model.name, model.floor_seen, model.tail)
        generations = [int(n.split(".")[0]) for n in os.listdir(server.data_dir / "wal") if n.endswith(".wal")]
        assert max(generations) > ROUNDS, generations  # checkpoints happened along the way
    finally:
        server.kill()
