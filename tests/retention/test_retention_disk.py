"""Retention gives the disk back on the file store: under `max_size 256KiB`, a stream
that receives 4 MiB in 64 KiB appends keeps its data file's apparent size (offsets never
move) while its allocated blocks stop growing (holes punched below the floor), and the
data directory as a whole stops growing too (the log is checkpointed away)."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from durable_streams.server.engine.offsets import format_offset, parse_position

from retention_servers import Server, client, data_blocks, retention_block

KiB, MiB = 1 << 10, 1 << 20
MAX_SIZE = 256 * KiB
PIECE = 64 * KiB
TOTAL = 4 * MiB
BINARY = {"Content-Type": "application/octet-stream"}
WAIT = 10.0  # a guard against a stuck retention pass, not a benchmark


def _data_file(data_dir: Path) -> Path | None:
    """The one stream's data file (written once the store writes its staged bytes out)."""
    files = [Path(root) / name for root, _, names in os.walk(data_dir) for name in names if name.endswith(".data")]
    assert len(files) <= 1, files
    return files[0] if files else None


def _allocated(path: Path | None) -> int:
    return 0 if path is None else os.stat(path).st_blocks * 512


def test_file_store_punches_the_blocks_below_the_floor(tmp_path):
    srv = Server(tmp_path, "file", [retention_block(max_size="256KiB")],
                 env={"DURABLE_STREAMS_CHECKPOINT_BYTES": str(1 * MiB)}).start()
    rng = random.Random(7)
    try:
        with client() as http:
            url = srv.url("disk")
            assert http.put(url, headers=BINARY).status_code == 201
            data_file = None
            written = bytearray()
            samples = []  # (bytes appended, data file allocated, data dir allocated)
            while len(written) < TOTAL:
                piece = rng.randbytes(PIECE)
                assert http.post(url, content=piece, headers=BINARY).status_code == 204
                written += piece
                data_file = data_file or _data_file(srv.data_dir)
                if len(written) % MiB == 0:
                    samples.append((len(written), _allocated(data_file), data_blocks(srv.data_dir)[0]))
            deadline = time.monotonic() + WAIT
            while True:
                data_file = data_file or _data_file(srv.data_dir)
                head = http.head(url)
                floor = parse_position(head.headers.get("Stream-Earliest-Offset", "-1"))
                allocated = _allocated(data_file)
                if floor >= TOTAL - MAX_SIZE and allocated <= MAX_SIZE + PIECE:
                    break
                assert time.monotonic() < deadline, (floor, allocated, samples)
                time.sleep(0.05)
            assert data_file is not None
            # offsets stay put: the file keeps its apparent size, only the blocks went
            assert os.stat(data_file).st_size == TOTAL
            assert floor % PIECE == 0 and TOTAL - MAX_SIZE <= floor
            # while 4 MiB went in, the data file never held much more than the bound
            assert samples[-1][1] > 0, samples
            assert all(alloc <= MAX_SIZE + 2 * PIECE for _, alloc, _ in samples), samples
            # and the data directory (data file, index, log, checkpoints) stopped growing
            total_allocated, _ = data_blocks(srv.data_dir)
            assert total_allocated < 3 * MiB and samples[-1][2] < 3 * MiB, (total_allocated, samples)
            # what is left is byte-exact; below it, 410, never the zeros of the holes
            r = http.get(url, params={"offset": "-1"})
            assert r.status_code == 200 and r.content == bytes(written[floor:])
            r = http.get(url, params={"offset": format_offset(0)})
            assert r.status_code == 410
    finally:
        srv.stop()
    assert not srv.errors(), srv.errors()
    # a restart keeps floor and holes
    srv.start()
    try:
        with client() as http:
            head = http.head(srv.url("disk"))
            assert parse_position(head.headers["Stream-Earliest-Offset"]) == floor
            r = http.get(srv.url("disk"), params={"offset": "-1"})
            assert r.content == bytes(written[floor:])
        assert _allocated(data_file) <= MAX_SIZE + PIECE
    finally:
        srv.stop()
