"""How many MinerActors `--miners auto` starts: one per core, or one per CPU of the Ray cluster.

One per *physical* core when psutil can tell (hyper-threads share a core's SHA
units, so a second worker per core adds little hash rate but takes CPU from the
node's own actors), else one per logical CPU; never more than the CPUs this
process may run on (its affinity mask, e.g. in a container), never fewer than 1.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from mining.ray_cluster import RayClusterWatcher

_watchers: dict[str, "RayClusterWatcher"] = {}
_watchers_lock = threading.Lock()


def auto_miner_count() -> int:
    logical = psutil.cpu_count(logical=True) or 1
    physical = psutil.cpu_count(logical=False) or logical
    try:
        allowed = len(psutil.Process().cpu_affinity() or []) or logical
    except (AttributeError, psutil.Error):  # no affinity API on this platform
        allowed = logical
    return max(1, min(physical, allowed))


def ray_cluster_watcher(address: str) -> "RayClusterWatcher":
    """The one watcher of the Ray cluster at `address` (started on first use; see mining/ray_cluster.py)."""
    from mining.ray_cluster import RayClusterWatcher  # Ray itself is imported only in the watcher's process

    with _watchers_lock:
        watcher = _watchers.get(address)
        if watcher is None:
            watcher = _watchers[address] = RayClusterWatcher(address).start()
        return watcher


def ray_cluster_cpus(address: str, timeout: float = 0.0) -> int | None:
    """CPUs of the Ray cluster at `address` (`--miners auto` runs one miner per CPU).

    The latest reading, re-read every few seconds as nodes join and leave; waits up
    to `timeout` for the first one. None while the cluster can't be reached.
    """
    watcher = ray_cluster_watcher(address)
    reading = watcher.reading or watcher.wait_first(timeout)
    return reading.cpus if reading is not None else None


def ray_cluster_problem(address: str) -> str:
    """Why the cluster at `address` has no reading (for error messages)."""
    watcher = _watchers.get(address)
    if watcher is None or watcher.unavailable is None:
        return f"no answer from the Ray cluster at {address}"
    return watcher.unavailable


def stop_ray_cluster_watchers() -> None:
    """Stop every watcher process (node shutdown)."""
    with _watchers_lock:
        watchers = list(_watchers.values())
        _watchers.clear()
    for watcher in watchers:
        watcher.stop()
