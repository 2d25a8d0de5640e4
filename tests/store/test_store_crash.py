"""Crash safety: SIGKILL a busy FileStore at random moments, reopen, check everything.

After each kill, every acknowledged operation must be there exactly once and in order,
with its state (tail, producer tuple, Stream-Seq, closure) and its append boundary
(where each append with data ended); an operation that was in
flight (announced, not acknowledged) may have landed or not, but entirely or not at
all; nothing else may appear.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from durable_streams.server.store.file import FileStore

WORKER = os.path.join(os.path.dirname(__file__), "crash_worker.py")
ROUNDS = 4


@dataclass
class Model:
    base: int
    content_type: str
    data: bytearray
    closed: bool = False
    closed_by: tuple | None = None
    stream_seq: str | None = None
    producers: dict = field(default_factory=dict)  # id -> (epoch, seq)
    boundaries: list = field(default_factory=list)  # end of each append with data

    @property
    def tail(self) -> int:
        return self.base + len(self.data)

    def apply(self, op: dict) -> None:
        self.data += bytes.fromhex(op["data"])
        assert self.tail == op["tail"]
        if op["data"]:
            self.boundaries.append(self.tail)
        if op["close"]:
            self.closed, self.closed_by = True, tuple(op["closed_by"]) if op["closed_by"] else None
        if op["stream_seq"] is not None:
            self.stream_seq = op["stream_seq"]
        if op["producer"] is not None:
            pid, epoch, seq = op["producer"]
            self.producers[pid] = (epoch, seq)


def run_round(data_dir: str, round_no: int, rng: random.Random) -> list[dict]:
    """Run the worker until a random number of acknowledgements, SIGKILL it, return its events."""
    kill_after = rng.randrange(20, 400)
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, WORKER, data_dir, str(round_no), str(rng.randrange(1 << 30))],
            stdout=subprocess.PIPE, stderr=stderr,
        )
        lines, acks = [], 0
        try:
            for line in proc.stdout:
                lines.append(line)
                acks += b'"ev": "ack"' in line
                if acks >= kill_after:
                    proc.send_signal(signal.SIGKILL)
                    break
            lines += proc.stdout.read().splitlines(keepends=True)  # what the kill left in the pipe
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
        stderr.seek(0)
        assert proc.returncode == -signal.SIGKILL, f"worker died by itself:\n{stderr.read().decode()[-3000:]}"
    events = []
    for line in lines:
        if not line.endswith(b"\n"):
            break  # the last line, torn by the kill
        events.append(json.loads(line))
    return events


def replay_events(model: dict[str, Model], events: list[dict]) -> dict[str, dict]:
    """Apply acknowledged operations to the model; return the operations still in flight."""
    pending: dict[str, dict] = {}
    for event in events:
        if event["ev"] == "begin":
            pending[event["path"]] = event
        elif event["ev"] == "ack":
            apply_op(model, pending.pop(event["path"]))
    return pending


def apply_op(model: dict[str, Model], op: dict) -> None:
    path = op["path"]
    if op["op"] == "create":
        assert path not in model
        data = bytes.fromhex(op["data"])
        model[path] = Model(op["base"], op["ct"], bytearray(data), boundaries=[op["base"] + len(data)] if data else [])
    elif op["op"] == "delete":
        del model[path]
    else:
        model[path].apply(op)


async def recovered_view(data_dir: str) -> dict[str, tuple]:
    store = FileStore(data_dir, max_file_handles=8)
    streams = await store.open()
    view = {}
    try:
        for s in streams:
            data = await store.read(s.config.path, s.config.base_offset, s.state.tail)
            boundaries, position = [], s.config.base_offset
            while position < s.state.tail:  # walk the appends, one boundary after the other
                position = await store.next_boundary(s.config.path, position)
                boundaries.append(position)
            view[s.config.path] = describe(
                s.config.base_offset, s.config.content_type, data, s.state.closed, s.state.closed_by,
                s.state.stream_seq, {pid: (p.epoch, p.seq) for pid, p in s.state.producers.items()},
                boundaries,
            )
    finally:
        await store.close()
    return view


def describe(base, content_type, data, closed, closed_by, stream_seq, producers, boundaries) -> tuple:
    return (base, content_type, bytes(data), closed, tuple(closed_by) if closed_by else None, stream_seq, producers,
            list(boundaries))


def model_view(model: dict[str, Model]) -> dict[str, tuple]:
    return {
        path: describe(m.base, m.content_type, m.data, m.closed, m.closed_by, m.stream_seq, dict(m.producers),
                       m.boundaries)
        for path, m in model.items()
    }


def resolve_in_flight(model: dict[str, Model], pending: dict[str, dict], recovered: dict[str, tuple]) -> None:
    """Each in-flight operation either landed completely or not at all: pick the outcome
    the store shows, and fail if it shows neither."""
    for path, op in pending.items():
        without = model_view(model).get(path)
        landed_model = {p: Model(m.base, m.content_type, bytearray(m.data), m.closed, m.closed_by,
                                 m.stream_seq, dict(m.producers), list(m.boundaries)) for p, m in model.items()}
        apply_op(landed_model, op)
        with_op = model_view(landed_model).get(path)
        got = recovered.get(path)
        assert got in (without, with_op), f"{path}: in-flight {op['op']} is half-visible"
        if got == with_op and got != without:
            apply_op(model, op)


def test_sigkill_loses_nothing_acknowledged(tmp_path):
    data_dir = str(tmp_path / "data")
    seed = int(os.environ.get("CRASH_TEST_SEED") or int.from_bytes(os.urandom(4), "big"))
    print(f"crash test seed {seed} (rerun with CRASH_TEST_SEED={seed})")
    rng = random.Random(seed)
    model: dict[str, Model] = {}
    total_acks = 0
    for round_no in range(ROUNDS):
        events = run_round(data_dir, round_no, rng)
        total_acks += sum(e["ev"] == "ack" for e in events)
        pending = replay_events(model, events)
        recovered = asyncio.run(recovered_view(data_dir))
        resolve_in_flight(model, pending, recovered)
        expected = model_view(model)
        assert recovered.keys() == expected.keys()
        for path in expected:
            assert recovered[path] == expected[path], f"round {round_no}: {path} differs after recovery"
    assert total_acks >= ROUNDS * 20
