"""Background compaction: runs of small chunk rows become rows of about 64 KiB.

Under load a flush writes one row per stream, often a single append of a hundred
bytes; reading such a stream back row by row is about ten times slower than reading
64 KiB rows. The flusher counts the small bytes it wrote per stream; once a stream
has a row's worth, the compactor merges its contiguous small rows, in a transaction
that replaces them with one row holding the same bytes and the same append
boundaries. Offsets never change, so readers are unaffected: each of their queries
sees the rows before or after the merge, never half of it. An advisory lock per
stream keeps two nodes from merging the same rows, and a key-share lock on the
stream row keeps a concurrent delete from missing the merged row; one stream is merged at a time,
with a pause between, so compaction never competes with appends for long."""

from __future__ import annotations

import asyncio

import structlog

log = structlog.get_logger("durable_streams.store.postgres")

TARGET_ROW = 64 << 10  # bytes per merged row
SMALL_ROW = 16 << 10  # rows below this are merged
MAX_ROWS = 4096  # rows looked at per merge
PAUSE = 0.05  # seconds between two merges

_SMALL_ROWS_SQL = """
SELECT start_offset, end_offset, data, ends FROM chunks
WHERE stream_id = $1 AND end_offset - start_offset < $2
ORDER BY start_offset LIMIT $3
"""


def plan_runs(rows: list, target: int = TARGET_ROW) -> list[list]:
    """Group contiguous rows into runs of about `target` bytes; runs of one are left."""
    runs: list[list] = []
    run: list = []
    size = 0
    for row in rows:
        contiguous = run and run[-1]["end_offset"] == row["start_offset"]
        length = row["end_offset"] - row["start_offset"]
        if run and (not contiguous or size + length > target):
            runs.append(run)
            run, size = [], 0
        run.append(row)
        size += length
    if run:
        runs.append(run)
    return [r for r in runs if len(r) > 1]


class Compactor:
    def __init__(self, pool_of, on_error) -> None:
        self._pool_of = pool_of
        self._on_error = on_error
        self._small: dict[int, int] = {}  # stream id -> small bytes written since its last merge
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.rows_merged = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="postgres-compactor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def wrote(self, stream_id: int, nbytes: int) -> None:
        """The flusher wrote a row of `nbytes` for the stream."""
        if 0 < nbytes < SMALL_ROW:
            total = self._small.get(stream_id, 0) + nbytes
            self._small[stream_id] = total
            if total >= TARGET_ROW:
                self._wake.set()

    def forget(self, stream_id: int) -> None:
        self._small.pop(stream_id, None)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for stream_id in [s for s, n in self._small.items() if n >= TARGET_ROW]:
                self._small.pop(stream_id, None)
                try:
                    await self.compact(stream_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the rows stay as they are: correct, only slower
                    self._on_error(exc)
                await asyncio.sleep(PAUSE)

    async def compact(self, stream_id: int) -> int:
        """Merge the stream's runs of small rows; returns how many rows were merged away."""
        merged = 0
        async with self._pool_of().acquire() as conn:
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", stream_id):
                    return 0  # another node is merging this stream
                # KEY SHARE: a delete of the stream (FOR UPDATE) waits for the merge, and
                # then removes the merged row too; appends (NO KEY UPDATE) never wait.
                if await conn.fetchval("SELECT id FROM streams WHERE id = $1 FOR KEY SHARE", stream_id) is None:
                    return 0
                rows = await conn.fetch(_SMALL_ROWS_SQL, stream_id, SMALL_ROW, MAX_ROWS)
                for run in plan_runs(rows):
                    starts = [r["start_offset"] for r in run]
                    await conn.execute("DELETE FROM chunks WHERE stream_id = $1 AND start_offset = ANY($2::bigint[])",
                                       stream_id, starts)
                    await conn.execute(
                        "INSERT INTO chunks (stream_id, start_offset, end_offset, data, ends) VALUES ($1, $2, $3, $4, $5)",
                        stream_id, run[0]["start_offset"], run[-1]["end_offset"],
                        b"".join(r["data"] for r in run), b"".join(r["ends"] for r in run))
                    merged += len(run) - 1
        self.rows_merged += merged
        return merged
