"""Idempotent producers: a new producer starts at seq 0 (any epoch), duplicates are
acknowledged without writing, gaps and stale epochs are refused, an epoch bump resets
the sequence. One state per (stream, producer id)."""

from __future__ import annotations

import pytest

from engine_support import claim, post, put, read_all

from durable_streams.server.engine.errors import (
    Conflict, InvalidRequest, ProducerSeqGap, StaleProducerEpoch, StreamError,
)
from durable_streams.server.engine.producers import ProducerVerdict
from durable_streams.server.engine.streams import PRODUCER_IDLE_TTL, AppendResult, StreamEngine


async def test_new_producer_starts_at_seq_zero(engine):
    await engine.create("/s", put())
    result = await engine.append("/s", post(b"a", producer=claim("p", 0, 0)))
    assert result == AppendResult(1, False, ProducerVerdict(duplicate=False, epoch=0, seq=0), wrote=True)


async def test_new_producer_may_start_at_any_epoch(engine):
    await engine.create("/s", put())
    result = await engine.append("/s", post(b"a", producer=claim("p", 7, 0)))
    assert result.producer == ProducerVerdict(False, 7, 0)


async def test_new_producer_with_seq_above_zero_is_a_gap(engine):
    await engine.create("/s", put())
    with pytest.raises(ProducerSeqGap) as caught:
        await engine.append("/s", post(b"a", producer=claim("p", 0, 1)))
    assert (caught.value.expected, caught.value.received) == (0, 1)
    assert isinstance(caught.value, Conflict)
    assert await read_all(engine, "/s") == b""


async def test_sequence_and_duplicates(engine):
    await engine.create("/s", put())
    assert (await engine.append("/s", post(b"a", producer=claim("p", 0, 0)))).producer == ProducerVerdict(False, 0, 0)
    assert (await engine.append("/s", post(b"b", producer=claim("p", 0, 1)))).producer == ProducerVerdict(False, 0, 1)
    assert (await engine.append("/s", post(b"c", producer=claim("p", 0, 2)))).producer == ProducerVerdict(False, 0, 2)
    # A retry of the last one, or of an older one, is acknowledged with the highest seq.
    for seq in (2, 1, 0):
        dup = await engine.append("/s", post(b"zzz", producer=claim("p", 0, seq)))
        assert dup == AppendResult(3, False, ProducerVerdict(True, 0, 2), wrote=False)
    assert await read_all(engine, "/s") == b"abc"


async def test_gap_is_refused_with_expected_and_received(engine):
    await engine.create("/s", put())
    await engine.append("/s", post(b"a", producer=claim("p", 0, 0)))
    await engine.append("/s", post(b"b", producer=claim("p", 0, 1)))
    with pytest.raises(ProducerSeqGap) as caught:
        await engine.append("/s", post(b"d", producer=claim("p", 0, 3)))
    assert (caught.value.expected, caught.value.received) == (2, 3)
    assert await read_all(engine, "/s") == b"ab"
    assert (await engine.append("/s", post(b"c", producer=claim("p", 0, 2)))).producer == ProducerVerdict(False, 0, 2)


async def test_stale_epoch_is_fenced(engine):
    await engine.create("/s", put())
    await engine.append("/s", post(b"a", producer=claim("p", 0, 0)))
    await engine.append("/s", post(b"b", producer=claim("p", 1, 0)))
    for seq in (0, 1, 5):
        with pytest.raises(StaleProducerEpoch) as caught:
            await engine.append("/s", post(b"z", producer=claim("p", 0, seq)))
        assert caught.value.current_epoch == 1
        assert not isinstance(caught.value, Conflict) and isinstance(caught.value, StreamError)
    assert await read_all(engine, "/s") == b"ab"


async def test_epoch_bump_resets_seq(engine):
    await engine.create("/s", put())
    for seq in range(3):
        await engine.append("/s", post(b"a", producer=claim("p", 0, seq)))
    bumped = await engine.append("/s", post(b"B", producer=claim("p", 1, 0)))
    assert bumped == AppendResult(4, False, ProducerVerdict(False, 1, 0), True)
    assert (await engine.append("/s", post(b"C", producer=claim("p", 1, 1)))).producer == ProducerVerdict(False, 1, 1)
    assert (await engine.append("/s", post(b"C", producer=claim("p", 1, 1)))).producer == ProducerVerdict(True, 1, 1)
    with pytest.raises(ProducerSeqGap) as caught:
        await engine.append("/s", post(b"E", producer=claim("p", 1, 3)))
    assert (caught.value.expected, caught.value.received) == (2, 3)
    assert await read_all(engine, "/s") == b"aaaBC"


async def test_epoch_bump_must_start_at_seq_zero(engine):
    await engine.create("/s", put())
    await engine.append("/s", post(b"a", producer=claim("p", 0, 0)))
    with pytest.raises(InvalidRequest):
        await engine.append("/s", post(b"b", producer=claim("p", 1, 1)))
    assert await read_all(engine, "/s") == b"a"
    # The refused bump changed nothing: epoch 0 goes on.
    assert (await engine.append("/s", post(b"b", producer=claim("p", 0, 1)))).producer == ProducerVerdict(False, 0, 1)


async def test_producers_are_independent(engine):
    await engine.create("/s", put())
    await engine.append("/s", post(b"a", producer=claim("p", 0, 0)))
    await engine.append("/s", post(b"b", producer=claim("p", 0, 1)))
    assert (await engine.append("/s", post(b"c", producer=claim("q", 0, 0)))).producer == ProducerVerdict(False, 0, 0)
    assert (await engine.append("/s", post(b"c", producer=claim("q", 0, 0)))).producer == ProducerVerdict(True, 0, 0)
    assert await read_all(engine, "/s") == b"abc"


async def test_producer_state_is_per_stream(engine):
    await engine.create("/s", put())
    await engine.create("/t", put())
    await engine.append("/s", post(b"a", producer=claim("p", 0, 0)))
    assert (await engine.append("/t", post(b"a", producer=claim("p", 0, 0)))).producer == ProducerVerdict(False, 0, 0)


async def test_refused_append_does_not_advance_the_producer(engine):
    await engine.create("/j", put("application/json"))
    with pytest.raises(InvalidRequest):
        await engine.append("/j", post(b"{", "application/json", producer=claim("p", 0, 0)))
    with pytest.raises(Conflict):
        await engine.append("/j", post(b"1", "text/plain", producer=claim("p", 0, 0)))
    accepted = await engine.append("/j", post(b"1", "application/json", producer=claim("p", 0, 0)))
    assert accepted == AppendResult(2, False, ProducerVerdict(False, 0, 0), True)


async def test_stream_seq_conflict_does_not_advance_the_producer(engine):
    await engine.create("/s", put())
    await engine.append("/s", post(b"a", stream_seq="5", producer=claim("p", 0, 0)))
    with pytest.raises(Conflict):
        await engine.append("/s", post(b"b", stream_seq="4", producer=claim("p", 0, 1)))
    accepted = await engine.append("/s", post(b"b", stream_seq="6", producer=claim("p", 0, 1)))
    assert accepted == AppendResult(2, False, ProducerVerdict(False, 0, 1), True)


async def test_idle_producer_state(engine, clock):
    """A memory store forgets a producer idle for a week; a durable one keeps it."""
    await engine.create("/s", put())
    await engine.append("/s", post(b"a", producer=claim("p", 0, 0)))
    clock.advance(PRODUCER_IDLE_TTL + 1)
    retry = await engine.append("/s", post(b"a", producer=claim("p", 0, 0)))
    if engine.store.durable:
        assert retry == AppendResult(1, False, ProducerVerdict(True, 0, 0), wrote=False)
    else:
        assert retry == AppendResult(2, False, ProducerVerdict(False, 0, 0), wrote=True)


async def test_a_duplicate_of_an_append_in_flight_waits_for_it_and_is_written_if_it_failed(clock):
    """A producer's retry of a request still in flight (its client gave up) is a duplicate
    only once the original is durable: if the original then fails, the retry writes it."""
    import asyncio

    from durable_streams.server.store.base import StoreError
    from durable_streams.server.store.memory import MemoryStore

    class HeldStore(MemoryStore):
        """Appends land when the test says (the first fails), like a store mid-flush."""

        def __init__(self) -> None:
            super().__init__()
            self.held: list[tuple[asyncio.Future, str, bytes, object]] = []

        def append(self, path, data, commit):
            future = asyncio.get_running_loop().create_future()
            self.held.append((future, path, data, commit))
            return future

        def release(self, fail: bool) -> None:
            future, path, data, commit = self.held.pop(0)
            if fail:
                future.set_exception(StoreError("disk gone"))
            else:
                super().append(path, data, commit)
                future.set_result(None)

    store = HeldStore()
    engine = StreamEngine(store, clock=clock)
    await engine.open()
    await engine.create("/s", put())
    first = asyncio.create_task(engine.append("/s", post(b"a", producer=claim("p", 0, 0))))
    await asyncio.sleep(0)
    assert len(store.held) == 1
    first.cancel()  # the client gave up; the append stays queued in the store
    retry = asyncio.create_task(engine.append("/s", post(b"a", producer=claim("p", 0, 0))))
    await asyncio.sleep(0.01)
    assert not retry.done()  # not answered "duplicate" while the original may still fail
    store.release(fail=True)
    await asyncio.sleep(0.01)
    assert len(store.held) == 1  # decided again: written this time
    store.release(fail=False)
    result = await retry
    assert result.wrote and result.tail == 1
    assert (await engine.read(await engine.require("/s"), 0, 10)).data == b"a"
    await engine.close()
