"""`durable-streams-server`: a thin CLI over config (load/adapt) and runtime (serve).

Subcommands mirror Caddy's where they overlap (run, reload, adapt, validate, fmt, trust, version) plus
the plugin's zero-config `dev`. A bad config exits with status 1 and one message.
"""

from __future__ import annotations

import argparse
import difflib
import http.client
import json
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__

DEFAULT_SOURCE = "embedded dev config (no ./Caddyfile found)"
EXIT_OK = 0
EXIT_FAILED = 1


class CLIError(Exception):
    """A message for the operator; printed as `Error: ...`, exit status 1."""


def _read_env_file(path: str) -> dict[str, str]:
    """Caddy's --envfile: KEY=VALUE lines, `#` comments, optional `export ` and quotes."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CLIError(f"loading environment file: {exc.strerror}: {path}") from None
    env: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"loading environment file: {path}:{number}: can't parse line (expected KEY=VALUE)")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        env[key.strip()] = value
    return env


def _load(path: str | None, envfile: str | None = None, *, allow_default: bool = False):
    """Read + parse + adapt. Returns (config, description of the source)."""
    from ..caddyfile.errors import CaddyfileError
    from ..config import DEV_CADDYFILE, load_config

    env = dict(os.environ)
    if envfile:
        extra = _read_env_file(envfile)
        os.environ.update(extra)  # like Caddy: the process environment, also for {env.*}
        env.update(extra)
    if path is None:
        if Path("Caddyfile").is_file():
            path = "Caddyfile"
        elif allow_default:
            text, source, filename = DEV_CADDYFILE, DEFAULT_SOURCE, "Caddyfile"
            path = None
        else:
            raise CLIError("no config file given and no ./Caddyfile in the current directory (use --config PATH)")
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CLIError(f"reading config file: open {path}: no such file or directory") from None
        except IsADirectoryError:
            raise CLIError(f"reading config file: read {path}: is a directory") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"reading config file: {path}: {exc}") from None
        source, filename = path, path
    try:
        config = load_config(text, filename=filename, env=env)
    except CaddyfileError as exc:
        raise CLIError(f"adapting config using caddyfile: {exc}") from None
    except RecursionError:
        raise CLIError("adapting config using caddyfile: configuration nested too deeply") from None
    return config, source


def _print_warnings(config) -> None:
    for warning in config.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)


# --------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    config, source = _load(args.config, args.envfile, allow_default=True)

    def reload(path: str | None):
        # SIGHUP reads the same file again (None: the embedded default reloads as itself),
        # POST /reload a new one; logging is set up again too, which also reopens a log
        # file after rotation
        from ..ops.logging import configure_from_config

        new = _load(path, args.envfile, allow_default=True)[0]
        configure_from_config(new)
        return new

    return _serve(config, source, reload, args.config or (source if source != DEFAULT_SOURCE else None))


DEV_BANNER = """\
durable-streams-server {version} (dev mode)
  Streams:  http://localhost:{port}/<name> (every path is a stream, e.g. /v1/stream/<name>)
  Storage:  in-memory (data is lost on exit)
  Admin:    off    Automatic HTTPS: off
  Stop with Ctrl-C. For production, write a Caddyfile and use `durable-streams-server run`.
"""


def cmd_dev(args: argparse.Namespace) -> int:
    from ..config import DEV_PORT, dev_caddyfile, load_config

    port = args.port or DEV_PORT
    print(DEV_BANNER.format(version=__version__, port=port), file=sys.stderr, flush=True)
    return _serve(load_config(dev_caddyfile(port)), "embedded dev config")


def _tcp_port(text: str) -> int:
    port = int(text) if text.isdigit() else 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected 1-65535")
    return port


def _serve(config, source: str, reload=None, config_path: str | None = None) -> int:
    from ..ops.logging import configure_from_config
    from ..runtime.app import run

    configure_from_config(config)
    import structlog

    log = structlog.get_logger("durable_streams.server")
    log.info("using config", source=source)
    for warning in config.warnings:
        log.warning("config warning", detail=warning)
    try:
        return run(config, reload=reload, config_path=config_path)
    except OSError as exc:
        detail = exc.strerror or str(exc)
        if exc.filename:
            detail += f": {exc.filename}"
        raise CLIError(f"starting server: {detail}") from None
    except Exception as exc:  # e.g. a store that cannot open its data_dir
        log.debug("start-up failed", exc_info=True)
        raise CLIError(f"starting server: {type(exc).__name__}: {exc}") from None


def cmd_adapt(args: argparse.Namespace) -> int:
    config, _ = _load(args.config, args.envfile)
    _print_warnings(config)
    print(json.dumps(config.to_json(), indent=2 if args.pretty else None, separators=None if args.pretty else (",", ":")))
    return EXIT_OK


def _load_validated(args: argparse.Namespace):
    """`validate`'s checks: parse, adapt and load the TLS certificates. (config, source)."""
    config, source = _load(args.config, args.envfile)
    _print_warnings(config)
    from ..runtime.listeners import build_ssl_context

    from dataclasses import replace

    for server in config.servers:
        # managed certificates are issued when the server starts; check the given files only
        given = replace(server, certificates=tuple(c for c in server.certificates if not c.managed))
        try:
            build_ssl_context(given)
        except (OSError, ValueError) as exc:
            raise CLIError(f"loading TLS certificate for {server.name}: {exc}") from None
    return config, source


def _issuer_name(issuer) -> str:
    from ..config.model import LETS_ENCRYPT_DIRECTORY, ZEROSSL_DIRECTORY, AcmeIssuerConfig

    if isinstance(issuer, AcmeIssuerConfig):
        return {LETS_ENCRYPT_DIRECTORY: "Let's Encrypt", ZEROSSL_DIRECTORY: "ZeroSSL"}.get(issuer.directory,
                                                                                         issuer.describe())
    return issuer.describe()


def automatic_https_report(config) -> list[str]:
    """One line per name that gets a certificate automatically: from which issuer, and the
    fallbacks tried in order when it fails (Config.issuers_for, what the runtime uses)."""
    from ..config.certnames import is_internal
    from ..config.model import InternalIssuerConfig

    lines = []
    for cert in config.managed_certificates:
        for host in cert.hosts:
            first, *fallbacks = config.issuers_for(host, is_internal(host))
            text = f"{host}: {first.describe()}"
            if fallbacks:
                text += f" (then {', then '.join(_issuer_name(i) for i in fallbacks)})"
            if isinstance(first, InternalIssuerConfig) and cert.cert_file:
                text += f", stored in {os.path.dirname(cert.cert_file)}"
            lines.append(text)
    return lines


def cmd_validate(args: argparse.Namespace) -> int:
    config, _source = _load_validated(args)
    for line in automatic_https_report(config):
        print(f"automatic HTTPS: {line}", file=sys.stderr)
    print("Valid configuration")
    return EXIT_OK


def cmd_trust(args: argparse.Namespace) -> int:
    """Print the local CA's root certificate (made now if there is none yet)."""
    from ..config.certnames import default_storage_root
    from ..runtime.tls.local_ca import LocalCA, storage_lock

    if args.config or Path("Caddyfile").is_file():
        root = _load(args.config, args.envfile)[0].storage_root
    else:
        root = default_storage_root()
    ca = LocalCA(root)
    try:
        with storage_lock(root):
            ca.root()
        pem = Path(ca.root_cert_path).read_text(encoding="ascii")
    except OSError as exc:
        raise CLIError(f"loading the local CA in {root}: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None
    print(f"Local CA root certificate: {ca.root_cert_path}", file=sys.stderr)
    print("Trust it in clients, e.g. curl --cacert <path>, or add it to the system's trust store.", file=sys.stderr)
    sys.stdout.write(pem)
    return EXIT_OK


RELOAD_TIMEOUT = 120.0  # a reload may wait up to the grace period for retired stores
SIGHUP_HINT = "reload it with SIGHUP instead: `systemctl reload durable-streams-server` or `kill -HUP <pid>`"


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def _admin_connection(address) -> http.client.HTTPConnection:
    if address.network == "unix":
        return _UnixHTTPConnection(address.host, RELOAD_TIMEOUT)
    # a wildcard admin address is reached on loopback (the server checks no Host then)
    host = {"": "localhost", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(address.host, address.host)
    return http.client.HTTPConnection(host, address.port, timeout=RELOAD_TIMEOUT)


def _admin_address(args: argparse.Namespace, config, source: str):
    from ..config.addresses import AddressError, parse_network_address

    if args.address:
        try:
            return parse_network_address(args.address)
        except AddressError as exc:
            raise CLIError(f"invalid --address {args.address}: {exc}") from None
    if config.admin is not None:
        return config.admin
    why = "has `admin off`" if config.admin_off else "has no `admin <addr>` global option"
    raise CLIError(f"{source} {why}, so the running server has no admin endpoint to reload through; {SIGHUP_HINT}")


def cmd_reload(args: argparse.Namespace) -> int:
    config, source = _load_validated(args)
    address = _admin_address(args, config, source)
    path = os.path.abspath(source)  # the daemon may run in another directory
    connection = _admin_connection(address)
    try:
        connection.request("POST", "/reload", body=json.dumps({"config": path}),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        status, body = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise CLIError(f"sending configuration to instance at {address}: {reason.lower()}"
                       f" (is the server running with `admin {address}`?)") from None
    finally:
        connection.close()
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {}
    if status != 200:
        message = answer.get("error") if isinstance(answer, dict) else None
        if not message:
            message = f"HTTP {status}: {body.decode(errors='replace').strip()}"
        raise CLIError(f"reloading the running server: {message}")
    print(f"Reloaded the running server from {path}")
    return EXIT_OK


def cmd_fmt(args: argparse.Namespace) -> int:
    from ..caddyfile import format_caddyfile

    path = args.path or args.config or "Caddyfile"
    if args.path and args.config:
        raise CLIError(f"fmt does not support multiple files {args.config} {args.path}")
    if path == "-":
        sys.stdout.write(format_caddyfile(sys.stdin.read()))
        return EXIT_OK
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"reading input file: open {path}: {exc.strerror.lower() if exc.strerror else exc}") from None
    output = format_caddyfile(text)
    if args.overwrite:
        try:
            Path(path).write_text(output, encoding="utf-8")
        except OSError as exc:
            raise CLIError(f"overwriting formatted file: {exc}") from None
        return EXIT_OK
    if args.diff:
        for line in difflib.ndiff(text.split("\n"), output.split("\n")):
            if line[:1] in (" ", "-", "+"):
                print(line)
    else:
        sys.stdout.write(output)
    if output != text:
        first = next(
            (i for i, (a, b) in enumerate(zip(text.split("\n"), output.split("\n")), 1) if a != b),
            min(len(text.split("\n")), len(output.split("\n"))),
        )
        raise CLIError(
            f"{path}:{first}: Caddyfile input is not formatted; Tip: use '--overwrite' to update your"
            " Caddyfile in-place instead of previewing it. Consult '--help' for more options"
        )
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    print(f"durable-streams-server {__version__}")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="durable-streams-server",
        description="Durable Streams server configured by a Caddyfile.",
    )
    parser.add_argument("--version", action="version", version=f"durable-streams-server {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="serve using a Caddyfile (default ./Caddyfile)",
                         description="Serve until SIGTERM/SIGINT (graceful stop); SIGHUP (or `reload`) reloads the Caddyfile. "
                         "Without --config, ./Caddyfile is used; without either, the embedded dev config runs.")
    run.add_argument("--config", "-c", metavar="PATH", help="Caddyfile to use (default: ./Caddyfile)")
    run.add_argument("--envfile", metavar="FILE", help="load KEY=VALUE environment variables first")
    run.set_defaults(func=cmd_run)

    reload = sub.add_parser(
        "reload", help="make the running server load a Caddyfile (through its admin endpoint)",
        description="Validate the Caddyfile here (like `validate`), then ask the running server to reload "
        "from it: POST /reload to its admin address (the `admin <addr>` global option, or --address). "
        "The server re-reads the file itself, exactly as on SIGHUP, and later SIGHUPs read this file. "
        "A config it refuses leaves the running one in place; the exit status is 1 then. "
        "With `admin off`, send SIGHUP instead (`systemctl reload durable-streams-server`).")
    reload.add_argument("--config", "-c", metavar="PATH", help="Caddyfile to load (default: ./Caddyfile)")
    reload.add_argument("--address", metavar="ADDR",
                        help="admin address of the running server (default: from the config's `admin` option)")
    reload.add_argument("--envfile", metavar="FILE",
                        help="load KEY=VALUE environment variables for the check here "
                        "(the server substitutes {$VARS} from its own environment)")
    reload.set_defaults(func=cmd_reload)

    dev = sub.add_parser("dev", help="zero-config development server (in-memory, :4437)",
                         description="Serve a stream at every path of http://localhost:4437/ from memory "
                         "(e.g. /my-stream, /v1/stream/my-stream), admin off, no HTTPS.")
    dev.add_argument("--port", type=_tcp_port, help="port to listen on (default: 4437)")
    dev.set_defaults(func=cmd_dev)

    adapt = sub.add_parser("adapt", help="print the config model as JSON",
                           description="Parse and adapt a Caddyfile; print the resulting config as JSON.")
    adapt.add_argument("--config", "-c", metavar="PATH", help="Caddyfile to adapt (default: ./Caddyfile)")
    adapt.add_argument("--envfile", metavar="FILE", help="load KEY=VALUE environment variables first")
    adapt.add_argument("--pretty", "-p", action="store_true", help="indent the JSON")
    adapt.set_defaults(func=cmd_adapt)

    validate = sub.add_parser("validate", help="check a Caddyfile without serving",
                              description="Parse and adapt a Caddyfile and load its TLS certificates.")
    validate.add_argument("--config", "-c", metavar="PATH", help="Caddyfile to check (default: ./Caddyfile)")
    validate.add_argument("--envfile", metavar="FILE", help="load KEY=VALUE environment variables first")
    validate.set_defaults(func=cmd_validate)

    fmt = sub.add_parser("fmt", help="format a Caddyfile like `caddy fmt`",
                         description="Print the formatted Caddyfile (exit 1 if it was not formatted). "
                         "PATH '-' reads stdin.")
    fmt.add_argument("path", nargs="?", metavar="PATH", help="file to format (default: ./Caddyfile)")
    fmt.add_argument("--config", "-c", metavar="PATH", help=argparse.SUPPRESS)
    mode = fmt.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", "-w", action="store_true", help="rewrite the file in place")
    mode.add_argument("--diff", "-d", action="store_true", help="print a line diff instead of the output")
    fmt.set_defaults(func=cmd_fmt)

    trust = sub.add_parser(
        "trust", help="print the local CA's root certificate (for `tls internal` and localhost sites)",
        description="Print the root certificate of the local CA that signs the certificates of localhost, "
        "IP, *.local, *.internal and `tls internal` sites: its path on stderr, the PEM on stdout. "
        "The storage is the Caddyfile's `storage file_system <path>` (--config, or ./Caddyfile), else "
        "$XDG_DATA_HOME/caddy or ~/.local/share/caddy. The CA is created if it does not exist yet.")
    trust.add_argument("--config", "-c", metavar="PATH", help="Caddyfile whose storage to use (default: ./Caddyfile)")
    trust.add_argument("--envfile", metavar="FILE", help="load KEY=VALUE environment variables first")
    trust.set_defaults(func=cmd_trust)

    version = sub.add_parser("version", help="print the version", description="Print the version.")
    version.set_defaults(func=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
