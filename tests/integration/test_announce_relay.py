"""ANNOUNCE relay and the answer to a stale branch, end to end on 127.0.0.1.

Consensus rounds and keep-alives are set an hour apart in these nodes, so a block
that reaches a node which was not told of it directly can only have been relayed.
"""
from __future__ import annotations

import pytest

from sim.chains import make_chain, mine_block
from tests.helpers import UdpClient, chain_tip, metric, peer_ports, seed_chain, wait_for, wire_block

# No consensus round, no keep-alive and no expiry during a test: only an ANNOUNCE moves a block.
QUIET = dict(gossip_interval=3600.0, peer_timeout=7200.0, consensus_interval=3600.0)


@pytest.fixture(scope="module")
def base_chain():
    return make_chain(5, 2)


def test_a_block_announced_to_one_node_reaches_a_node_that_only_knows_it(make_node, base_chain):
    """A (a miner, here a scripted peer) announces its block to B only; C knows only B (its
    --peer) and gets the block from B's relay, with no consensus round anywhere."""
    b = make_node(**QUIET)
    c = make_node(peers=(("127.0.0.1", b.config.port),), **QUIET)
    for node in (b, c):
        seed_chain(node, base_chain)
    wait_for(lambda: c.config.port in peer_ports(b, "tried") and b.config.port in peer_ports(c, "tried"), timeout=15)
    block = mine_block(base_chain[-1], 2, mined_by="A", messages=("found on A",))
    miner = UdpClient()
    try:
        miner.send(b.config.port, wire_block(block))
        wait_for(lambda: chain_tip(b) == (6, block.hash), timeout=15)
        wait_for(lambda: chain_tip(c) == (6, block.hash), timeout=15)
        assert metric(c, "node_datagrams_received_total", type="ANNOUNCE") >= 1
        # B relayed it once and not back to its sender (A).
        assert miner.recv(timeout=0.5, expect="ANNOUNCE") is None
    finally:
        miner.close()


def test_a_stale_branch_announce_is_answered_with_our_tip(make_node, base_chain):
    """A peer on the losing side of a healed cut announces its (shorter) branch's tip: the node
    answers with its own tip, which the peer can't link and so syncs. An address that is not
    a peer of the node (a forged source) gets nothing."""
    peer, stranger = UdpClient(), UdpClient()
    try:
        node = make_node(peers=(peer.address,), **QUIET)
        ours = make_chain(8, 2, base=base_chain)
        theirs = make_chain(7, 2, base=base_chain, tag="other-side")
        seed_chain(node, ours)
        peer.send(node.config.port, wire_block(theirs[-1]))
        answer = peer.recv(timeout=15, expect="ANNOUNCE")
        assert answer is not None and answer["hash"] == ours[-1].hash and answer["height"] == 7
        stranger.send(node.config.port, wire_block(theirs[-1]))
        wait_for(lambda: metric(node, "node_datagrams_dropped_total", reason="stale_answer_untried") >= 1, timeout=15)
        assert stranger.recv(timeout=0.5, expect="ANNOUNCE") is None
        assert chain_tip(node) == (8, ours[-1].hash)
    finally:
        peer.close()
        stranger.close()

