"""The external-miner protocol: line-delimited JSON over TCP (both ends share this).

One JSON object per line, UTF-8, ``\\n``-terminated, at most MAX_LINE_BYTES per
line. The full exchange is documented in docs/mining.md. This module is
pure framing and parsing, so the gateway (in the node) and the client
(`run_node.py miner`) can't drift apart, and it is testable without sockets.

It also holds the gateway's two pure judges of a client, with time passed in so
they are tested without a clock: `LineBudget` (how many lines and bytes a client
may send; the gateway stops reading one that is ahead of it) and `ClaimLedger`
(whether a client's claimed hash rate is believed, remembered per token and
source IP so that reconnecting does not wipe the doubt).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable

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


class LineBudget:
    """A token bucket over lines and bytes: a client may send `line_rate` lines/s and
    `byte_rate` bytes/s on average, with bursts of `line_burst` lines and `byte_burst` bytes.

    Pure (no clock): every call is given `now`, a monotonic time in seconds. A line
    is charged whole or not at all (`take`), so a refused line stays the caller's
    to retry once `wait` has passed.
    """

    def __init__(self, line_rate: float, line_burst: float, byte_rate: float, byte_burst: float, now: float) -> None:
        if min(line_rate, line_burst, byte_rate, byte_burst) <= 0:
            raise ValueError("line budget rates and bursts must be positive")
        self.line_rate, self.line_burst = float(line_rate), float(max(line_burst, 1.0))
        # A burst below one maximal line could never let that line through.
        self.byte_rate, self.byte_burst = float(byte_rate), float(max(byte_burst, MAX_LINE_BYTES + 1))
        self.lines, self.bytes = self.line_burst, self.byte_burst
        self._last = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._last)
        self._last = max(self._last, now)
        self.lines = min(self.line_burst, self.lines + elapsed * self.line_rate)
        self.bytes = min(self.byte_burst, self.bytes + elapsed * self.byte_rate)

    def take(self, size: int, now: float) -> bool:
        """Charge one line of `size` bytes if the budget has room for it now."""
        self._refill(now)
        if self.lines < 1.0 or self.bytes < size:
            return False
        self.lines -= 1.0
        self.bytes -= size
        return True

    def wait(self, size: int, now: float) -> float:
        """Seconds until a line of `size` bytes fits (0 when it does now)."""
        self._refill(now)
        lines_short = max(0.0, 1.0 - self.lines) / self.line_rate
        bytes_short = max(0.0, min(size, self.byte_burst) - self.bytes) / self.byte_rate
        return max(lines_short, bytes_short)


# A client's claimed hashes imply how many solutions it should have found; one
# that claims at least this many expected solutions and found under a tenth of
# them is not believed (its claim is shown as "claimed").
PLAUSIBLE_MIN_EXPECTED = 10.0


@dataclass
class Claims:
    """What one (token, source IP) has claimed and returned, over all its connections."""

    claimed_hashes: int = 0  # every hash it reported
    solutions: int = 0  # nonces it returned that meet the difficulty (accepted or stale)
    units: int = 0  # work units it was given (a miner finds at most about one per unit)

    def plausible(self, difficulty: int) -> bool:
        """False when its claimed hashes imply far more solutions than it returned.

        Expected finds are the claimed hashes over 16**difficulty, at most one per
        work unit it was given; a claim worth PLAUSIBLE_MIN_EXPECTED finds or more
        that produced under a tenth of them is not believed.
        """
        expected = min(self.claimed_hashes / 16 ** max(0, difficulty), float(self.units))
        return expected < PLAUSIBLE_MIN_EXPECTED or self.solutions * 10 >= expected


class ClaimLedger:
    """Claims per key (the gateway uses (token fingerprint, source IP)), kept across reconnects.

    Doubt that restarted from zero with every connection would let a liar be
    believed by reconnecting before its claim could be judged. At most
    `max_entries` keys are kept; the least recently used goes first.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Claims] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def claims(self, key: Hashable) -> Claims:
        """The record for `key` (a fresh one the first time), marked as recently used."""
        record = self._entries.get(key)
        if record is None:
            record = self._entries[key] = Claims()
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return record
