"""asyncio's accept-failure storm (out of file descriptors) is one log line per interval, counted."""
from __future__ import annotations

import logging

from ops.serving import OutOfResourceFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, (OSError(24, "Too many open files"), None, None))


def test_a_storm_is_one_line_per_interval_with_a_count():
    clock = Clock()
    quiet = OutOfResourceFilter(interval=10.0, clock=clock)
    first = record("socket.accept() out of system resource\nsocket: <...>")
    assert quiet.filter(first) and first.exc_info is None
    for _ in range(500):
        clock.now += 0.01
        assert not quiet.filter(record("socket.accept() out of system resource"))
    clock.now += 10.0
    later = record("socket.accept() out of system resource")
    assert quiet.filter(later) and "(500 more since the last report)" in later.getMessage()


def test_other_asyncio_records_pass_untouched():
    quiet = OutOfResourceFilter(interval=10.0, clock=Clock())
    other = record("Task exception was never retrieved")
    assert quiet.filter(other) and quiet.filter(other) and other.exc_info is not None
