"""The in-memory catalog: every live stream incarnation with its config and state.

It changes only by applying log records, through `apply`, both when the writer has
made a batch durable and when recovery replays the log: one code path, so the state
after a restart is by construction the state that was acknowledged.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from ..base import StoredStream, StreamConfig, StreamState
from .records import Kind, Record, apply_commit, config_from_json, state_from_json


@dataclass(slots=True)
class Entry:
    incarnation: str  # unique per (path, creation): names the data file
    config: StreamConfig
    state: StreamState
    # This entry's checkpoint form, kept until the state changes: a checkpoint re-encodes
    # only the streams written since the last one, however many streams exist.
    encoded: bytes | None = None
    # Append ends since the last checkpoint (boundaries.py); older ones are the first
    # `indexed` entries of the index file. Replaced, never shrunk, when a checkpoint
    # moves them to the file: a reader holding the old array still sees all of it.
    boundaries: array = field(default_factory=lambda: array("q"))
    indexed: int = 0
    # Data-file bytes below this were handed back to the file system (retention); not
    # persisted: after a restart the next retention pass punches from 0 again, harmlessly.
    punched: int = 0

    def snapshot(self) -> StoredStream:
        # Callers get copies: the engine mutates its own StreamState objects.
        return StoredStream(self.config, self.state.copy())


class Catalog:
    def __init__(self) -> None:
        self.by_path: dict[str, Entry] = {}
        self.by_incarnation: dict[str, Entry] = {}

    def add(self, entry: Entry) -> None:
        old = self.by_path.get(entry.config.path)
        if old is not None:  # only after damage: a create must follow a delete
            self.by_incarnation.pop(old.incarnation, None)
        self.by_path[entry.config.path] = entry
        self.by_incarnation[entry.incarnation] = entry

    def apply(self, record: Record) -> Entry | None:
        """Apply one record; returns the entry it concerned (None if unknown or a touch)."""
        if record.kind is Kind.CREATE:
            entry = Entry(
                record.incarnation,
                config_from_json(record.meta["config"]),
                state_from_json(record.meta["state"]),
            )
            if record.data:
                entry.boundaries.append(entry.state.tail)
            self.add(entry)
            return entry
        if record.kind is Kind.TOUCH:
            for incarnation, when in record.meta["t"]:
                entry = self.by_incarnation.get(incarnation)
                if entry is not None and when > entry.state.last_access:
                    entry.state.last_access = when
                    entry.encoded = None
            return None
        entry = self.by_incarnation.get(record.incarnation)
        if entry is None:
            return None
        if record.kind is Kind.APPEND:
            apply_commit(entry.state, record.meta["c"])
            entry.encoded = None
            if record.data:  # a close without data ends no append
                entry.boundaries.append(entry.state.tail)
        elif record.kind is Kind.RETAIN:
            entry.state.floor = max(entry.state.floor, record.meta["f"])
            entry.state.marks = tuple(tuple(m) for m in record.meta["m"])
            entry.encoded = None
        elif record.kind is Kind.SOFT_DELETE:
            entry.state.soft_deleted = True
            entry.encoded = None
        elif record.kind is Kind.DELETE:
            del self.by_incarnation[entry.incarnation]
            if self.by_path.get(entry.config.path) is entry:
                del self.by_path[entry.config.path]
        return entry
