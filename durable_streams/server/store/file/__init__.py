"""The durable file store: a shared write-ahead log with group commit, per-stream data files, checkpoints."""

from .lock import DataDirInUse
from .store import FileStore

__all__ = ["FileStore", "DataDirInUse"]
