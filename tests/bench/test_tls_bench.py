"""Smoke run of bench/tls_bench.py against both real servers over TLS: it runs, wrk really
reconnects (full handshakes when asked, resumed ones otherwise), and it reports a
handshake cost for ours and for Node."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "tls_bench.py"


def missing_tool() -> str | None:
    for tool in ("wrk", "node"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return "no C compiler for the wrk shim"
    if not (REPO / "bench" / "node" / "node_modules" / "@durable-streams" / "server").exists():
        return "the Node peer is not installed (npm ci in bench/node)"
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if reason := missing_tool():
        pytest.skip(reason)
    output = tmp_path_factory.mktemp("tls") / "tls.json"
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--certs", "ecdsa",
                           "--no-plain", "--output", str(output)],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout, json.loads(output.read_text())


def samples(doc: dict, key: str, kind: str) -> list[dict]:
    found = doc["samples"][key][kind]
    assert found and all("failed" not in s for s in found), found
    return found


@pytest.mark.parametrize("kind", ["ours", "node"])
def test_every_request_of_close_full_is_a_new_full_handshake(run, kind):
    _, doc = run
    for sample in samples(doc, "ecdsa-close-full-now", kind):
        counts = sample["counts"]
        assert sample["errors"] == 0, sample["first_error"]
        assert counts["connects"] >= sample["requests"] > 0
        assert counts["handshakes"] >= sample["requests"]
        assert counts["resumed"] == 0
        assert counts["version"] == "TLSv1.3"


@pytest.mark.parametrize("kind", ["ours", "node"])
def test_keep_alive_keeps_its_connections_and_close_resumed_resumes(run, kind):
    _, doc = run
    for sample in samples(doc, "ecdsa-keep-alive-now", kind):
        assert sample["errors"] == 0, sample["first_error"]
        assert sample["counts"]["connects"] <= 2 * doc["settings"]["wrk_connections"]
        assert sample["requests"] > 10 * sample["counts"]["connects"]
    for sample in samples(doc, "ecdsa-close-resumed-now", kind):
        assert sample["errors"] == 0, sample["first_error"]
        assert 0 < sample["counts"]["resumed"] <= sample["counts"]["handshakes"]


def test_reports_the_handshake_cost_of_both_servers_and_their_ratio(run):
    stdout, doc = run
    assert "handshake cost per new connection" in stdout
    full = next(r for r in doc["handshake_costs"]
                if (r["variant"], r["scenario"], r["mode"]) == ("ecdsa", "close full", "now"))
    # A full handshake costs the server far more CPU than a request on an open connection.
    assert full["values"]["ours"] > 0 and full["values"]["node"] > 0
    assert full["ratio"] == pytest.approx(full["values"]["ours"] / full["values"]["node"])
    rows = {(r["case"], r["metric"]): r for r in doc["summary"]}
    cpu = rows["ecdsa-close-full-now", "server_cpu_us_per_op"]["values"]
    assert cpu["ours"] > 0 and cpu["node"] > 0
