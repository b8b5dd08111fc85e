"""The node's log: text (the default) or JSON lines, on stderr or in a size-rotated file.

`--log-format text`: `2026-01-01 12:00:00,000 INFO    node.chain: message`, an exception as
`(Type: message)` on the same line (its traceback only with `--verbose`).

`--log-format json`: one JSON object per line, with `time` (UTC, ISO 8601), `level`,
`logger`, `message`, `thread`, and the structured fields a call gives with `extra=`
(`log.info("stored block %d", h, extra={"height": h, "peer": "10.0.0.2:8999"})` adds
`"height"` and `"peer"`); an exception adds `exc` (`Type: message`), and its
`traceback` with `--verbose`.

`--log-file PATH`: the log goes to PATH, rotated by size (LOG_FILE_MAX_BYTES, keeping
LOG_FILE_BACKUPS old files PATH.1 .. PATH.5); stderr then only gets warnings and errors,
so a node that can't start still says why on the terminal.
"""
from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")
LOG_FILE_MAX_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5

# The attributes every LogRecord has: anything else on a record came from `extra=`.
_RECORD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class OneLineFormatter(logging.Formatter):
    """Log records on one line each: an exception shows as `(Type: message)`, its traceback only with --verbose."""

    def format(self, record: logging.LogRecord) -> str:
        if not record.exc_info:
            return super().format(record)
        exc = record.exc_info[1]
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text = saved
        if exc is not None:
            line += f" ({type(exc).__name__}: {' '.join(str(exc).split())}; --verbose shows the traceback)"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message are escaped)."""

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_") and key not in doc:
                doc[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc["exc"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            if self.tracebacks:
                doc["traceback"] = self.formatException(record.exc_info)
        if record.stack_info and self.tracebacks:
            doc["stack"] = record.stack_info
        return json.dumps(doc, default=str, ensure_ascii=False)


def make_formatter(log_format: str, verbose: bool) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(tracebacks=verbose)
    return logging.Formatter(LOG_FORMAT) if verbose else OneLineFormatter(LOG_FORMAT)


def log_handlers(log_format: str = "text", log_file: Path | None = None, verbose: bool = False,
                 max_bytes: int = LOG_FILE_MAX_BYTES, backups: int = LOG_FILE_BACKUPS) -> list[logging.Handler]:
    """stderr, and the rotated file if asked (stderr then WARNING and above). OSError if the file can't be opened."""
    formatter = make_formatter(log_format, verbose)
    handlers: list[logging.Handler] = []
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter)
    if log_file is not None:
        rotating = logging.handlers.RotatingFileHandler(log_file, maxBytes=max_bytes, backupCount=backups,
                                                        encoding="utf-8")
        rotating.setFormatter(formatter)
        handlers.append(rotating)
        stderr.setLevel(logging.WARNING)
    handlers.append(stderr)
    return handlers


def setup_logging(verbose: bool, log_format: str = "text", log_file: Path | None = None) -> None:
    """The root logger's handlers for the node process (pykka's own chatter only from WARNING)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        handlers=log_handlers(log_format, log_file, verbose))
    logging.getLogger("pykka").setLevel(logging.WARNING)
