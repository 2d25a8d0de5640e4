"""The database schema, its version, and the one migration path.

A server refuses a schema newer than it knows (an older binary must never write a
format it does not understand) and brings an older one up to date on start, under an
advisory lock so that nodes starting together migrate once. Versions only go up.

Tables:
- `streams`: one row per incarnation. `id` comes from an identity column and is never
  reused; `path` is unique among the rows present (live or soft-deleted: a soft-deleted
  stream keeps its path until its forks are gone, as in the other stores).
- `producers`: idempotent producer state, keyed by (stream, producer id).
- `documents`: small records of the layers above streams (subscriptions, signing keys),
  by (kind, name), each with the count of its writes for compare-and-set.
- `chunks`: the bytes, keyed by (stream, start offset), one row per flushed run of
  appends, stored uncompressed out of line (STORAGE EXTERNAL: catch-up reads copy,
  never inflate). `ends` packs the append boundaries inside the row (int64 LE).
Chunks and producers carry no foreign keys: a check per inserted row would cost every
append, and the only writer that removes a stream deletes them in the same transaction.
"""

from __future__ import annotations

SCHEMA_VERSION = 3
MIGRATION_LOCK = 0x6473_7374  # pg_advisory_xact_lock key ("dsst")

_VERSION_1 = """
CREATE TABLE ds_schema (version integer NOT NULL);
INSERT INTO ds_schema VALUES (0);
CREATE TABLE streams (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    path          text NOT NULL,
    content_type  text NOT NULL,
    created_at    double precision NOT NULL,
    base_offset   bigint NOT NULL,
    settings      jsonb NOT NULL,
    fork_source   bigint REFERENCES streams (id),
    tail          bigint NOT NULL,
    closed        boolean NOT NULL DEFAULT false,
    closed_by_producer text,
    closed_by_epoch    bigint,
    closed_by_seq      bigint,
    stream_seq    text,
    soft_deleted  boolean NOT NULL DEFAULT false,
    last_access   double precision NOT NULL
);
CREATE UNIQUE INDEX streams_path ON streams (path);
CREATE INDEX streams_fork_source ON streams (fork_source) WHERE fork_source IS NOT NULL;
CREATE TABLE producers (
    stream_id   bigint NOT NULL,
    producer_id text NOT NULL,
    epoch       bigint NOT NULL,
    seq         bigint NOT NULL,
    updated_at  double precision NOT NULL,
    PRIMARY KEY (stream_id, producer_id)
);
CREATE TABLE chunks (
    stream_id    bigint NOT NULL,
    start_offset bigint NOT NULL,
    end_offset   bigint NOT NULL,
    data         bytea NOT NULL,
    ends         bytea NOT NULL,
    PRIMARY KEY (stream_id, start_offset)
);
ALTER TABLE chunks ALTER COLUMN data SET STORAGE EXTERNAL;
"""

# Version 2: retention (engine/retention.py): the floor, and the age marks it comes from.
_VERSION_2 = """
ALTER TABLE streams ADD COLUMN floor bigint NOT NULL DEFAULT 0;
ALTER TABLE streams ADD COLUMN marks jsonb NOT NULL DEFAULT '[]';
"""

# Version 3: documents (store/base.py): subscriptions and their signing keys.
_VERSION_3 = """
CREATE TABLE documents (
    kind     text NOT NULL,
    name     text NOT NULL,
    version  bigint NOT NULL,
    body     bytea NOT NULL,
    PRIMARY KEY (kind, name)
);
"""

# MIGRATIONS[n] takes a database at version n to n + 1.
MIGRATIONS: dict[int, str] = {0: _VERSION_1, 1: _VERSION_2, 2: _VERSION_3}


class SchemaError(Exception):
    """The database holds a schema this server cannot use."""


async def current_version(conn) -> int | None:
    """The schema version, or None for a database without our tables."""
    exists = await conn.fetchval("SELECT to_regclass('ds_schema') IS NOT NULL")
    if not exists:
        return None
    return await conn.fetchval("SELECT version FROM ds_schema")


async def migrate(conn, log=None) -> tuple[int, int]:
    """Bring the schema to SCHEMA_VERSION; returns (from, to). Refuses a newer schema."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        found = await current_version(conn)
        version = 0 if found is None else found
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"the database schema is version {version}, newer than this server's "
                f"{SCHEMA_VERSION}: upgrade durable-streams-server")
        start = version
        while version < SCHEMA_VERSION:
            await conn.execute(MIGRATIONS[version])
            version += 1
            await conn.execute("UPDATE ds_schema SET version = $1", version)
        if log is not None and version != start:
            log.info("database schema migrated", schema_from=start, schema_to=version)
        return start, version
