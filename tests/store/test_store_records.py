"""Log records: an append's meta, formatted directly in the usual case, is byte for byte
what the generic JSON encoder writes, and every frame decodes back to its record."""

from __future__ import annotations

import random
import uuid
import zlib

import pytest

from durable_streams.server.store.base import Commit, ProducerState
from durable_streams.server.store.file.records import (
    FRAME_HEADER, Kind, Record, append_meta_json, commit_to_json, compact_json, decode_body, encode,
)


def _commits(rng: random.Random):
    for _ in range(300):
        tail = rng.choice([0, 1, 22, 2**31, 2**53 - 1, 10**17 + 5, rng.randrange(10**12)])
        shape = rng.randrange(5)
        if shape == 0:
            yield Commit(tail=tail)
        elif shape == 1:
            yield Commit(tail=tail, close=True, closed_by=("p\u00e9", 1, 2) if rng.random() < 0.5 else None)
        elif shape == 2:
            yield Commit(tail=tail, stream_seq=rng.choice(["a", "0001", 'quo"te', "\u2028"]))
        elif shape == 3:
            yield Commit(tail=tail, producer=("writer-1", ProducerState(3, 7, 1733299200.25)))
        else:
            yield Commit(tail=tail, close=True, stream_seq="z", producer=("w", ProducerState(0, 0, 0.0)))


@pytest.mark.parametrize("incarnation", [uuid.uuid4().hex, "a" * 32, "0123abcd"])
def test_append_meta_is_what_the_json_encoder_writes(incarnation: str) -> None:
    rng = random.Random(12)
    for commit in _commits(rng):
        meta = {"i": incarnation, "p": rng.randrange(10**15), "c": commit_to_json(commit)}
        assert append_meta_json(meta) == compact_json(meta)


@pytest.mark.parametrize("incarnation", ['a"b', "caf\u00e9", "x y", "\u0661\u0662"])
def test_an_unusual_incarnation_is_encoded_as_json(incarnation: str) -> None:
    meta = {"i": incarnation, "p": 5, "c": {"tail": 9}}
    assert append_meta_json(meta) == compact_json(meta)


def test_every_frame_decodes_back_to_its_record() -> None:
    rng = random.Random(7)
    incarnation = uuid.uuid4().hex
    for commit in _commits(rng):
        data = rng.randbytes(rng.randrange(0, 40))
        record = Record(Kind.APPEND, {"i": incarnation, "p": commit.tail - len(data), "c": commit_to_json(commit)}, data)
        frame = b"".join(encode(record))
        length, crc = FRAME_HEADER.unpack_from(frame)
        body = frame[FRAME_HEADER.size:]
        assert length == len(body) and zlib.crc32(body) == crc
        assert decode_body(body) == record
