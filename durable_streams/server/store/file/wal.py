"""The shared write-ahead log: numbered files `wal/<generation>.wal`, one per checkpoint interval.

Every file starts with a header naming its generation; records follow back to back.
Only the writer thread appends. A failed batch is cut off again (ftruncate + fsync),
so the log holds exactly the records that were acknowledged, plus lazily written touches.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from . import records
from .fsutil import fsync_dir, write_all, writev_all

FILE_MAGIC = b"DSWAL\x00v1"
FILE_HEADER = struct.Struct("<8sQ")  # magic, generation


def wal_name(generation: int) -> str:
    return f"{generation:020d}.wal"


def list_generations(wal_dir: str) -> list[int]:
    gens = []
    for name in os.listdir(wal_dir):
        stem, dot, ext = name.partition(".")
        if ext == "wal" and stem.isdigit():
            gens.append(int(stem))
    return sorted(gens)


@dataclass(slots=True)
class ScanResult:
    good_size: int  # bytes of the file up to the end of the last complete record
    file_size: int
    damage: str | None  # why scanning stopped early (torn/corrupt), None if clean


def scan(path: str, generation: int, out: list[records.Record]) -> ScanResult:
    """Read every complete, checksummed record of one log file into `out`."""
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        header = f.read(FILE_HEADER.size)
        if len(header) < FILE_HEADER.size:
            return ScanResult(0, file_size, "torn file header" if header else None)
        magic, gen = FILE_HEADER.unpack(header)
        if magic != FILE_MAGIC or gen != generation:
            return ScanResult(0, file_size, "bad file header")
        position = FILE_HEADER.size
        for damage, record, end in _frames(f, position, file_size):
            if damage:
                return ScanResult(position, file_size, damage)
            out.append(record)
            position = end
        return ScanResult(position, file_size, None)


def _frames(f, position: int, file_size: int) -> Iterator[tuple[str | None, records.Record | None, int]]:
    while position < file_size:
        header = f.read(records.FRAME_HEADER.size)
        if len(header) < records.FRAME_HEADER.size:
            yield "torn frame header", None, position
            return
        length, crc = records.FRAME_HEADER.unpack(header)
        end = position + records.FRAME_HEADER.size + length
        if length == 0 or end > file_size:
            # Zero length: blocks allocated but never written (the usual shape of a torn
            # tail after power loss). Past the end: the record's bytes never all arrived.
            yield ("zeroed tail" if length == 0 else "torn record"), None, position
            return
        body = f.read(length)
        if zlib.crc32(body) != crc:
            yield "checksum mismatch", None, position
            return
        try:
            record = records.decode_body(body)
        except records.CorruptRecord as exc:
            yield f"undecodable record ({exc})", None, position
            return
        yield None, record, end
        position = end


class WalFile:
    """The log file currently appended to."""

    def __init__(self, wal_dir: str) -> None:
        self.wal_dir = wal_dir
        self.generation = 0
        self.size = 0
        self._fd: int | None = None

    def open_existing(self, generation: int, good_size: int) -> None:
        """Continue an existing file after recovery, cutting any torn tail."""
        fd = os.open(self._path(generation), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        if good_size < FILE_HEADER.size:  # nothing usable, not even the header
            os.ftruncate(fd, 0)
            write_all(fd, FILE_HEADER.pack(FILE_MAGIC, generation))
            good_size = FILE_HEADER.size
        elif os.fstat(fd).st_size != good_size:
            os.ftruncate(fd, good_size)
        os.fsync(fd)
        self._swap(fd, generation, good_size)

    def start(self, generation: int) -> None:
        """Create a fresh log file (after a checkpoint or in an empty data_dir)."""
        path = self._path(generation)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            write_all(fd, FILE_HEADER.pack(FILE_MAGIC, generation))
            os.fsync(fd)
            fsync_dir(self.wal_dir)
        except BaseException:
            os.close(fd)
            raise
        self._swap(fd, generation, FILE_HEADER.size)

    def append(self, buffers: list[bytes]) -> None:
        self.size += writev_all(self._fd, buffers)

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def cut_back(self, size: int) -> None:
        """Remove a failed batch's bytes; made durable so they cannot resurface after a crash."""
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)
        self.size = size

    def remove_older_than(self, generation: int) -> None:
        for gen in list_generations(self.wal_dir):
            if gen < generation:
                os.unlink(os.path.join(self.wal_dir, wal_name(gen)))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _path(self, generation: int) -> str:
        return os.path.join(self.wal_dir, wal_name(generation))

    def _swap(self, fd: int, generation: int, size: int) -> None:
        self.close()
        self._fd, self.generation, self.size = fd, generation, size
