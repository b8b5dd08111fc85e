"""The supervisor's decisions, kept pure: which children a failure restarts, when, and when to give up.

No threads, no clocks, no actors: time and randomness are passed in, so every
rule here is tested directly (tests/runtime/test_restart_policy.py), and the tree
runtime (supervisor.py) only carries the decisions out.

* Strategy (as in Erlang/OTP): `one_for_one` restarts the failed child only;
  `one_for_all` stops every other child and restarts them all; `rest_for_one`
  stops and restarts the failed child and every child started after it.
* Intensity: a sliding window of restart times; more than `max_restarts` within
  `period` seconds and the supervisor gives up.
* Backoff: a child's n-th consecutive restart waits `base * 2**(n-1)` (capped),
  plus up to 25% jitter so many children don't restart in step; the count is
  forgotten once the child has run `stable_after` seconds.
* Cool-down: an expendable subtree that gave up comes back after a wait that
  doubles per give-up (capped), forgotten after `cooldown_reset` seconds of stability.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


@dataclass(frozen=True)
class SupervisorPolicy:
    strategy: str = "one_for_one"
    max_restarts: int = 10
    period: float = 60.0
    backoff_base: float = 0.05
    backoff_max: float = 5.0
    stable_after: float = 30.0
    # How often the supervisor looks at its children's progress stamps (hangs,
    # silent deaths); while it is starting or stopping children it looks more often.
    watch_interval: float = 0.5
    # A child's on_start must be done within this (its first answer proves it).
    start_timeout: float = 10.0
    # For children that are expendable supervisors: wait before restarting one
    # that gave up (doubling per give-up, capped), reset once it ran for `cooldown_reset`.
    cooldown_base: float = 30.0
    cooldown_max: float = 240.0
    cooldown_reset: float = 300.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; one of {', '.join(STRATEGIES)}")

    def describe(self) -> str:
        return f"{self.strategy}, {self.max_restarts} restarts in {self.period:g}s"


def affected_children(strategy: str, order: list[str], failed: str) -> list[str]:
    """The children (in start order) that `failed`'s failure restarts under `strategy`."""
    if strategy == "one_for_one":
        return [failed]
    if strategy == "one_for_all":
        return list(order)
    if strategy == "rest_for_one":
        return order[order.index(failed):]
    raise ValueError(f"unknown strategy {strategy!r}")


class Intensity:
    """Restart times within the last `period` seconds; `exceeded` once there are more than allowed."""

    def __init__(self, max_restarts: int, period: float) -> None:
        self.max_restarts = max_restarts
        self.period = period
        self._times: deque[float] = deque()

    def record(self, now: float) -> bool:
        """Count a restart at `now`; True if that exceeds the intensity (give up)."""
        self._times.append(now)
        self._expire(now)
        return len(self._times) > self.max_restarts

    def recent(self, now: float | None = None) -> int:
        if now is not None:
            self._expire(now)
        return len(self._times)

    def clear(self) -> None:
        self._times.clear()

    def describe(self, count: int) -> str:
        return f"{count} restarts in {self.period:g}s (limit {self.max_restarts})"

    def _expire(self, now: float) -> None:
        while self._times and now - self._times[0] > self.period:
            self._times.popleft()


def backoff_delay(policy: SupervisorPolicy, consecutive: int, rng: random.Random) -> float:
    """Seconds before a child's `consecutive`-th restart in a row (1 for the first)."""
    delay = min(policy.backoff_max, policy.backoff_base * 2 ** max(0, consecutive - 1))
    return delay * (1 + 0.25 * rng.random())


def cooldown_delay(policy: SupervisorPolicy, giveups: int, rng: random.Random) -> float:
    """Seconds before an expendable subtree that has given up `giveups` times before is revived."""
    delay = min(policy.cooldown_max, policy.cooldown_base * 2 ** giveups)
    return delay * (1 + 0.1 * rng.random())


def is_stable(started_at: float, now: float, after: float) -> bool:
    """A child that has run this long has its consecutive-restart count forgotten."""
    return now - started_at >= after
