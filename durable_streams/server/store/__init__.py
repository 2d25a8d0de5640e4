"""Storage back-ends behind one contract (base.py)."""

from __future__ import annotations

from .base import StreamStore


def open_store(data_dir: str | None, max_file_handles: int = 100) -> StreamStore:
    """The in-memory store when `data_dir` is None, else the durable file store."""
    if data_dir is None:
        from .memory import MemoryStore

        return MemoryStore()
    from .file import FileStore  # imported lazily: only file-backed servers need it

    return FileStore(data_dir, max_file_handles=max_file_handles)
