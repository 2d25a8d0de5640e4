"""The benchmark's flush-delay shim (bench/flush_delay.c): a flush through the C library
takes the added latency, still does its real work, and still reports its real errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "http_bench.py"

PROBE = """
import errno, os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)
os.write(fd, b"x")
timings = []
for flush in (os.fsync, os.fdatasync):
    started = time.perf_counter()
    flush(fd)
    timings.append(time.perf_counter() - started)
try:
    os.fsync(10_000)  # not an open descriptor: the real call's EBADF must come through
except OSError as exc:
    print(exc.errno == errno.EBADF, end=" ")
print(min(timings))
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    if not sys.platform.startswith("linux"):
        pytest.skip("the shim is loaded with LD_PRELOAD (Linux)")
    spec = importlib.util.spec_from_file_location("http_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("http_bench", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    built = bench.build_flush_shim(tmp_path_factory.mktemp("shim"))
    if built is None:
        pytest.skip("no C compiler here: the benchmark skips its flush test too")
    return built


def probe(shim: Path, tmp_path: Path, delay_us: int | None) -> tuple[bool, float]:
    env = {**os.environ, "LD_PRELOAD": str(shim)}
    if delay_us is not None:
        env["DS_BENCH_FLUSH_DELAY_US"] = str(delay_us)
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "f")], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    return out[0] == "True", float(out[1])


def test_every_flush_takes_the_added_latency(shim, tmp_path):
    errno_kept, fastest = probe(shim, tmp_path, 50_000)
    assert fastest >= 0.05
    assert errno_kept


def test_without_a_delay_flushes_are_untouched(shim, tmp_path):
    errno_kept, fastest = probe(shim, tmp_path, None)
    assert fastest < 0.05
    assert errno_kept
