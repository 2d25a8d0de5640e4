"""Start-up recovery: checkpoint + replay of the log written since it.

The work is proportional to the log since the last checkpoint: stream data before
it is already fsynced in the data files and is not read. Records are replayed up to
the first torn or corrupt one; the log is cut there, so a half-written append is
never served and never acknowledged twice.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import structlog

from . import boundaries, checkpoint, wal
from .catalog import Catalog
from .filepool import index_key
from .records import Kind, Record
from .storage import Storage

log = structlog.get_logger("durable_streams.store.file")


@dataclass(slots=True)
class RecoveryReport:
    seconds: float
    streams: int
    records: int
    log_bytes: int
    damage: str | None


def recover(storage: Storage) -> RecoveryReport:
    started = time.monotonic()
    storage.make_dirs()
    _remove_stale_temp(storage.data_dir)
    ckpt = checkpoint.read(storage.data_dir)
    storage.catalog = ckpt.catalog if ckpt is not None else Catalog()
    first_gen = ckpt.wal_generation if ckpt is not None else 1
    generations = wal.list_generations(storage.wal_dir)
    # Older generations are already covered by the checkpoint (a crash came between
    # writing it and unlinking them).
    storage.wal.remove_older_than(first_gen)
    replay = Replay(storage)
    records = 0
    log_bytes = 0
    damage: str | None = None
    last: tuple[int, int] | None = None  # (generation, good size) of the file to continue
    for gen in [g for g in generations if g >= first_gen]:
        if damage is not None:
            # Records after a damaged one cannot be trusted to follow it: drop them.
            log.error("store_log_dropped_after_damage", generation=gen)
            os.unlink(os.path.join(storage.wal_dir, wal.wal_name(gen)))
            continue
        batch: list[Record] = []
        result = wal.scan(os.path.join(storage.wal_dir, wal.wal_name(gen)), gen, batch)
        for record in batch:
            replay.apply(record)
        records += len(batch)
        log_bytes += result.good_size
        last = (gen, result.good_size)
        if result.damage is not None:
            damage = result.damage
            log.warning(
                "store_log_tail_cut",
                generation=gen,
                reason=result.damage,
                kept_bytes=result.good_size,
                cut_bytes=result.file_size - result.good_size,
            )
    if last is None:
        storage.wal.start(first_gen)
    else:
        storage.wal.open_existing(*last)
    replay.finish()
    report = RecoveryReport(
        seconds=time.monotonic() - started,
        streams=len(storage.catalog.by_path),
        records=records,
        log_bytes=log_bytes,
        damage=damage,
    )
    log.info(
        "store_recovered",
        data_dir=storage.data_dir,
        seconds=round(report.seconds, 6),
        streams=report.streams,
        records_replayed=records,
        log_bytes_replayed=log_bytes,
        damage=damage,
    )
    return report


class Replay:
    """Re-applies logged records: catalog changes and the bytes of the data files
    (rewriting bytes that may already be there is harmless; positions are explicit)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.touched: set[str] = set()
        # incarnation -> (length the checkpoint promised, file size found before replay)
        self.found: dict[str, tuple[int, int]] = {}

    def apply(self, record: Record) -> None:
        catalog = self.storage.catalog
        entry = catalog.by_incarnation.get(record.meta.get("i")) if record.kind is not Kind.TOUCH else None
        if entry is not None and entry.incarnation not in self.touched:
            self._note_file(entry.incarnation, entry.state.tail - entry.config.base_offset)
        self.storage.apply_durable(record)
        if not record.data:
            return
        entry = catalog.by_incarnation.get(record.incarnation)
        if entry is None:
            return
        self.touched.add(entry.incarnation)
        if record.kind is Kind.CREATE:
            self.storage.write_data(entry.incarnation, 0, record.data)
        elif record.kind is Kind.APPEND:
            position = record.meta["p"] - entry.config.base_offset
            self.storage.write_data(entry.incarnation, position, record.data)

    def _note_file(self, incarnation: str, length: int) -> None:
        self.touched.add(incarnation)
        try:
            size = os.stat(self.storage.pool.path_of(incarnation)).st_size
        except FileNotFoundError:
            size = 0
        self.found[incarnation] = (length, size)

    def finish(self) -> None:
        """Cut bytes past the recovered tail (from writes whose log record never made it),
        and report data files that lost bytes the checkpoint had made durable."""
        for incarnation in self.touched:
            entry = self.storage.catalog.by_incarnation.get(incarnation)
            if entry is None:  # deleted later in the log: its file is gone, rightly
                continue
            promised, size = self.found.get(incarnation, (0, 0))
            if size < promised:
                log.error(
                    "store_data_file_damaged",
                    path=entry.config.path,
                    file=self.storage.pool.path_of(incarnation),
                    expected_at_least=promised,
                    found=size,
                )
            length = entry.state.tail - entry.config.base_offset
            with self.storage.pool.handle(incarnation, create=True) as fd:
                if os.fstat(fd).st_size > length:
                    os.ftruncate(fd, length)
            self._cut_index(entry.incarnation, entry.indexed * boundaries.ENTRY_BYTES)

    def _cut_index(self, incarnation: str, length: int) -> None:
        """Drop index entries past the checkpoint's count (from a checkpoint that was
        not installed): replay has just rebuilt them in memory from the log."""
        path = self.storage.pool.path_of(index_key(incarnation))
        try:
            if os.stat(path).st_size > length:
                os.truncate(path, length)
        except FileNotFoundError:
            pass


def _remove_stale_temp(data_dir: str) -> None:
    try:
        os.unlink(os.path.join(data_dir, checkpoint.FILE_NAME + ".tmp"))
    except FileNotFoundError:
        pass
