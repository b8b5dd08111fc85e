"""The node's log formats (text, JSON lines) and its size-rotated log file."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ops.logsetup import LOG_FORMAT, JsonFormatter, OneLineFormatter, log_handlers


@pytest.fixture
def logger():
    log = logging.getLogger("test.logsetup")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    log.propagate = True


def record(message: str = "stored block %d", *args, extra: dict | None = None, exc: BaseException | None = None):
    rec = logging.LogRecord("node.ChainKeeper", logging.INFO, __file__, 1, message, args or (7,),
                            (type(exc), exc, exc.__traceback__) if exc else None)
    for key, value in (extra or {}).items():
        setattr(rec, key, value)
    return rec


def test_a_json_line_parses_and_has_time_level_logger_message_and_the_extra_fields():
    line = JsonFormatter().format(record(extra={"height": 7, "peer": "10.0.0.2:8999", "actor": "ChainKeeper"}))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "INFO" and doc["logger"] == "node.ChainKeeper" and doc["message"] == "stored block 7"
    assert doc["time"].endswith("Z") and "T" in doc["time"]
    assert (doc["height"], doc["peer"], doc["actor"]) == (7, "10.0.0.2:8999", "ChainKeeper")
    assert "thread" in doc and "args" not in doc and "msg" not in doc


def test_a_json_line_stays_one_line_with_newlines_an_exception_and_odd_values():
    try:
        raise ValueError("bad\nthing")
    except ValueError as caught:
        exc = caught
    rec = record("two\nlines %s", "x", extra={"path": Path("/srv"), "blob": b"\x00"}, exc=exc)
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "two\nlines x" and doc["exc"] == "ValueError: bad thing" and "traceback" not in doc
    assert doc["path"] == "/srv"
    assert "Traceback" in json.loads(JsonFormatter(tracebacks=True).format(rec))["traceback"]


def test_text_stays_the_default_format():
    (stderr,) = log_handlers()
    assert isinstance(stderr.formatter, OneLineFormatter) and stderr.formatter._fmt == LOG_FORMAT
    assert stderr.level == logging.NOTSET


def test_the_log_file_is_written_and_rotates_keeping_the_backups(tmp_path, logger):
    path = tmp_path / "node.log"
    handlers = log_handlers("json", path, max_bytes=2000, backups=2)
    file_handler, stderr = handlers
    assert stderr.level == logging.WARNING  # the terminal keeps only warnings and errors
    logger.addHandler(file_handler)
    for height in range(100):
        logger.info("stored block %d", height, extra={"height": height})
    file_handler.flush()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["node.log", "node.log.1", "node.log.2"]
    heights = []
    for f in (path.with_name("node.log.2"), path.with_name("node.log.1"), path):
        assert f.stat().st_size <= 2000
        heights += [json.loads(line)["height"] for line in f.read_text().splitlines()]
    assert heights == list(range(100 - len(heights), 100))  # the newest lines, in order, none torn


def test_a_text_log_file(tmp_path, logger):
    path = tmp_path / "node.log"
    file_handler, _ = log_handlers("text", path)
    logger.addHandler(file_handler)
    logger.warning("peer %s left", "10.0.0.2:8999")
    file_handler.flush()
    (line,) = path.read_text().splitlines()
    assert line.endswith(" WARNING test.logsetup: peer 10.0.0.2:8999 left")
