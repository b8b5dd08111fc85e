"""Consensus choices (which chains to try, in what order), without sockets."""
from __future__ import annotations

from chain.selection import rank_candidates

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


def test_a_top_hash_without_the_proof_of_work_is_no_candidate():
    ranked = rank_candidates([(A, 10, "1" * 64), (B, 9, "1" * 62 + "00")], our_height=0, difficulty=2)
    assert [(c.height, c.votes) for c in ranked] == [(9, 1)]
