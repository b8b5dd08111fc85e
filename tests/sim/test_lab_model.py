"""The lab's pure parts alone: region matrix, link model, schedules, difficulty, log parsing, figures."""
from __future__ import annotations

import json
import random

import pytest

from sim.lab import analysis
from sim.lab.analysis import Cut, NodeRecord
from sim.lab.difficulty import MAX_QUOTA_CORES, choose, retune
from sim.lab.logs import ChainEvent, parse_line, parse_lines
from sim.lab.model import LinkModel, rtt_matrix, split_regions
from sim.lab.schedule import QUIET_END_S, QUIET_START_S, build_schedule, churn_times, parse_partition, place_nodes

# ------------------------------------------------------------------ network model


@pytest.mark.parametrize("regions", [1, 2, 5, 7, 12])
def test_rtt_matrix_is_symmetric_with_a_few_ms_inside_and_20_to_250_between(regions):
    matrix = rtt_matrix(regions)
    for i in range(regions):
        assert matrix[i][i] <= 5
        for j in range(regions):
            assert matrix[i][j] == matrix[j][i]
            if i != j:
                assert 20 <= matrix[i][j] <= 250


def test_link_delay_is_half_the_rtt_plus_at_most_the_jitter():
    model = LinkModel(rtt_matrix(5), jitter=0.2)
    rng = random.Random(3)
    delays = [model.verdict(0, 0, 3, 100, 1000.0, rng)[1] - 1000.0 for _ in range(500)]
    assert min(delays) >= 0.100 and max(delays) <= 0.100 * 1.2  # us-east <-> asia: 200 ms RTT
    assert max(delays) - min(delays) > 0.01  # the jitter varies


def test_loss_drops_about_the_asked_share():
    model = LinkModel(rtt_matrix(2), loss=0.1)
    rng = random.Random(5)
    verdicts = [model.verdict(0, 0, 1, 100, 0.0, rng)[0] for _ in range(10_000)]
    assert 0.08 < verdicts.count("loss") / len(verdicts) < 0.12


def test_a_partition_cuts_across_groups_only_until_healed():
    model = LinkModel(rtt_matrix(5))
    rng = random.Random(1)
    model.partition([[0, 1], [2, 3, 4]])
    assert model.verdict(0, 0, 2, 100, 0.0, rng)[0] == "partition"
    assert model.verdict(0, 4, 1, 100, 0.0, rng)[0] == "partition"
    assert model.verdict(0, 0, 1, 100, 0.0, rng)[0] == "ok"
    assert model.verdict(0, 2, 4, 100, 0.0, rng)[0] == "ok"
    model.heal()
    assert model.verdict(0, 0, 2, 100, 0.0, rng)[0] == "ok"


def test_the_uplink_queues_a_senders_datagrams_behind_each_other():
    model = LinkModel([[0.0]], jitter=0.0, uplink_bps=8000.0)  # 1000 bytes/s
    rng = random.Random(1)
    due = [model.verdict(7, 0, 0, 100, 0.0, rng)[1] for _ in range(3)]
    assert due == pytest.approx([0.1, 0.2, 0.3])
    assert model.verdict(8, 0, 0, 100, 0.0, rng)[1] == pytest.approx(0.1)  # another sender has its own uplink


def test_split_regions_makes_two_nonempty_groups_covering_every_region():
    for seed in range(20):
        groups = split_regions(5, random.Random(seed))
        assert len(groups) == 2 and all(groups)
        assert sorted(groups[0] + groups[1]) == list(range(5))


# ------------------------------------------------------------------ schedules


def test_partition_option_parses_and_refuses_nonsense():
    assert parse_partition("60:30") == (60.0, 30.0)
    assert parse_partition("none") is None and parse_partition("0:0") is None
    for bad in ("60", "a:b", "-1:5", "10:0"):
        with pytest.raises(ValueError):
            parse_partition(bad)


def test_churn_times_count_and_stay_out_of_the_quiet_start_and_end():
    times = churn_times(10, 300, random.Random(2))
    assert len(times) == 50 and times == sorted(times)
    assert all(QUIET_START_S <= t <= 300 - QUIET_END_S for t in times)
    assert churn_times(0, 300, random.Random(2)) == []
    assert churn_times(10, 40, random.Random(2)) == []  # no room between the quiet parts


def test_schedule_orders_partition_heal_kills_and_joins():
    events = build_schedule(180, [(60, 60)], [[0, 1], [2, 3, 4]], 2, 1, 5.0, random.Random(4))
    kinds = [e.kind for e in events]
    assert kinds.count("partition") == 1 and kinds.count("heal") == 1
    assert kinds.count("kill") == 6 and kinds.count("join") == 3
    assert [e.at for e in events] == sorted(e.at for e in events)
    cut = next(e for e in events if e.kind == "partition")
    assert cut.at == 60 and cut.groups == ((0, 1), (2, 3, 4))
    assert next(e for e in events if e.kind == "heal").at == 120
    assert all(e.down_s == 5.0 for e in events if e.kind == "kill")
    assert build_schedule(180, [(60, 60)], [[0], [1]], 2, 1, 5.0, random.Random(4)) == \
        build_schedule(180, [(60, 60)], [[0], [1]], 2, 1, 5.0, random.Random(4))  # seeded: reproducible


def test_a_partition_running_past_the_end_heals_at_the_end():
    events = build_schedule(100, [(80, 60), (200, 10)], [[0], [1]], 0, 0, 5.0, random.Random(1))
    assert [(e.kind, e.at) for e in events] == [("partition", 80), ("heal", 100)]


def test_nodes_spread_over_regions_and_so_do_the_miners():
    regions, miners = place_nodes(10, 5, 3)
    assert regions == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert miners == [7, 8, 9]
    assert {regions[m] for m in miners} == {2, 3, 4}


# ------------------------------------------------------------------ difficulty


def test_difficulty_and_quota_give_the_target_interval():
    difficulty, quota = choose(10.0, 27e6)
    assert 16**difficulty / (quota * 27e6) == pytest.approx(10.0)
    assert quota <= MAX_QUOTA_CORES
    assert choose(10.0, 27e6 * 16)[0] == difficulty + 1  # 16x the rate: one more zero
    assert choose(10.0, 7e6) == (6, pytest.approx(16**6 / 7e7))  # d=5 would fit too (0.015 cores): the larger quota wins


def test_retune_moves_toward_the_target_damped_and_bounded():
    assert retune(0.1, measured_rate=1e6, target_rate=4e6) == pytest.approx(0.1 * 2**0.5)  # capped at 2x, square-rooted
    assert retune(0.1, measured_rate=4e6, target_rate=1e6) == pytest.approx(0.1 * 0.5**0.5)
    assert retune(0.1, measured_rate=1e6, target_rate=1e6) == pytest.approx(0.1)
    assert retune(0.1, measured_rate=0, target_rate=1e6) == 0.1  # nothing reported: unchanged
    assert retune(0.011, 4e6, 1e6) == pytest.approx(0.01)


# ------------------------------------------------------------------ logs


def _line(t: str, message: str) -> str:
    return json.dumps({"time": t, "level": "INFO", "logger": "node.x", "message": message, "thread": "x"})


def test_log_lines_become_chain_events():
    assert parse_line(_line("2026-01-01T00:00:01.500Z", "mined block 7 0123456789abcdef")) == \
        ChainEvent(1767225601.5, "mined", 7, 8, "0123456789abcdef")
    assert parse_line(_line("2026-01-01T00:00:01.000Z", "block 3 from 127.1.0.2:9 accepted by announce")).lo == 3
    synced = parse_line(_line("2026-01-01T00:00:01.000Z", "chain now 12 blocks (synced 5)"))
    assert (synced.kind, synced.lo, synced.hi) == ("synced", 7, 12)
    assert parse_line(_line("2026-01-01T00:00:01.000Z", "chain loaded: 4 blocks")).hi == 4
    assert parse_line(_line("2026-01-01T00:00:01.000Z", "dropped silent peer")) is None
    assert parse_line("not json at all, message") is None
    assert parse_line('{"message": 5, "time": "2026-01-01T00:00:01Z"}') is None


def test_peer_join_lines_become_peer_count_events():
    first = parse_line(_line("2026-01-01T00:00:01.000Z", "first peer 127.1.0.2:9 (n1) answered: no longer on our own"))
    assert (first.kind, first.hi) == ("peers", 1)
    joined = parse_line(_line("2026-01-01T00:00:02.000Z", "peer 127.1.0.3:9 (a (b)) joined: 12 peers"))
    assert (joined.kind, joined.hi, joined.lo) == ("peers", 12, 0)
    assert not joined.writes


def test_events_come_out_in_time_order():
    lines = [_line("2026-01-01T00:00:02.000Z", "chain loaded: 0 blocks"),
             _line("2026-01-01T00:00:01.000Z", "mined block 0 0123456789abcdef")]
    assert [e.kind for e in parse_lines(lines)] == ["mined", "loaded"]


# ------------------------------------------------------------------ figures

H = ["a" * 64, "b" * 64, "c" * 64]  # the final chain's hashes


def _ev(t: float, kind: str, lo: int = 0, hi: int = 0, h16: str | None = None) -> ChainEvent:
    return ChainEvent(t, kind, lo, hi, h16)


def test_propagation_counts_each_block_at_each_other_node_from_its_log():
    miner = NodeRecord("m", 0, [_ev(10, "mined", 0, 1, H[0][:16]), _ev(20, "mined", 1, 2, H[1][:16])],
                       lives=[(0, None)], final_tip=(2, H[1]), miner=True)
    near = NodeRecord("a", 0, [_ev(10.05, "announce", 0, 1), _ev(20.2, "announce", 1, 2)], lives=[(0, None)], final_tip=(2, H[1]))
    late = NodeRecord("b", 1, [_ev(10.3, "announce", 0, 1), _ev(31, "synced", 1, 2)], lives=[(0, None)], final_tip=(2, H[1]))
    delays, skipped = analysis.propagation_ms([miner, near, late], H[:2], cuts=[])
    assert sorted(round(d) for d in delays) == [50, 200, 300, 11000]
    assert skipped == {"not_on_final_chain": 0, "restarted_or_down": 0, "across_cut": 0, "never_arrived": 0}
    steady, _ = analysis.propagation_ms([miner, near, late], H[:2], cuts=[], exclude=[(15, 25)])
    assert sorted(round(d) for d in steady) == [50, 300]  # block 1 was mined inside the window


def test_propagation_leaves_out_restarts_cuts_and_other_tips():
    miner = NodeRecord("m", 0, [_ev(10, "mined", 0, 1, H[0][:16])], lives=[(0, None)], final_tip=(1, H[0]), miner=True)
    restarted = NodeRecord("r", 0, [_ev(15, "synced", 0, 1)], lives=[(0, 12), (14, None)], final_tip=(1, H[0]))
    cut_off = NodeRecord("c", 1, [_ev(40, "synced", 0, 1)], lives=[(0, None)], final_tip=(1, H[0]))
    elsewhere = NodeRecord("e", 0, [_ev(11, "mined", 0, 1, "f" * 16)], lives=[(0, None)], final_tip=(1, "f" * 64))
    delays, skipped = analysis.propagation_ms([miner, restarted, cut_off, elsewhere], H[:1],
                                              cuts=[Cut(20, 30, ((0,), (1,)))])
    assert delays == []
    assert skipped == {"not_on_final_chain": 1, "restarted_or_down": 1, "across_cut": 1, "never_arrived": 0}


def test_stale_rate_is_mined_blocks_off_the_final_chain():
    a = NodeRecord("a", 0, [_ev(1, "mined", 0, 1, H[0][:16]), _ev(2, "mined", 1, 2, "d" * 16)])
    b = NodeRecord("b", 1, [_ev(2.1, "mined", 1, 2, H[1][:16]), _ev(3, "mined", 2, 3, H[2][:16])])
    assert analysis.stale_rate([a, b], H) == (0.25, 4, 1)
    assert analysis.stale_rate([a, b], H, since=2.05) == (0.0, 2, 0)
    assert analysis.stale_rate([a, b], H, exclude=[(1.5, 2.5)]) == (0.0, 2, 0)  # the fork at height 1 came during a cut


def test_agreement_after_a_heal_is_when_the_last_node_reorgs_onto_the_final_chain():
    # final chain: H[0], H[1], H[2]; b was on a fork at height 1 until it synced at t=27
    a = NodeRecord("a", 0, [_ev(1, "mined", 0, 1, H[0][:16]), _ev(12, "mined", 1, 2, H[1][:16]), _ev(25, "mined", 2, 3, H[2][:16])],
                   lives=[(0, None)], final_tip=(3, H[2]))
    b = NodeRecord("b", 1, [_ev(1.1, "announce", 0, 1), _ev(13, "mined", 1, 2, "e" * 16), _ev(27, "synced", 1, 3)],
                   lives=[(0, None)], final_tip=(3, H[2]))
    assert analysis.agreement_after([a, b], H, start=20, until=60) == 7.0
    churned = NodeRecord("c", 1, [], lives=[(0, 21), (23, None)], final_tip=(0, None))  # restarted after the heal
    assert analysis.agreement_after([a, b, churned], H, start=20, until=60, up_since=10) == 7.0
    assert analysis.agreement_after([a, b], H, start=20, until=26) is None


def test_catchup_is_from_the_restart_to_the_height_reachable_then():
    other = NodeRecord("o", 0, [_ev(1, "mined", 0, 1, H[0][:16]), _ev(8, "mined", 1, 2, H[1][:16])], lives=[(0, None)])
    cut_off = NodeRecord("x", 2, [_ev(1, "synced", 0, 3)], lives=[(0, None)])  # longer, but cut from the node
    node = NodeRecord("n", 1, [_ev(2, "announce", 0, 1), _ev(10.5, "loaded", 0, 1), _ev(13.5, "synced", 1, 2)],
                      lives=[(0, 5), (10, None)])
    assert analysis.catchup_s(node, 10, [other, cut_off, node], [Cut(0, 100, ((0, 1), (2,)))], until=60) == 3.5
    stuck = NodeRecord("s", 1, [_ev(10.5, "loaded", 0, 0)], lives=[(10, None)])
    assert analysis.catchup_s(stuck, 10, [other, stuck], [], until=60) is None


def test_a_life_killed_before_it_could_be_judged_is_counted_apart_not_as_a_miss():
    """A restart killed again 0.1 s later had no time to catch up: no evidence about the node. One that lived
    the whole window and never got there is a miss; one that got there counts whatever its life."""
    node = NodeRecord("n", 0, [], lives=[(10.0, 10.1), (20.0, 70.0), (80.0, None)])
    assert node.life_s(10.0, until=100.0) == pytest.approx(0.1)
    assert node.life_s(80.0, until=100.0) == 20.0  # still running when the run ended
    outcomes = [(2.0, 50.0), (None, 0.1), (None, 45.0), (None, 9.0), (12.0, 12.5)]
    assert analysis.judged(outcomes, 10.0) == ([2.0, 12.0], 1, [0.1, 9.0])


def test_sample_figures_tip_agreement_and_peers():
    samples = [{"t": 1.0, "nodes": {"a": {"height": 2, "hash": "x", "tried": 3}, "b": {"height": 2, "hash": "x", "tried": 5},
                                    "c": {"height": 1, "hash": "y", "tried": 9}}}]
    assert analysis.tip_agreement(samples) == [(1.0, 2 / 3, 2)]
    assert analysis.peers_over_time(samples) == [(1.0, 3, 5, 9)]


def test_time_to_peers_from_the_logs_is_per_life_and_exact():
    a = NodeRecord("a", 0, [_ev(1.2, "peers", hi=1), _ev(3.0, "peers", hi=7), _ev(4.25, "peers", hi=8),
                            _ev(21.0, "peers", hi=2), _ev(90.0, "peers", hi=8)], lives=[(1.0, 20.0), (20.5, None)])
    b = NodeRecord("b", 0, [_ev(2.0, "peers", hi=7)], lives=[(1.0, None)])
    assert analysis.time_to_peers([a, b], {"a": [1.0, 20.5], "b": [1.0]}, 8) == \
        {"a@1.000": 3.25, "a@20.500": 69.5, "b@1.000": None}


def test_percentiles_interpolate_between_ranks():
    assert analysis.percentile([1, 2, 3, 4], 50) == 2.5
    assert analysis.percentile([], 50) is None
    assert analysis.summary([10, 20, 30]) == {"p50": 20, "p90": 28, "p99": 29.8, "max": 30}


def test_goals_are_judged_from_the_report_figures():
    from sim.lab.run import goals

    report = {"propagation_ms": {"p99": 900.0}, "stale_rate": 0.08, "cuts": [{}], "partition_heal_s_each": [12.0, None],
              "churn_catchup_s": {"restarts": 4, "not_caught_up": 0, "p50": 3.0, "max": 31.0},
              "peers_wanted_within_60s": {"lives": 10, "late": 0}, "exits": [], "node_rss_mb": {"median": 45.0}}
    assert goals(report) == {"propagation_p99_under_1.5s": True, "stale_rate_under_5%": False,
                             "one_tip_within_15s_of_heal": False, "churn_back_at_height_p50_under_10s": True,
                             "churn_back_at_height_max_under_30s": False, "8_peers_within_60s_of_joining": True,
                             "no_exits": True, "rss_median_under_60MB": True}
    report["cuts"], report["churn_catchup_s"]["restarts"] = [], 0
    assert goals(report)["one_tip_within_15s_of_heal"] is None
    assert goals(report)["churn_back_at_height_max_under_30s"] is None
