"""Storage back-ends behind one contract (base.py)."""

from __future__ import annotations

from .base import StreamStore


def open_store(data_dir: str | None, max_file_handles: int = 100, *,
               postgres_dsn: str | None = None, postgres_pool_size: int = 10) -> StreamStore:
    """The PostgreSQL store when a DSN is given, else the durable file store over
    `data_dir`, else the in-memory store."""
    if postgres_dsn is not None:
        from .postgres import PostgresStore  # needs the optional asyncpg

        return PostgresStore(postgres_dsn, pool_size=postgres_pool_size)
    if data_dir is None:
        from .memory import MemoryStore

        return MemoryStore()
    from .file import FileStore  # imported lazily: only file-backed servers need it

    return FileStore(data_dir, max_file_handles=max_file_handles)
