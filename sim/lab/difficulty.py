"""Difficulty and miner CPU budget for a target network block interval. Pure.

A block at difficulty d takes 16**d hashes on average. The lab caps the miners'
CPU (all miner workers share one cgroup quota), so the network's hash rate is
quota * per-core rate, and the quota tunes the interval finely where the
difficulty alone moves it 16x at a time.
"""
from __future__ import annotations

MAX_QUOTA_CORES = 0.3  # what the miners may use of this machine, at most
MIN_QUOTA_CORES = 0.01


def choose(target_interval_s: float, per_core_rate: float, max_quota: float = MAX_QUOTA_CORES) -> tuple[int, float]:
    """(difficulty, CPU quota in cores) so that 16**d / (quota * rate) == the target interval.

    The largest difficulty whose quota fits under `max_quota`: the largest quota
    allowed, so the cgroup's scheduling granularity and a worker's unthrottled first
    moments matter least.
    """
    if target_interval_s <= 0 or per_core_rate <= 0:
        raise ValueError("the interval and the hash rate must be positive")
    best: tuple[int, float] | None = None
    for difficulty in range(1, 65):
        quota = 16**difficulty / (target_interval_s * per_core_rate)
        if quota > max_quota:
            break
        if quota >= MIN_QUOTA_CORES:
            best = (difficulty, quota)
    if best is not None:
        return best
    raise ValueError(f"no difficulty gives {target_interval_s}s blocks at {per_core_rate:.3g} H/s per core "
                     f"within {MIN_QUOTA_CORES}..{max_quota} cores")


def retune(quota: float, measured_rate: float, target_rate: float, low: float = MIN_QUOTA_CORES,
           high: float = 2 * MAX_QUOTA_CORES) -> float:
    """The miners' next CPU quota, given the hash rate the nodes report against the one wanted.

    The machine is shared: a quota buys fewer hashes when other work competes, so
    the lab follows the nodes' own hash-rate figures. Damped (square root of the
    ratio, at most 2x a step) since the nodes average their rate over a window.
    """
    if measured_rate <= 0 or target_rate <= 0:
        return quota
    ratio = min(2.0, max(0.5, target_rate / measured_rate)) ** 0.5
    return min(high, max(low, quota * ratio))
