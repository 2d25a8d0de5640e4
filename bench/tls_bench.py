"""TLS handshake cost per new connection: our server against the Node reference server,
both over TLS with the same certificate, in the same run.

Every target serves HTTPS on 127.0.0.1 with a generated certificate (ECDSA P-256 leaf,
and RSA 2048 as a second figure, both signed by a generated ECDSA CA), in-memory store:
- ours: `durable-streams-server run` with a `tls <cert> <key>` site;
- node: bench/node/serve.mjs --tls-cert/--tls-key (@durable-streams/server's own request
  handler on node:https, in the same process).
A plain-HTTP pair (`plain`) gives the cost of a new TCP connection without TLS.

wrk (over https) runs each scenario for the window, with bench/wrk_streams.lua:
- `keep-alive`: 32 connections kept open (the baseline);
- `close full`: `-H "Connection: close"`, every request a new TCP + TLS connection with a
  full handshake (bench/tls_client_shim.c drops wrk's session before each handshake);
- `close resumed`: the same, with wrk's own behaviour: it resumes the last session with
  the server's TLS 1.3 ticket (PSK + ECDHE, no certificate signature) when it has one;
  `resumed/handshake` says how often it did.
The shim, preloaded into wrk, counts its connects, handshakes and resumptions: a sample
whose counts do not match its scenario fails.

Handshake cost = median server CPU per request in a close scenario minus the median in
keep-alive, per target; reported ours/node. Rounds interleave the targets (the order
alternates), so both sides of a ratio share the machine's minute.

    .venv/bin/python bench/tls_bench.py                 # about 3 minutes
    .venv/bin/python bench/tls_bench.py --quick         # smoke run; don't quote it
    .venv/bin/python bench/tls_bench.py --certs ecdsa --modes now,append --rounds 5

See bench/README.md, "TLS benchmark".
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import http_bench as hb  # noqa: E402  (processes, CPU accounting, wrk helpers, table)

HOST = hb.HOST
STREAM_ROOT = hb.STREAM_ROOT
SHIM_SOURCE = BENCH_DIR / "tls_client_shim.c"
WORK_DIR_PREFIX = "ds-tls-bench-"
CERT_KINDS = ("ecdsa", "rsa")
KINDS = ("ours", "node")
PEER = "node"
# scenario -> (Connection: close?, full handshakes?)
SCENARIOS = {"keep-alive": (False, False), "close full": (True, True),
             "close resumed": (True, False)}
METRICS = (("requests_per_s", "req/s", "higher"),
           ("server_cpu_us_per_op", "srv CPU us/req", "lower"),
           ("connects_per_request", "connects/req", "check"),
           ("resumed_share", "resumed/handshake", "check"))
CHECKS = ("connects_per_request", "resumed_share")  # what the scenario did: no ratio


@dataclass(frozen=True)
class Settings:
    rounds: int
    wrk_seconds: float
    certs: tuple[str, ...]
    plain: bool
    modes: tuple[str, ...]  # wrk_streams.lua modes: "now" (GET) and/or "append" (POST)
    resumed: bool  # also the "close resumed" scenario (ECDSA only: it signs nothing)
    wrk_connections: int = 32
    wrk_threads: int = 2
    long_poll_ms: int = 2000
    file_handles: int = 512  # unused (in-memory), but http_bench's ServerProcess reads it


FULL = dict(rounds=3, wrk_seconds=3.0)
QUICK = dict(rounds=1, wrk_seconds=1.0)


# --------------------------------------------------------------------------------------
# Certificates: a CA and one leaf per key type, for 127.0.0.1


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(directory: Path,
                      kinds: tuple[str, ...]) -> tuple[Path, dict[str, tuple[Path, Path]]]:
    """The CA certificate file, and (cert file, key file) per leaf key type."""
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = dict(not_valid_before=now - datetime.timedelta(minutes=5),
                 not_valid_after=now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder(**valid).subject_name(_name("tls_bench CA"))
               .issuer_name(_name("tls_bench CA")).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ca_key, hashes.SHA256()))
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    leaves = {}
    for kind in kinds:
        key = (ec.generate_private_key(ec.SECP256R1()) if kind == "ecdsa"
               else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        cert = (x509.CertificateBuilder(**valid).subject_name(_name(HOST))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(ca_key, hashes.SHA256()))
        cert_file, key_file = directory / f"{kind}.crt", directory / f"{kind}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        leaves[kind] = (cert_file, key_file)
    return ca_file, leaves


def build_shim(work_dir: Path) -> Path:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise RuntimeError("no C compiler (cc) to build bench/tls_client_shim.c")
    shim = work_dir / "tls_client_shim.so"
    done = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(shim),
                           str(SHIM_SOURCE), "-ldl"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{compiler} could not build the shim:\n{done.stderr}")
    return shim


# --------------------------------------------------------------------------------------
# Servers


def ours_tls_caddyfile(port: int, cert: Path, key: Path, settings: Settings) -> str:
    # disable_redirects: no HTTP->HTTPS redirect server on :80 (nothing to measure there).
    return (
        "{\n\tadmin off\n\tauto_https disable_redirects\n}\n\n"
        f"https://{HOST}:{port} {{\n"
        f"\tbind {HOST}\n"
        f"\ttls {cert} {key}\n"
        f"\troute {STREAM_ROOT}/* {{\n"
        "\t\tdurable_streams {\n"
        f"\t\t\tlong_poll_timeout {hb.caddy_duration(settings.long_poll_ms)}\n"
        "\t\t}\n\t}\n}\n"
    )


class TlsServer(hb.ServerProcess):
    """One target (ours or node) for one variant: a certificate kind, or plain HTTP."""

    def __init__(self, kind: str, variant: str, leaf: tuple[Path, Path] | None,
                 ca_file: Path, work_dir: Path, settings: Settings):
        super().__init__(hb.TargetSpec(kind, kind), work_dir, durable=False, settings=settings,
                         tag=variant)
        self.variant = variant
        self.leaf = leaf
        self.settings = settings
        self.ssl_context = ssl.create_default_context(cafile=str(ca_file)) if leaf else None

    def _command(self, port: int) -> list[str]:
        if self.leaf is None:
            return super()._command(port)
        cert, key = self.leaf
        if self.spec.kind == "ours":
            cfg = self.work_dir / f"ours-{self.variant}-{port}.Caddyfile"
            cfg.write_text(ours_tls_caddyfile(port, cert, key, self.settings))
            exe = Path(sys.executable).parent / "durable-streams-server"
            return [str(exe) if exe.exists() else "durable-streams-server", "run", "--config",
                    str(cfg)]
        return ["node", str(hb.NODE_DIR / "serve.mjs"), "--host", HOST, "--port", str(port),
                "--long-poll-timeout-ms", str(self.long_poll_ms), "--watch-stdin",
                "--tls-cert", str(cert), "--tls-key", str(key)]

    def session(self) -> aiohttp.ClientSession:
        """Set-up requests (create, delete), verified against the generated CA."""
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=8, ssl=self.ssl_context or False),
            timeout=aiohttp.ClientTimeout(total=30))

    async def _wait_ready(self, timeout: float) -> None:
        # ServerProcess.start names the URL http://; the TLS variants answer https:// only.
        if self.leaf is not None:
            self.base_url = self.base_url.replace("http://", "https://", 1)
        deadline = time.monotonic() + timeout
        probe = f"{self.base_url}{STREAM_ROOT}/__bench_ready_probe__"
        async with self.session() as session:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.spec.name} ({self.variant}) exited with "
                                       f"{self.proc.returncode}:\n{self.log_tail()}")
                try:
                    async with session.head(probe) as resp:
                        await resp.read()
                        return
                except aiohttp.ClientConnectorCertificateError as exc:
                    raise RuntimeError(f"{self.spec.name} ({self.variant}) serves a "
                                       f"certificate that does not verify: {exc}") from exc
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.spec.name} ({self.variant}) did not answer on "
                           f"{self.base_url} within {timeout:.0f}s:\n{self.log_tail()}")


# --------------------------------------------------------------------------------------
# One sample


def check_counts(scenario: str, tls: bool, counts: dict, requests: int,
                 settings: Settings) -> str | None:
    """Why the shim's counts contradict the scenario (None when they agree)."""
    close, full = SCENARIOS[scenario]
    # wrk opens its connections once, plus one per request when the server closes them.
    if close and counts["connects"] < requests:
        return f"{counts['connects']} connects for {requests} requests: wrk did not reconnect"
    if not close and counts["connects"] > 2 * settings.wrk_connections:
        return f"{counts['connects']} connects with keep-alive: connections were not kept"
    if not tls:
        return None
    # wrk's first connect only probes the address (no handshake); connections still
    # handshaking when the window ends have no request.
    if counts["handshakes"] < min(counts["connects"] - 1, requests):
        return f"{counts['handshakes']} handshakes for {counts['connects']} connects"
    if counts["version"] != "TLSv1.3":
        return f"negotiated {counts['version']}, not TLSv1.3"
    if close and full and counts["resumed"]:
        return f"{counts['resumed']} resumed handshakes in a full-handshake scenario"
    if close and not full and not counts["resumed"]:
        return "no handshake resumed: the server gives wrk no usable session ticket"
    return None


async def measure(server: TlsServer, scenario: str, mode: str, prefix: str, shim: Path,
                  settings: Settings) -> dict:
    close, full = SCENARIOS[scenario]
    path = f"{STREAM_ROOT}/{prefix}"
    urls = [f"{server.base_url}{path}/s{i}" for i in range(settings.wrk_connections)]
    cmd = hb.wrk_command(server.base_url, mode, path, settings)
    if close:
        cmd[1:1] = ["-H", "Connection: close"]
    counts_file = server.work_dir / f"counts-{os.getpid()}.json"
    counts_file.unlink(missing_ok=True)
    env = {**os.environ, "LD_PRELOAD": str(shim), "DS_BENCH_TLS_COUNTS": str(counts_file),
           "DS_BENCH_TLS_FULL": "1" if full else "0"}
    async with server.session() as session:
        await hb.create_streams(session, urls, hb.BINARY)
        try:
            with hb.CpuWindow(server) as cpu:
                done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                      timeout=settings.wrk_seconds + 60)
        finally:
            await hb.delete_streams(session, urls)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: "
                           f"{(done.stderr or done.stdout)[-500:]}")
    result = hb.parse_wrk_output(done.stdout)
    counts = json.loads(counts_file.read_text())
    requests = result["requests"]
    if not requests:
        raise RuntimeError("wrk completed no request")
    socket_errors = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors",
                                            "timeouts"))
    first_error = (f"{result['non2xx']} non-2xx answers, first {result['first_bad_status']}"
                   if result["non2xx"] else
                   f"{socket_errors} socket errors/timeouts" if socket_errors else
                   check_counts(scenario, server.leaf is not None, counts, requests, settings))
    duration = result["duration_us"] / 1e6
    return {
        "scenario": scenario, "mode": mode, "requests": requests,
        "errors": result["non2xx"] + socket_errors + (1 if first_error else 0),
        "first_error": first_error, "requests_per_s": requests / duration,
        "connects_per_request": counts["connects"] / requests, "counts": counts,
        "resumed_share": (counts["resumed"] / counts["handshakes"]
                          if counts["handshakes"] else None),
        "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
        **cpu.figures(requests), "wrk": result,
    }


# --------------------------------------------------------------------------------------
# Run


@dataclass
class Figure:
    variant: str  # "ecdsa", "rsa" or "plain"
    scenario: str
    mode: str
    case: hb.Case


def figures_of(settings: Settings) -> list[Figure]:
    out = []
    variants = list(settings.certs) + (["plain"] if settings.plain else [])
    for mode in settings.modes:
        for variant in variants:
            scenarios = ["keep-alive", "close full"]  # plain: "close full" is a new TCP connection
            if variant == "ecdsa" and settings.resumed:
                scenarios.append("close resumed")
            for scenario in scenarios:
                name = scenario if variant != "plain" else scenario.replace(" full", "")
                label = f"{variant} {name} {'GET' if mode == 'now' else 'POST'}"
                key = f"{variant}-{scenario.replace(' ', '-')}-{mode}"
                out.append(Figure(variant, scenario, mode, hb.Case(key, label, METRICS)))
    return out


async def run(settings: Settings, work_dir: Path, run_id: str) -> tuple[list[Figure], dict]:
    shim = build_shim(work_dir)
    ca_file, leaves = make_certificates(work_dir, settings.certs)
    servers: dict[tuple[str, str], TlsServer] = {}
    variants = list(settings.certs) + (["plain"] if settings.plain else [])
    ports = hb.free_ports(len(variants) * len(KINDS))
    for variant in variants:
        for kind in KINDS:
            server = TlsServer(kind, variant, leaves.get(variant), ca_file, work_dir, settings)
            await server.start(ports.pop())
            servers[kind, variant] = server
            hb.progress(f"{kind} {variant} ready on {server.base_url}")
    # Warm-up, unrecorded: first connections, code paths, the allocator.
    for (kind, variant), server in servers.items():
        await measure(server, "close full", "now", f"bench-{run_id}/warm/{kind}-{variant}",
                      shim, settings)
    figures = figures_of(settings)
    for r in range(settings.rounds):
        for figure in figures:
            order = list(KINDS) if r % 2 == 0 else list(KINDS)[::-1]
            for kind in order:
                prefix = f"bench-{run_id}/{figure.case.key}/{kind}/r{r}"
                try:
                    result = await measure(servers[kind, figure.variant], figure.scenario,
                                           figure.mode, prefix, shim, settings)
                except Exception as exc:  # one failing figure must not lose the rest
                    result = {"failed": f"{type(exc).__name__}: {exc}"}
                result["round"] = r
                figure.case.samples.setdefault(kind, []).append(result)
                why = f"  ({result['first_error']})" if result.get("first_error") else ""
                hb.progress(f"{figure.case.label:<28} {kind:<5} r{r}  "
                            f"{hb.brief(figure.case, result)}{why}")
    commands = {f"{kind}-{variant}": s.command for (kind, variant), s in servers.items()}
    for server in servers.values():
        server.stop()
    return figures, commands


def handshake_costs(figures: list[Figure]) -> list[dict]:
    """Per variant, close scenario and mode: CPU per request minus keep-alive's, per target."""
    by_key = {(f.variant, f.scenario, f.mode): f for f in figures}
    plain_cost: dict[tuple[str, str], float] = {}
    rows = []
    for f in figures:
        if f.scenario == "keep-alive":
            continue
        base = by_key[(f.variant, "keep-alive", f.mode)]
        row = {"variant": f.variant, "scenario": f.scenario, "mode": f.mode, "values": {},
               "clean": True}
        for kind in KINDS:
            close = hb.median_of(f.case.samples.get(kind, []), "server_cpu_us_per_op")
            keep = hb.median_of(base.case.samples.get(kind, []), "server_cpu_us_per_op")
            row["clean"] &= hb.clean(f.case.samples.get(kind, [])) and hb.clean(
                base.case.samples.get(kind, []))
            row["values"][kind] = close - keep if close is not None and keep is not None else None
        ours, node = row["values"]["ours"], row["values"]["node"]
        row["ratio"] = ours / node if row["clean"] and ours is not None and node else None
        if f.variant == "plain":
            for kind in KINDS:
                if row["values"][kind] is not None:
                    plain_cost[kind, f.mode] = row["values"][kind]
        rows.append(row)
    # The TLS share alone: a TLS connection's cost minus a plain TCP connection's.
    for row in rows:
        if row["variant"] != "plain" and plain_cost:
            tls_only = {k: (row["values"][k] - plain_cost[k, row["mode"]]
                            if row["values"][k] is not None and (k, row["mode"]) in plain_cost
                            else None) for k in KINDS}
            row["tls_only"] = tls_only
            ours, node = tls_only["ours"], tls_only["node"]
            row["tls_only_ratio"] = (ours / node if row["clean"] and ours is not None and node
                                     else None)
    return rows


def print_costs(rows: list[dict]) -> None:
    def ratio(value) -> str:
        return "n/a" if value is None else hb.fmt(value)

    print("\nhandshake cost per new connection = srv CPU us/req (close) - (keep-alive), medians:")
    print(f"  {'figure':<30}{'ours':>10}{'node':>10}{'ours/node':>11}"
          f"{'TLS only: ours':>16}{'node':>8}{'ours/node':>11}")
    for row in rows:
        scenario = row["scenario"]
        if row["variant"] == "plain":
            scenario = scenario.replace(" full", "")  # a new TCP connection, no handshake
        label = f"{row['variant']} {scenario} {'GET' if row['mode'] == 'now' else 'POST'}"
        line = (f"  {label:<30}{hb.fmt(row['values']['ours']):>10}"
                f"{hb.fmt(row['values']['node']):>10}{ratio(row['ratio']):>11}")
        if tls := row.get("tls_only"):
            line += (f"{hb.fmt(tls['ours']):>16}{hb.fmt(tls['node']):>8}"
                     f"{ratio(row['tls_only_ratio']):>11}")
        print(line)
    print("  (TLS only = the TLS connection's cost minus the plain-HTTP connection's, "
          "same target)")


def parse_args(argv: list[str]) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run (1 round, 1 s windows)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (full 3, quick 1)")
    p.add_argument("--wrk-seconds", type=float, help="window of one wrk run (full 3, quick 1; "
                                                     "whole seconds)")
    p.add_argument("--wrk-connections", type=int, default=32, help="wrk -c (wrk runs 2 threads)")
    p.add_argument("--certs", default=",".join(CERT_KINDS),
                   help="leaf key types: ecdsa (P-256), rsa (2048), comma-separated")
    p.add_argument("--modes", default="now",
                   help="requests: now (GET ?offset=now), append (POST 22 B), or both")
    p.add_argument("--no-plain", action="store_true", help="skip the plain-HTTP pair")
    p.add_argument("--no-resumed", action="store_true", help="skip the resumed-handshake scenario")
    p.add_argument("--output", type=Path, help="JSON path (default bench/results/tls-<utc>.json)")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep server logs, configs and certificates")
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    certs = tuple(c.strip() for c in args.certs.split(",") if c.strip())
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not certs or set(certs) - set(CERT_KINDS):
        p.error(f"--certs must be a subset of {','.join(CERT_KINDS)}")
    if not modes or set(modes) - set(hb.WRK_MODES):
        p.error(f"--modes must be a subset of {','.join(hb.WRK_MODES)}")
    settings = Settings(rounds=args.rounds or base["rounds"],
                        wrk_seconds=args.wrk_seconds or base["wrk_seconds"], certs=certs,
                        plain=not args.no_plain, modes=modes,
                        resumed=not args.no_resumed and "ecdsa" in certs,
                        wrk_connections=args.wrk_connections)
    if settings.rounds < 1 or settings.wrk_seconds < 1 or settings.wrk_connections < 1:
        p.error("--rounds, --wrk-connections must be positive and --wrk-seconds at least 1")
    return settings, args


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(sys.argv[1:] if argv is None else argv)
    hb.prepare_process()
    for tool, why in (("wrk", hb.wrk_missing_message()), ("node", "node >= 18 is needed")):
        if shutil.which(tool) is None:
            print(why, file=sys.stderr)
            return 2
    if not (hb.NODE_DIR / "node_modules" / "@durable-streams" / "server").exists():
        print("the Node peer is not installed: run `npm ci` in bench/node", file=sys.stderr)
        return 2
    started = time.time()
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    output = args.output or hb.RESULTS_DIR / f"tls-{run_id}{'-quick' if args.quick else ''}.json"
    work_dir = Path(tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}-"))
    print(f"settings: {settings.__dict__}", flush=True)
    try:
        figures, commands = asyncio.run(run(settings, work_dir, run_id))
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
        return 1
    finally:
        hb.finish(work_dir, args.keep_logs)
    cases = [f.case for f in figures]
    rows = hb.summarize(cases, list(KINDS), PEER)
    for row in rows:
        if row["metric"] in CHECKS:
            row["ratios"] = dict.fromkeys(row["ratios"])
    hb.print_table(rows, list(KINDS), PEER)
    costs = handshake_costs(figures)
    print_costs(costs)
    env = hb.environment([])
    env.pop("targets", None)
    env["commands"] = commands
    env["openssl_python"] = ssl.OPENSSL_VERSION
    doc = {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
           "duration_s": time.time() - started, "peer": PEER, "settings": settings.__dict__,
           "environment": env, "handshake_costs": costs, "summary": rows,
           "samples": {c.key: c.samples for c in cases}}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
