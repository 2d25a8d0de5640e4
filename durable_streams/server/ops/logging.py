"""structlog set-up: JSON lines when the output is not a terminal, a console renderer on a
terminal. Standard-library loggers (aiohttp, the protocol layer) go through the same
renderer, so every line of the daemon has one format.

Logs never go to stdout unless configured to (`log { output stdout }`): importing this
module points an unconfigured structlog at stderr, since stdout belongs to commands
like `adapt` and to embedding programs.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any

import structlog

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "WARN": logging.WARNING,
           "ERROR": logging.ERROR, "PANIC": logging.CRITICAL, "FATAL": logging.CRITICAL}


def _stdlib_extras(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    # fields attached by our access logger (LogRecord.ds_fields) become top-level keys
    record = event.get("_record")
    fields = getattr(record, "ds_fields", None)
    if fields:
        event.update(fields)
    return event


def _open_output(output: str, file_path: str | None) -> IO[str]:
    if output == "stdout":
        return sys.stdout
    if output == "discard":
        return open(os.devnull, "w")
    if output == "file" and file_path:
        return open(file_path, "a", buffering=1, encoding="utf-8")
    return sys.stderr


class _Stderr:
    """sys.stderr looked up at each write, so a replaced sys.stderr (tests, daemons) is used."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def use_stderr_by_default() -> None:
    """Unless something configured structlog already, send its output to stderr."""
    if not structlog.is_configured():
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(_Stderr()))


class _MalformedRequestFilter(logging.Filter):
    """aiohttp logs a malformed request (no Host, bad request line, oversized header) as an
    exception with a traceback; it is the client's mistake, so one warning line is enough.
    Exceptions raised by handlers keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
            record.msg = "malformed request from %s: %s"
            record.args = (remote, _safe_reason(exc))
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _safe_reason(exc: Exception) -> str:
    """The parser's reason without the request bytes it quotes (they may hold a token)."""
    first = (getattr(exc, "message", "") or "").strip().splitlines()[0:1]
    reason = first[0] if first else ""
    for quote in (" b'", ' b"', " bytearray("):
        reason = reason.split(quote)[0]
    return f"{type(exc).__name__} ({getattr(exc, 'code', 400)}): {reason.rstrip(': ')[:200]}"


_MALFORMED_FILTER = _MalformedRequestFilter()


def quiet_malformed_requests() -> None:
    """Install the one-line treatment of malformed requests on aiohttp's server logger."""
    logger = logging.getLogger("aiohttp.server")
    if _MALFORMED_FILTER not in logger.filters:
        logger.addFilter(_MALFORMED_FILTER)


def configure_logging(level: str = "INFO", *, fmt: str | None = None, output: str = "stderr",
                      file_path: str | None = None) -> None:
    """Configure structlog + stdlib logging once for the process (safe to call again)."""
    stream = _open_output(output, file_path)
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    fmt = fmt or ("console" if is_tty else "json")
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=is_tty) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _stdlib_extras, structlog.processors.format_exc_info],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if fmt == "json" else (lambda l, n, e: e),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level.upper(), logging.INFO))
    # aiohttp logs every failed client connection at DEBUG/INFO; keep them out of INFO logs
    logging.getLogger("aiohttp.server").setLevel(max(root.level, logging.WARNING))
    quiet_malformed_requests()


def configure_from_config(config: Any) -> None:
    """Apply the `log` (default logger) and `debug` global options of a Config."""
    default = next((log for log in getattr(config, "logs", ()) if log.name == "default"), None)
    level = config.log_level
    if default is None:
        configure_logging(level)
    else:
        configure_logging(level, fmt=default.format, output=default.output, file_path=default.file_path)


use_stderr_by_default()
