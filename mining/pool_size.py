"""How many MinerActors `--miners auto` starts.

One per *physical* core when psutil can tell (hyper-threads share a core's SHA
units, so a second worker per core adds little hash rate but takes CPU from the
node's own actors), else one per logical CPU; never more than the CPUs this
process may run on (its affinity mask, e.g. in a container), never fewer than 1.
"""
from __future__ import annotations

import psutil


def auto_miner_count() -> int:
    logical = psutil.cpu_count(logical=True) or 1
    physical = psutil.cpu_count(logical=False) or logical
    try:
        allowed = len(psutil.Process().cpu_affinity() or []) or logical
    except (AttributeError, psutil.Error):  # no affinity API on this platform
        allowed = logical
    return max(1, min(physical, allowed))
