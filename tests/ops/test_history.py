"""The dashboard's hour of samples and the rate of a growing count (pure, clock passed in)."""
from __future__ import annotations

import pytest

from ops.history import History, RateMeter, Sample


def test_history_keeps_the_last_window_only():
    history = History(interval=10, window=60)
    for t in range(0, 200, 10):
        history.add(Sample(float(t), hashrate=float(t), peers=t // 10, height=None))
    series = history.series(now=190.0)
    assert [t for t, _ in series["hashrate"]] == [130.0, 140.0, 150.0, 160.0, 170.0, 180.0, 190.0]
    assert series["peers"][-1] == [190.0, 19]


def test_rate_meter_measures_units_per_second_and_restarts_when_the_count_drops():
    meter = RateMeter(window=30)
    assert meter.observe(0.0, 0) is None  # one reading: no rate yet
    assert meter.observe(10.0, 1000) == pytest.approx(100.0)
    assert meter.observe(20.0, 3000) == pytest.approx(150.0)
    assert meter.observe(21.0, 5) is None  # a new sync round starts over
    assert meter.observe(31.0, 505) == pytest.approx(50.0)
