"""structlog set-up: JSON lines when the output is not a terminal, a console renderer on a
terminal. Standard-library loggers (the HTTP server, the protocol layer) go through the same
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


def configure_from_config(config: Any) -> None:
    """Apply the `log` (default logger) and `debug` global options of a Config."""
    default = next((log for log in getattr(config, "logs", ()) if log.name == "default"), None)
    level = config.log_level
    if default is None:
        configure_logging(level)
    else:
        configure_logging(level, fmt=default.format, output=default.output, file_path=default.file_path)


use_stderr_by_default()
