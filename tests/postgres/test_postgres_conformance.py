"""The official conformance suite against TWO server nodes on one PostgreSQL database,
through a proxy that alternates every request between them: a stream created on one
node is appended to on the other, read back on the first, and so on; a subscription made
on one node wakes for an append on the other."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nodes import AlternatingProxy, Node

ROOT = Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "conformance" / "run.sh"
EXPECTED_PASSED = 338  # as for the other stores: the whole suite, subscriptions included
SUITE_GUARD = 600

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is required for the suite")


async def test_conformance_two_nodes_alternating(pg_dsn, tmp_path):
    # with a retention policy the suite's own data never reaches (as tests/conformance)
    retention = {"max_age": "30d", "max_size": "1GiB"}
    proxy = AlternatingProxy([])
    # Callback and JWKS URLs name the proxy, the address the suite uses (its Host header
    # does not reach the nodes); the option also turns subscriptions on.
    options = (f"webhook_callback_url {proxy.url}",)
    nodes = [Node(pg_dsn, tmp_path, name, retention=retention, options=options).start() for name in ("a", "b")]
    proxy.route_to([n.url for n in nodes])
    await proxy.start()
    try:
        process = await asyncio.create_subprocess_exec(
            "bash", str(RUN_SH), proxy.url, "--testTimeout=15000",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"})
        out, _ = await asyncio.wait_for(process.communicate(), SUITE_GUARD)
    finally:
        await proxy.stop()
        for node in nodes:
            node.stop()
    output = re.sub(r"\x1b\[[0-9;]*m", "", out.decode(errors="replace"))
    summary = re.search(r"^\s*Tests\s+(.*)$", output, re.MULTILINE)
    assert summary, output[-4000:]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped)", summary.group(1))}
    failures = "\n".join(line for line in output.splitlines() if re.search(r"(FAIL|×|✗)", line))
    assert counts.get("failed", 0) == 0, failures[-6000:]
    assert counts.get("passed") == EXPECTED_PASSED, summary.group(0)
    assert min(proxy.forwarded) > 1000, proxy.forwarded  # both nodes served for real
    for node in nodes:
        assert not node.errors(), node.errors()
