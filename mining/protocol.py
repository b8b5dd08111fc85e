"""The external-miner protocol: line-delimited JSON over TCP (both ends share this).

One JSON object per line, UTF-8, ``\\n``-terminated, at most MAX_LINE_BYTES per
line. The full exchange is documented in README.md ("Mining"). This module is
pure framing and parsing, so the gateway (in the node) and the client
(`run_node.py miner`) can't drift apart, and it is testable without sockets.
"""
from __future__ import annotations

import json
from typing import Any

MAX_LINE_BYTES = 4096  # a work or submit line is ~300 bytes; anything longer is garbage
AUTH_TIMEOUT = 5.0  # seconds a new connection has to authenticate


class ProtocolError(ValueError):
    """A line that is not a JSON object with a string `type`."""


def encode_line(message: dict[str, Any]) -> bytes:
    """One message as a protocol line."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


def decode_line(line: bytes) -> dict[str, Any]:
    """Parse one line (without its newline); raise ProtocolError if it is not a message."""
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("not an object with a string 'type'")
    return message


class LineReader:
    """Splits a TCP byte stream into lines without ever buffering more than a line's limit.

    `feed` returns complete lines; an overlong line is reported once as None (and the
    rest of it, up to its newline, is discarded) so a peer can't make us buffer
    without bound by never sending a newline.
    """

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | None]:
        lines: list[bytes | None] = []
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.max_bytes:
                    if not self._skipping:
                        lines.append(None)
                        self._skipping = True
                    self._buffer.clear()
                return lines
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            if self._skipping:
                self._skipping = False  # the end of a line already reported as overlong
                continue
            lines.append(line if len(line) <= self.max_bytes else None)
