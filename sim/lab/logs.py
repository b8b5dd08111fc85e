"""A node's chain history, read from its own JSON log (`--log-format json --log-file`). Pure parsing.

Every change of a node's chain is one INFO line: a block it mined, a block taken
from an ANNOUNCE, a synced segment, and the chain loaded at start-up. Each
becomes a `ChainEvent` saying which heights it wrote and the chain's length after it.
So does each validated peer joining (with the node's count of them after it).
"""
from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

PATTERNS = (
    ("loaded", re.compile(r"^chain loaded: (\d+) blocks")),
    ("mined", re.compile(r"^mined block (\d+) ([0-9a-f]{16})")),
    ("announce", re.compile(r"^block (\d+) from \S+ accepted by announce")),
    ("synced", re.compile(r"^chain now (\d+) blocks \(synced (\d+)\)")),
    ("up", re.compile(r"^node \S+ up on udp ")),
    # Membership: the node's count of validated (tried) peers after each one joins.
    ("peers", re.compile(r"^(?:first peer \S+ \(.*\) answered|peer \S+ \(.*\) joined: (\d+) peers)")),
)


@dataclass(frozen=True)
class ChainEvent:
    t: float  # seconds since the epoch (the log's own clock)
    kind: str  # loaded | mined | announce | synced | up | peers
    lo: int = 0  # heights [lo, hi) were written (none for loaded / up / peers)
    hi: int = 0  # the chain's length after the event (loaded: the length loaded; peers: tried peers now)
    hash16: str | None = None  # mined: the block hash's first 16 hex digits

    @property
    def writes(self) -> bool:
        return self.kind in ("mined", "announce", "synced")


def parse_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_line(line: str) -> ChainEvent | None:
    """The chain event of one log line, or None for any other line (or one that is not JSON)."""
    if '"message"' not in line:
        return None
    try:
        doc = json.loads(line)
        message, when = doc["message"], parse_time(doc["time"])
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(message, str):
        return None
    for kind, pattern in PATTERNS:
        match = pattern.match(message)
        if match is None:
            continue
        if kind == "loaded":
            return ChainEvent(when, kind, hi=int(match[1]))
        if kind == "mined":
            height = int(match[1])
            return ChainEvent(when, kind, height, height + 1, match[2])
        if kind == "announce":
            height = int(match[1])
            return ChainEvent(when, kind, height, height + 1)
        if kind == "peers":
            return ChainEvent(when, kind, hi=int(match[1]) if match[1] else 1)
        if kind == "synced":
            length, count = int(match[1]), int(match[2])
            return ChainEvent(when, kind, max(0, length - count), length)
        return ChainEvent(when, kind)
    return None


def parse_lines(lines: Iterable[str]) -> list[ChainEvent]:
    events = [e for e in (parse_line(line) for line in lines) if e is not None]
    return sorted(events, key=lambda e: e.t)


def read_log(path: Path) -> list[ChainEvent]:
    """The events of a log file and its rotated backups (path.5 .. path.1, then path)."""
    files = [path.with_name(f"{path.name}.{i}") for i in range(5, 0, -1)] + [path]
    lines: list[str] = []
    for file in files:
        try:
            lines += file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
    return parse_lines(lines)
