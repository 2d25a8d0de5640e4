"""PostgreSQL: a shared store for many server nodes (an optional extra: asyncpg)."""

from .store import PostgresStore

__all__ = ["PostgresStore"]
