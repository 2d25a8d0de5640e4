"""Write-ahead-log records and their on-disk framing.

Frame:  u32 body length | u32 CRC32(body) | body          (little endian)
Body:   u8 kind | u32 meta length | meta (JSON, UTF-8) | data (raw bytes)

Length plus checksum let recovery tell a complete record from a torn or corrupt
tail. The meta of an append carries its `Commit`, so data and state can never
disagree after a crash: they are one record.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ..base import Commit, ProducerState, StreamConfig, StreamState

FRAME_HEADER = struct.Struct("<II")
BODY_HEADER = struct.Struct("<BI")
# A sanity bound that rejects garbage lengths before trying to read them.
MAX_RECORD_BYTES = 1 << 31


class Kind(IntEnum):
    CREATE = 1  # meta: i, config, state          data: initial bytes
    APPEND = 2  # meta: i, p (logical start), c    data: appended bytes
    SOFT_DELETE = 3  # meta: i
    DELETE = 4  # meta: i
    TOUCH = 5  # meta: t = [[i, when], ...]
    RETAIN = 6  # meta: i, f (floor), m (age marks [[tail, when], ...])


@dataclass(slots=True)
class Record:
    kind: Kind
    meta: dict[str, Any]
    data: bytes = b""

    @property
    def incarnation(self) -> str:
        return self.meta["i"]


# Made once: json.dumps with its own separators builds an encoder per call (per append).
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def compact_json(obj: Any) -> str:
    """`obj` as compact JSON (no spaces), the encoding of every record's meta."""
    return _COMPACT_JSON.encode(obj)


def append_meta_json(meta: dict[str, Any]) -> str:
    """compact_json of an append's meta. The usual one (a commit that only moves the tail,
    an incarnation in hex) is formatted directly: the encoder costs more than the rest of
    the record together. tests/store/test_store_records.py holds the two to the same bytes."""
    commit = meta["c"]
    incarnation = meta["i"]
    if len(meta) == 3 and len(commit) == 1 and "tail" in commit and type(incarnation) is str \
            and incarnation.isalnum() and incarnation.isascii() and type(meta["p"]) is int \
            and type(commit["tail"]) is int:
        return '{"i":"%s","p":%d,"c":{"tail":%d}}' % (incarnation, meta["p"], commit["tail"])
    return compact_json(meta)


def encode(record: Record) -> list[bytes]:
    """The frame as buffers for os.writev (the data is not copied)."""
    meta = (append_meta_json(record.meta) if record.kind is Kind.APPEND else compact_json(record.meta)).encode()
    head = BODY_HEADER.pack(record.kind, len(meta)) + meta
    crc = zlib.crc32(record.data, zlib.crc32(head))
    frame_head = FRAME_HEADER.pack(len(head) + len(record.data), crc) + head
    return [frame_head, record.data] if record.data else [frame_head]


class CorruptRecord(ValueError):
    pass


def decode_body(body: bytes) -> Record:
    """Parse a body whose checksum already matched (so any error here is a format bug or
    a collision, reported as corruption rather than a crash)."""
    try:
        kind, meta_len = BODY_HEADER.unpack_from(body)
        start = BODY_HEADER.size
        meta = json.loads(body[start : start + meta_len])
        return Record(Kind(kind), meta, bytes(body[start + meta_len :]))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecord(str(exc)) from exc


# --- JSON shapes of the contract's dataclasses (shared by log records and checkpoints) ---


def config_to_json(config: StreamConfig) -> dict[str, Any]:
    return {
        "path": config.path,
        "content_type": config.content_type,
        "created_at": config.created_at,
        "base_offset": config.base_offset,
        "settings": config.settings,
    }


def config_from_json(obj: dict[str, Any]) -> StreamConfig:
    return StreamConfig(
        path=obj["path"],
        content_type=obj["content_type"],
        created_at=obj["created_at"],
        base_offset=obj["base_offset"],
        settings=obj["settings"],
    )


def state_to_json(state: StreamState) -> dict[str, Any]:
    return {
        "tail": state.tail,
        "closed": state.closed,
        "closed_by": list(state.closed_by) if state.closed_by else None,
        "stream_seq": state.stream_seq,
        "producers": {
            pid: [p.epoch, p.seq, p.updated_at] for pid, p in state.producers.items()
        },
        "soft_deleted": state.soft_deleted,
        "last_access": state.last_access,
        # only when retention is in use: checkpoints without it stay as they were
        **({"floor": state.floor, "marks": [list(m) for m in state.marks]} if state.floor or state.marks else {}),
    }


def state_from_json(obj: dict[str, Any]) -> StreamState:
    return StreamState(
        tail=obj["tail"],
        closed=obj["closed"],
        closed_by=tuple(obj["closed_by"]) if obj["closed_by"] else None,
        stream_seq=obj["stream_seq"],
        producers={pid: ProducerState(*p) for pid, p in obj["producers"].items()},
        soft_deleted=obj["soft_deleted"],
        last_access=obj["last_access"],
        floor=obj.get("floor", 0),
        marks=tuple(tuple(m) for m in obj.get("marks", ())),
    )


def commit_to_json(commit: Commit) -> dict[str, Any]:
    obj: dict[str, Any] = {"tail": commit.tail}
    if commit.close:
        obj["close"] = True
        obj["closed_by"] = list(commit.closed_by) if commit.closed_by else None
    if commit.stream_seq is not None:
        obj["stream_seq"] = commit.stream_seq
    if commit.producer is not None:
        pid, p = commit.producer
        obj["producer"] = [pid, p.epoch, p.seq, p.updated_at]
    return obj


def commit_from_json(obj: dict[str, Any]) -> Commit:
    closed_by = obj.get("closed_by")
    producer = obj.get("producer")
    return Commit(
        tail=obj["tail"],
        close=bool(obj.get("close")),
        closed_by=tuple(closed_by) if closed_by else None,
        stream_seq=obj.get("stream_seq"),
        producer=(producer[0], ProducerState(*producer[1:])) if producer else None,
    )


def apply_commit(state: StreamState, commit: dict[str, Any]) -> None:
    """Apply a commit in its JSON shape: the same code path at run time and in replay."""
    state.apply(commit_from_json(commit))
