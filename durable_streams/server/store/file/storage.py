"""The on-disk state of a data_dir and the synchronous operations on it.

Layout:
    <data_dir>/LOCK                       flock + pid: one process per data_dir
    <data_dir>/checkpoint                 catalog snapshot + log generation to replay from
    <data_dir>/wal/<generation>.wal       shared write-ahead log (all streams)
    <data_dir>/streams/<xx>/<id>.data     raw bytes of one stream incarnation; file position
                                          = logical position - base_offset
    <data_dir>/streams/<xx>/<id>.idx      its append boundaries up to the checkpoint
                                          (u64 little-endian end offsets; boundaries.py)

Used by exactly one thread at a time: recovery, then the writer thread; readers only
call `read_data` and `next_indexed_boundary`.
"""

from __future__ import annotations

import os
import threading
from array import array
from dataclasses import dataclass

import structlog

from . import boundaries, checkpoint
from .catalog import Catalog
from .filepool import INDEX_SUFFIX, DataFilePool, index_key
from .fsutil import fsync_dir, punch_hole, pwrite_all
from .records import Kind, Record
from .staging import StagedTails
from .syncfs import SYNCFS_THRESHOLD, syncfs, syncfs_available
from .wal import WalFile

SHARDS = [f"{i:02x}" for i in range(256)]
log = structlog.get_logger("durable_streams.store.file")
HOLE_BLOCK = 4096  # retention frees data-file blocks of this size (the file system's block)


@dataclass(slots=True)
class PendingCheckpoint:
    generation: int  # first log generation NOT covered by the snapshot
    snapshot: bytes
    files: set[str]  # data files written before the snapshot, to flush
    shards: set[str]  # shard directories with created/unlinked entries, to flush


class Storage:
    def __init__(self, data_dir: str, max_file_handles: int) -> None:
        self.data_dir = data_dir
        self.wal_dir = os.path.join(data_dir, "wal")
        self.streams_dir = os.path.join(data_dir, "streams")
        self.catalog = Catalog()
        self.pool = DataFilePool(self.streams_dir, max_file_handles)
        self.wal = WalFile(self.wal_dir)
        # Written since the last checkpoint: must be fsynced before the log can go.
        self._dirty_lock = threading.Lock()  # the checkpoint thread hands sets back on failure
        self._dirty_files: set[str] = set()
        self._dirty_shards: set[str] = set()
        self.staged = StagedTails()

    def make_dirs(self) -> None:
        created = False
        for d in (self.wal_dir, self.streams_dir):
            if not os.path.isdir(d):
                os.makedirs(d, exist_ok=True)
                created = True
        for shard in SHARDS:
            d = os.path.join(self.streams_dir, shard)
            if not os.path.isdir(d):
                os.mkdir(d)
                created = True
        if created:
            fsync_dir(self.streams_dir)
            fsync_dir(self.data_dir)

    def write_data(self, incarnation: str, file_position: int, data: bytes) -> None:
        """Put bytes into a stream's data file (page cache only; the log makes them durable)."""
        with self._dirty_lock:
            self._dirty_files.add(incarnation)
            self._dirty_shards.add(incarnation[:2])
        with self.pool.handle(incarnation, create=True) as fd:
            pwrite_all(fd, data, file_position)

    def stage_data(self, incarnation: str, file_position: int, data: bytes) -> None:
        """Bytes whose log record is durable: to the data file later, in bulk."""
        if not self.staged.stage(incarnation, file_position, data):
            self.write_staged()  # not contiguous (cannot happen in order; be safe)
            if not self.staged.stage(incarnation, file_position, data):
                self.write_data(incarnation, file_position, data)

    def write_staged(self) -> None:
        """Write every staged byte to its data file: one write per stream. On an error the
        rest stays staged (and readable) for the next try; the log still holds it all."""
        for incarnation, position, chunks in self.staged.pending():
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.write_data(incarnation, position, data)
            self.staged.written(incarnation, len(chunks), len(data))

    def read_data(self, incarnation: str, file_position: int, length: int) -> bytes:
        """Bytes of a stream: from its file, and the staged part from memory (any thread)."""
        boundary, staged = self.staged.split(incarnation, file_position, length)
        if boundary <= file_position:
            return staged
        parts = []
        with self.pool.handle(incarnation) as fd:
            position, left = file_position, boundary - file_position
            while left:
                chunk = os.pread(fd, left, position)
                if not chunk:
                    raise EOFError(self.pool.path_of(incarnation))
                parts.append(chunk)
                position += len(chunk)
                left -= len(chunk)
        if not staged and len(parts) == 1:
            return parts[0]  # the usual case: no copy of a piece that may be a MiB
        parts.append(staged)
        return b"".join(parts)

    def write_indexes(self) -> None:
        """Move the boundaries kept in memory since the last checkpoint to the index
        files: one write per stream that has new ones (page cache; fsynced with the data
        files before the checkpoint that counts them)."""
        for entry in self.catalog.by_incarnation.values():
            fresh = entry.boundaries
            if not fresh:
                continue
            key = index_key(entry.incarnation)
            with self._dirty_lock:
                self._dirty_files.add(key)
                self._dirty_shards.add(key[:2])
            with self.pool.handle(key, create=True) as fd:
                pwrite_all(fd, boundaries.to_disk(fresh), entry.indexed * boundaries.ENTRY_BYTES)
            # In this order: a reader takes the array first, then the count (see next_boundary).
            entry.indexed += len(fresh)
            entry.boundaries = array("q")
            entry.encoded = None

    def next_indexed_boundary(self, incarnation: str, count: int, position: int) -> int | None:
        """The first boundary past `position` among the first `count` in the index file
        (any thread); None when there is none, or no file (a data_dir from before them)."""
        try:
            with self.pool.handle(index_key(incarnation)) as fd:
                return boundaries.next_in_index(fd, count, position)
        except FileNotFoundError:
            return None

    def apply_durable(self, record: Record) -> None:
        """Apply a record that is in the durable log to the catalog, and reclaim the
        storage of a deleted incarnation (the log's DELETE record keeps it dead)."""
        entry = self.catalog.apply(record)
        if record.kind is Kind.DELETE and entry is not None:
            self.discard_file(entry.incarnation)

    def reclaim_below_floor(self, incarnation: str) -> int:
        """Punch holes in the data file below the stream's (durable) floor: the blocks go
        back to the file system and every offset stays where it was. Whole blocks only;
        returns the bytes punched now."""
        entry = self.catalog.by_incarnation.get(incarnation)
        if entry is None:
            return 0
        end = (entry.state.floor - entry.config.base_offset) // HOLE_BLOCK * HOLE_BLOCK
        if end <= entry.punched:
            return 0
        self.write_staged()  # bytes below the floor may still wait in memory
        try:
            with self.pool.handle(incarnation) as fd:
                punch_hole(fd, entry.punched, end - entry.punched)
        except OSError as exc:  # the floor holds; only the space is not reclaimed
            log.warning("store_punch_hole_failed", incarnation=incarnation, error=str(exc))
            return 0
        reclaimed, entry.punched = end - entry.punched, end
        return reclaimed

    def discard_file(self, incarnation: str) -> None:
        """Remove an incarnation's data file and its index file."""
        self.staged.discard(incarnation)
        for key in (incarnation, index_key(incarnation)):
            self.pool.discard(key)
            with self._dirty_lock:
                self._dirty_files.discard(key)
                self._dirty_shards.add(key[:2])  # the unlink must be durable too
            try:
                os.unlink(self.pool.path_of(key))
            except FileNotFoundError:
                pass
            except OSError as exc:  # the delete itself is durable; only space is not reclaimed
                log.error("store_unlink_failed", incarnation=incarnation, file=key, error=str(exc))

    def begin_checkpoint(self) -> PendingCheckpoint:
        """Writer thread, between batches: switch to a new log generation and snapshot the
        catalog, which at this moment is exactly the state after every older record.
        `finish_checkpoint` may then run on another thread while appends continue."""
        self.write_staged()  # the files must hold everything the snapshot covers
        self.write_indexes()
        generation = self.wal.generation + 1
        # The new log file exists before any checkpoint names it: whichever later step
        # fails, the checkpoint on disk points at logs that hold everything after it.
        self.wal.start(generation)
        snapshot = checkpoint.encode(generation, self.catalog)
        with self._dirty_lock:
            files, shards = self._dirty_files, self._dirty_shards
            self._dirty_files, self._dirty_shards = set(), set()
        return PendingCheckpoint(generation, snapshot, files, shards)

    def finish_checkpoint(self, pending: PendingCheckpoint) -> None:
        """Make the data files durable, install the snapshot, drop the older logs."""
        try:
            self._flush_files(pending.files, pending.shards)
            checkpoint.write(self.data_dir, pending.snapshot)
            self.wal.remove_older_than(pending.generation)
        except OSError:
            with self._dirty_lock:  # still not known durable: the next checkpoint retries
                self._dirty_files |= pending.files
                self._dirty_shards |= pending.shards
            raise

    def _flush_files(self, files: set[str], shards: set[str]) -> None:
        if len(files) + len(shards) > SYNCFS_THRESHOLD and syncfs_available():
            syncfs(self.streams_dir)
            return
        for incarnation in files:
            try:
                with self.pool.handle(incarnation) as fd:
                    os.fsync(fd)
            except FileNotFoundError:
                pass  # deleted since: its DELETE record is in the newer log
        for shard in shards:
            fsync_dir(os.path.join(self.streams_dir, shard))

    def orphan_files(self) -> list[str]:
        """Incarnations with data or index files but no live entry (left by a crash
        between writing a create's bytes and its log record, or by an unlink lost in a
        crash)."""
        orphans: dict[str, None] = {}
        live = self.catalog.by_incarnation
        for shard in SHARDS:
            with os.scandir(os.path.join(self.streams_dir, shard)) as it:
                for item in it:
                    stem, _, ext = item.name.partition(".")
                    if ext in ("data", INDEX_SUFFIX[1:]) and stem not in live:
                        orphans[stem] = None
        return list(orphans)

    def close(self) -> None:
        self.wal.close()
        self.pool.close_all()
