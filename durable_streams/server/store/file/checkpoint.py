"""Checkpoints: a snapshot of the catalog plus the log generation where replay starts.

Written to `checkpoint.tmp`, fsynced, renamed over `checkpoint`, directory fsynced:
a crash leaves either the old or the new checkpoint, never half of one. The data
files it describes are fsynced before it is written, so the log before it can go.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass

from ..base import StoreError
from .catalog import Catalog, Entry
from .fsutil import fsync_dir, write_all
from .records import config_from_json, config_to_json, state_from_json, state_to_json

MAGIC = b"DSCKPT\x00\x01"
HEADER = struct.Struct("<8sQI")  # magic, body length, CRC32(body)
FILE_NAME = "checkpoint"


class CorruptCheckpoint(StoreError):
    pass


@dataclass(slots=True)
class Checkpoint:
    wal_generation: int  # replay starts at this log file
    catalog: Catalog


def encode(wal_generation: int, catalog: Catalog) -> bytes:
    """Snapshot the catalog (on the writer thread, where it is consistent with the log)."""
    parts = []
    for entry in catalog.by_incarnation.values():
        if entry.encoded is None:
            entry.encoded = json.dumps(
                [entry.incarnation, config_to_json(entry.config), state_to_json(entry.state), entry.indexed],
                separators=(",", ":"),
            ).encode()
        parts.append(entry.encoded)
    body = b'{"version":1,"wal_generation":%d,"streams":[%b]}' % (wal_generation, b",".join(parts))
    return HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


def write(data_dir: str, blob: bytes) -> None:
    """Install an encoded snapshot atomically (any thread)."""
    tmp = os.path.join(data_dir, FILE_NAME + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            write_all(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(data_dir, FILE_NAME))
    except OSError:
        _unlink_quietly(tmp)  # do not leave a half-written snapshot taking space
        raise
    fsync_dir(data_dir)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def read(data_dir: str) -> Checkpoint | None:
    """The last checkpoint, or None in a data_dir that never had one. A damaged
    checkpoint stops the start-up: serving from a wrong catalog would be worse."""
    path = os.path.join(data_dir, FILE_NAME)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        return None
    if len(blob) < HEADER.size:
        raise CorruptCheckpoint(f"checkpoint {path} is truncated")
    magic, length, crc = HEADER.unpack_from(blob)
    body = blob[HEADER.size :]
    if magic != MAGIC or len(body) != length or zlib.crc32(body) != crc:
        raise CorruptCheckpoint(
            f"checkpoint {path} is damaged (bad header, length or checksum); "
            "restore the data_dir from a backup"
        )
    obj = json.loads(body)
    catalog = Catalog()
    for incarnation, config, state, *index in obj["streams"]:
        entry = Entry(incarnation, config_from_json(config), state_from_json(state))
        if index:
            entry.indexed = index[0]  # entries of its index file (boundaries.py)
        elif entry.state.tail > entry.config.base_offset:
            # Written by a version that kept no boundaries: of those below the checkpoint
            # only its tail is known (an append ended there).
            entry.boundaries.append(entry.state.tail)
        catalog.add(entry)
    return Checkpoint(obj["wal_generation"], catalog)
