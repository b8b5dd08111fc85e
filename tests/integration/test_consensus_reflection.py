"""CONSENSUS does not reflect onto third parties.

Every CONSENSUS used to start a round at once, and a round sends a STATS to every
peer: with 8 peers, 100 CONSENSUS a second (21 bytes each) made the node send its
peers over 6x the attacker's bytes, from forged sources too. Now CONSENSUS is limited
per source IP and in all on arrival, and the rounds it asks for are coalesced (one
now, one waiting, at most one per gap): what the peers receive is bounded by their
number and the round period, not by the CONSENSUS rate.
"""
from __future__ import annotations

import socket

import actors.consensus_runner
from sim.reflect import CONSENSUS, PeerSwarm, consensus_flood
from tests.helpers import metric, peer_ports, wait_for

FLOOD_SECONDS = 3.0
# The gap between CONSENSUS-released rounds (15 s in service). Shorter here so the waiting
# round is not waited out for long, yet longer than the flood: the flood still meets one
# round now and one waiting, and everything past those must coalesce, as in service.
ROUND_GAP = FLOOD_SECONDS + 2.0


def test_a_consensus_storm_sends_third_parties_less_than_the_attacker_sends(make_node, monkeypatch):
    monkeypatch.setattr(actors.consensus_runner, "CONSENSUS_ROUND_GAP", ROUND_GAP)  # read when the runner starts
    node = make_node(probe_interval=0)
    runner = node.ctx.registry.proxy("ConsensusRunner")
    target = ("127.0.0.1", node.config.port)
    with PeerSwarm(8, [], first_octet=10) as swarm:
        intro = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            intro.bind(("127.0.0.1", 0))
            swarm.introduce(target, intro)
            wait_for(lambda: peer_ports(node, "tried") >= {port for _, port in swarm.addresses}, timeout=20)
        finally:
            intro.close()
        wait_for(lambda: not runner.status().get(timeout=5)["running"], timeout=20)
        rounds_before = runner.status().get(timeout=5)["rounds"]
        before, kinds_before = swarm.counts()
        # 100 CONSENSUS a second for 3 s, from four forged sources (past the per-IP limit).
        sent = consensus_flood(target, 100.0, FLOOD_SECONDS, sources=[f"127.0.0.{200 + i}" for i in range(4)])
        # Whatever the flood left waiting runs too (a gap after the first): counted in.
        wait_for(lambda: runner.status().get(timeout=5)["rounds"] >= rounds_before + 2, timeout=30)
        wait_for(lambda: not runner.status().get(timeout=5)["running"], timeout=20)
        after, kinds = swarm.counts()
        to_third_parties, stats = after - before, kinds["Stats"] - kinds_before["Stats"]
        assert sent == 300 * len(CONSENSUS)
        assert stats >= 16  # both rounds asked all 8 peers ...
        assert to_third_parties <= sent, (to_third_parties, sent, kinds)  # ... and no more
        assert metric(node, "node_datagrams_dropped_total", reason="consensus_rate_limited") > 0
