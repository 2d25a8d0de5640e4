"""Smoke run of bench/h2_bench.py: h2load drives one real server over TLS with HTTP/1.1
and HTTP/2 (it checks the protocol h2load negotiated and that every append succeeded),
and the report has a CPU-per-append figure and ratio for each mode."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "h2_bench.py"


def test_h2_bench_reports_cpu_per_append_for_each_protocol():
    if shutil.which("h2load") is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail("h2load is missing (apt-get install nghttp2-client)")
        pytest.skip("h2load is missing (apt-get install nghttp2-client)")
    done = subprocess.run([sys.executable, str(BENCH), "--requests", "300", "--rounds", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    row = re.search(r"^srv CPU us/append\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+lower$",
                    done.stdout, re.MULTILINE)
    assert row, done.stdout
    h1, h2, mux, h2_ratio, mux_ratio = map(float, row.groups())
    assert min(h1, h2, mux) > 0
    assert h2_ratio == pytest.approx(h2 / h1, abs=0.03) and mux_ratio == pytest.approx(mux / h1, abs=0.03)  # of rounded figures
