"""The node's one timer service, driven with a fake clock (no thread, no sleeps)."""
from __future__ import annotations

import threading

import pykka
import pytest

from runtime.timers import TimerService


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeating_and_one_shot_timers_fire_when_due_and_stop_when_cancelled():
    clock = Clock()
    timers = TimerService(clock=clock, thread=False)
    fired: list[str] = []
    every = timers.every(1.0, lambda: fired.append("every"))
    timers.after(2.5, lambda: fired.append("once"))
    for step in range(1, 6):
        clock.now = float(step)
        timers.run_due(clock.now)
    assert fired == ["every", "every", "once", "every", "every", "every"]  # "once" was due at 2.5
    every.cancel()
    clock.now = 10.0
    assert timers.run_due(clock.now) == 0
    assert timers.pending() == 0
    timers.close()


def test_a_stall_causes_no_burst_of_catch_up_calls():
    clock = Clock()
    timers = TimerService(clock=clock, thread=False)
    fired: list[float] = []
    timers.every(0.1, lambda: fired.append(clock.now))
    clock.now = 5.0  # the thread was starved for 5 s
    timers.run_due(clock.now)
    timers.run_due(clock.now)
    assert len(fired) == 1
    timers.close()


def test_a_dead_actor_cancels_its_timer_and_a_failing_callback_does_not_stop_the_others():
    clock = Clock()
    timers = TimerService(clock=clock, thread=False)
    calls = {"dead": 0, "bad": 0, "good": 0}

    def dead():
        calls["dead"] += 1
        raise pykka.ActorDeadError("gone")

    def bad():
        calls["bad"] += 1
        raise ValueError("bug")

    timers.every(1.0, dead)
    timers.every(1.0, bad)
    timers.every(1.0, lambda: calls.__setitem__("good", calls["good"] + 1))
    for step in (1.0, 2.0, 3.0):
        clock.now = step
        timers.run_due(step)
    assert calls == {"dead": 1, "bad": 3, "good": 3}
    timers.close()


def test_every_timer_runs_on_one_thread():
    timers = TimerService()
    seen: set[str] = set()
    done = threading.Event()
    count = [0]

    def note():
        seen.add(threading.current_thread().name)
        count[0] += 1
        if count[0] >= 20:
            done.set()

    for _ in range(5):
        timers.every(0.01, note)
    assert done.wait(5)
    timers.close()
    assert seen == {"timers"}


def test_bad_interval_is_refused():
    with pytest.raises(ValueError):
        TimerService().every(0, lambda: None)
