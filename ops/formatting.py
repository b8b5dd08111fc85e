"""Human formatting of rates, sizes and times, shared by the status page and the status command.

Kept free of Flask so `run_node.py status` (and `--help`) start quickly.
"""
from __future__ import annotations

import time
from typing import Any


def fmt_rate(rate: Any) -> str:
    """Hashes per second in H/s, kH/s or MH/s."""
    if not isinstance(rate, (int, float)):
        return "-"
    for unit, scale in (("MH/s", 1e6), ("kH/s", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.2f} {unit}"
    return f"{rate:.0f} H/s"


def fmt_bytes(size: Any) -> str:
    if not isinstance(size, (int, float)):
        return "-"
    return f"{size / 2**20:.1f} MiB"


def fmt_percent(value: Any) -> str:
    return f"{value:.1f}%" if isinstance(value, (int, float)) else "–"


def fmt_time(timestamp: Any) -> str:
    """A UTC date, or "out of range" for a timestamp no calendar holds (a block may say 2**63-1)."""
    if not isinstance(timestamp, (int, float)) or timestamp <= 0:
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp))
    except (OverflowError, OSError, ValueError):
        return "out of range"
