"""Consensus choices and the fetch scheduler, without sockets."""
from __future__ import annotations

from chain.fetch import FetchPlan
from chain.selection import gallop_heights, narrow_fork, next_probe_heights, rank_candidates
from sim.chains import make_chain

A, B, C, D = ("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3), ("127.0.0.1", 4)
H1, H2, H3 = "a" * 64, "b" * 64, "c" * 64


def test_longest_first_then_most_votes():
    ranked = rank_candidates([(A, 10, H1), (B, 10, H2), (C, 10, H2), (D, 12, H3)], our_height=5)
    assert [(c.height, c.hash, c.votes) for c in ranked] == [(12, H3, 1), (10, H2, 2), (10, H1, 1)]


def test_nonsense_claims_are_ignored():
    claims = [(A, "10", H1), (B, None, H1), (C, 10, None), (D, 10, "xyz"), (A, True, H1), (B, -3, H1)]
    assert rank_candidates(claims, our_height=0) == []


def test_shorter_chains_are_not_candidates_but_equal_ones_may_be_top_index_claims():
    ranked = rank_candidates([(A, 3, H1), (B, 5, H2), (C, 6, H3)], our_height=5)
    assert [(c.height, c.hash) for c in ranked] == [(6, H3), (5, H2)]


def test_one_claim_per_peer():
    ranked = rank_candidates([(A, 10, H1), (A, 11, H2)], our_height=0)
    assert [(c.height, c.votes) for c in ranked] == [(11, 1)]


def test_probe_heights_and_narrowing_find_the_fork():
    ours = list(range(1000))
    fork_at = 637
    low, high, rounds = 0, 1000, 0
    while low < high:
        heights = next_probe_heights(low, high, 15)
        assert heights and all(low <= h < high for h in heights)
        low, high = narrow_fork(low, high, [(h, h < fork_at) for h in heights])
        rounds += 1
    assert low == fork_at == high
    assert rounds <= 4 and ours


def test_fetch_plan_spreads_requests_and_retransmits_on_timeout():
    plan = FetchPlan(heights=range(10), peers=[A, B], window=4, per_peer=2, initial_rto=0.1)
    first = plan.due_requests(0.0)
    assert len(first) == 4 and {p for _, p in first} == {A, B}
    assert plan.due_requests(0.0) == []  # window full
    assert plan.expire(0.2) == 4
    again = plan.due_requests(0.2)
    assert sorted(h for h, _ in again) == [0, 1, 2, 3]  # the lost ones first


def test_fetch_plan_collects_blocks_and_finishes():
    chain = make_chain(6, 1)
    plan = FetchPlan(heights=range(6), peers=[A], window=10, per_peer=10)
    sent = plan.due_requests(0.0)
    assert len(sent) == 6
    for block in chain:
        assert plan.on_block(block, A, 0.01)
    assert plan.done and not plan.on_block(chain[0], A, 0.02)  # duplicates ignored
    assert plan.links[A].srtt is not None


def test_unsolicited_block_from_a_stranger_is_ignored():
    chain = make_chain(2, 1)
    plan = FetchPlan(heights=range(2), peers=[A])
    assert not plan.on_block(chain[0], C, 0.0)
    assert not plan.done


def test_silent_peer_is_dropped_and_its_requests_move():
    plan = FetchPlan(heights=range(100), peers=[A, B], window=10, per_peer=5, initial_rto=0.01, max_consecutive_timeouts=2)
    now = 0.0
    chain = make_chain(100, 1)
    while not plan.done and now < 5:
        for height, peer in plan.due_requests(now):
            if peer == A:
                plan.on_block(chain[height], A, now + 0.001)
        now += 0.02
        plan.expire(now)
    assert plan.done
    assert B in plan.dropped_peers and A in plan.links


def test_peer_lacking_blocks_is_dropped_and_plan_fails_without_peers():
    plan = FetchPlan(heights=range(3), peers=[A])
    plan.due_requests(0.0)
    plan.on_missing(A)
    assert plan.failed


def test_gallop_probes_recent_heights_first():
    assert gallop_heights(0, 1000, 15) == [0, 488, 744, 872, 936, 968, 984, 992, 996, 998, 999]
    assert gallop_heights(990, 1000, 15) == [990, 992, 996, 998, 999]
