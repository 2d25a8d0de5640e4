"""Helpers shared by the engine tests: a settable clock and short request builders."""

from __future__ import annotations

from durable_streams.server.engine.forks import ForkRequest
from durable_streams.server.engine.offsets import format_offset
from durable_streams.server.engine.producers import ProducerClaim
from durable_streams.server.engine.streams import AppendRequest, CreateRequest, StreamEngine

T0 = 1_800_000_000.0  # unix seconds


class FakeClock:
    """The engine's wall clock (TTL, Expires-At, producer idleness), moved by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def claim(producer_id: str, epoch: int, seq: int) -> ProducerClaim:
    return ProducerClaim(producer_id, epoch, seq)


def put(content_type: str | None = "text/plain", **fields) -> CreateRequest:
    return CreateRequest(content_type=content_type, **fields)


def post(body: bytes, content_type: str | None = "text/plain", **fields) -> AppendRequest:
    return AppendRequest(content_type=content_type, body=body, **fields)


def close_only(**fields) -> AppendRequest:
    return AppendRequest(content_type=None, body=b"", close=True, **fields)


def fork(source: str, offset: int | None = None, sub_offset: int = 0, content_type: str | None = None,
         **fields) -> CreateRequest:
    token = None if offset is None else format_offset(offset)
    return CreateRequest(content_type=content_type, fork=ForkRequest(source, token, sub_offset), **fields)


async def read_all(engine: StreamEngine, path: str) -> bytes:
    """Every byte of the stream as a reader sees it (stitched across fork sources)."""
    stream = await engine.require(path)
    chunk = await engine.read(stream, 0, 1 << 20)
    assert chunk.up_to_date
    return chunk.data
