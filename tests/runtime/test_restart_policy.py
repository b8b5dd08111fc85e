"""The supervisor's pure decisions: strategies, intensity, backoff, cool-down."""
from __future__ import annotations

import random

import pytest

from runtime.restart_policy import (
    Intensity,
    SupervisorPolicy,
    affected_children,
    backoff_delay,
    cooldown_delay,
    is_stable,
)

ORDER = ["a", "b", "c", "d"]


@pytest.mark.parametrize("strategy, failed, expected", [
    ("one_for_one", "b", ["b"]),
    ("one_for_all", "b", ["a", "b", "c", "d"]),
    ("rest_for_one", "b", ["b", "c", "d"]),
    ("rest_for_one", "d", ["d"]),
    ("rest_for_one", "a", ["a", "b", "c", "d"]),
])
def test_each_strategy_names_the_children_a_failure_restarts(strategy, failed, expected):
    assert affected_children(strategy, ORDER, failed) == expected


def test_an_unknown_strategy_is_refused_where_the_policy_is_made():
    with pytest.raises(ValueError, match="one_for_one"):
        SupervisorPolicy(strategy="one_for_some")


def test_intensity_is_a_sliding_window():
    window = Intensity(max_restarts=2, period=10.0)
    assert not window.record(0.0)
    assert not window.record(1.0)
    assert window.record(2.0)  # a third within 10 s: give up
    window = Intensity(max_restarts=2, period=10.0)
    window.record(0.0)
    window.record(1.0)
    assert not window.record(10.5)  # the first one has left the window
    assert window.recent(10.5) == 2
    assert window.recent(30.0) == 0


def test_zero_restarts_allowed_gives_up_on_the_first():
    assert Intensity(max_restarts=0, period=5.0).record(0.0)


def test_backoff_doubles_is_capped_and_jitters_up_to_a_quarter():
    policy = SupervisorPolicy(backoff_base=0.1, backoff_max=1.0)
    no_jitter = random.Random()
    no_jitter.random = lambda: 0.0  # type: ignore[method-assign]
    assert [round(backoff_delay(policy, n, no_jitter), 3) for n in (1, 2, 3, 4, 5, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    rng = random.Random(7)
    for n in range(1, 10):
        base = min(1.0, 0.1 * 2 ** (n - 1))
        assert base <= backoff_delay(policy, n, rng) <= base * 1.25


def test_cooldown_doubles_per_give_up_up_to_its_cap():
    policy = SupervisorPolicy(cooldown_base=30.0, cooldown_max=240.0)
    rng = random.Random()
    rng.random = lambda: 0.0  # type: ignore[method-assign]
    assert [cooldown_delay(policy, g, rng) for g in range(5)] == [30.0, 60.0, 120.0, 240.0, 240.0]


def test_stability_resets_after_the_configured_time():
    assert not is_stable(100.0, 129.9, 30.0)
    assert is_stable(100.0, 130.0, 30.0)
