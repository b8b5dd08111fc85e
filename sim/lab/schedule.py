"""What the lab does when: partitions, kills and restarts, joins. Pure (seeded RNG in, events out).

Times are seconds after the run's start (every first node up). The runner
executes the events in order; a kill names no node yet (the runner picks a live
one then, with the RNG), since which nodes are up depends on what happened.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

QUIET_START_S = 15.0  # no churn in the first seconds: let the network form first
QUIET_END_S = 30.0  # nor in the last: a restart needs time to catch up before the end


@dataclass(frozen=True, order=True)
class Event:
    at: float
    kind: str  # "partition" | "heal" | "kill" | "join"
    groups: tuple[tuple[int, ...], ...] = ()  # partition: the region groups cut from each other
    down_s: float = 0.0  # kill: seconds until the restart on the same data dir


def parse_partition(text: str) -> tuple[float, float] | None:
    """`START:DURATION` in seconds; `none` or `0:0` for no partition. ValueError if malformed."""
    if text.strip().lower() in ("none", "off", "", "0:0"):
        return None
    start, sep, duration = text.partition(":")
    if not sep:
        raise ValueError(f"{text!r} is not START:DURATION")
    begin, length = float(start), float(duration)
    if begin < 0 or length <= 0:
        raise ValueError(f"{text!r}: START must be >= 0 and DURATION > 0")
    return begin, length


def churn_times(per_minute: float, run_s: float, rng: random.Random) -> list[float]:
    """round(per_minute * minutes) times, uniform over the run less its quiet start and end, sorted."""
    count = round(per_minute * run_s / 60.0)
    low, high = QUIET_START_S, run_s - QUIET_END_S
    if count <= 0 or high <= low:
        return []
    return sorted(rng.uniform(low, high) for _ in range(count))


def build_schedule(run_s: float, partitions: list[tuple[float, float]], groups: list[list[int]],
                   churn_per_minute: float, joins_per_minute: float, down_s: float,
                   rng: random.Random) -> list[Event]:
    """Every event of a run, in time order; partitions past the run's end are dropped."""
    events: list[Event] = []
    cut = tuple(tuple(g) for g in groups)
    for start, duration in partitions:
        if start < run_s:
            events.append(Event(start, "partition", groups=cut))
            events.append(Event(min(start + duration, run_s), "heal"))
    events += [Event(at, "kill", down_s=down_s) for at in churn_times(churn_per_minute, run_s, rng)]
    events += [Event(at, "join") for at in churn_times(joins_per_minute, run_s, rng)]
    return sorted(events)


def place_nodes(count: int, regions: int, miners: int) -> tuple[list[int], list[int]]:
    """Each node's region (round robin) and the indices of the miners, spread over the regions.

    The miners are the last `miners` indices: consecutive, so they fall in
    consecutive regions (the runner starts them first).
    """
    placement = [i % regions for i in range(count)]
    miners = max(0, min(miners, count))
    return placement, list(range(count - miners, count))
