"""The demo's auto difficulty: pure choice from a measured rate (ops/demo.py)."""
from __future__ import annotations

import click
import pytest

from ops.demo import AUTO, difficulty_for, network_rate, parse_difficulty


@pytest.mark.parametrize("rate, expected", [
    (2.0e6, 5),    # 4 MH per 2 s: 16**5 (1 M) is nearer than 16**6 (16.8 M) on a log scale (midpoint 4.19 M)
    (2.3e6, 6),    # 4.6 MH per 2 s: just past that midpoint
    (7e6, 6),      # hashlib on three cores
    (49e6, 7),     # SHA-NI on two cores: 98 MH per 2 s is nearer 268 M than 16.8 M on a log scale
    (1.0, 1),      # never below 1
    (1e80, 64),    # never above 64
])
def test_difficulty_is_the_nearest_power_of_16_to_the_target_work(rate, expected):
    assert difficulty_for(rate) == expected


def test_expected_block_time_is_within_a_factor_of_four_of_the_target():
    for exponent in range(40, 120):
        rate = 10 ** (exponent / 10)
        seconds = 16 ** difficulty_for(rate, 2.0) / rate
        if 1 < difficulty_for(rate, 2.0) < 64:
            assert 0.5 <= seconds <= 8.0, (rate, seconds)


def test_network_rate_counts_one_core_per_miner_and_no_more_cores_than_there_are():
    assert network_rate(10.0, miners_per_node=1, cores=2) == 20.0
    assert network_rate(10.0, miners_per_node=1, cores=8) == 30.0
    assert network_rate(10.0, miners_per_node=4, cores=8) == 80.0
    assert network_rate(10.0, miners_per_node=1, cores=0) == 10.0


def test_a_zero_rate_is_refused():
    with pytest.raises(ValueError):
        difficulty_for(0.0)


def test_parse_difficulty():
    assert parse_difficulty("auto") == AUTO and parse_difficulty("7") == 7
    for bad in ("0", "65", "x", "7.5"):
        with pytest.raises(click.BadParameter):
            parse_difficulty(bad)


def test_the_help_says_what_auto_really_picks():
    """The help promises what difficulty_for does: nearest 2 s on a log scale, so 0.5 s to 8 s."""
    from click.testing import CliRunner

    from ops.demo import demo_command

    text = " ".join(CliRunner().invoke(demo_command, ["--help"]).output.split())
    assert "nearest 2 s on a log scale" in text and "0.5 s to 8 s" in text and "printed at start" in text
    # ... and it is so: at any rate, the expected interval of the pick lies within those bounds.
    for rate in (1e5, 3.3e6, 2.5e7, 5e7, 9e8):
        expected = 16 ** difficulty_for(rate) / rate
        assert 0.5 <= expected <= 8.0, (rate, expected)
