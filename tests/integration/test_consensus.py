"""Consensus and sync end to end: real nodes and scripted peers on 127.0.0.1."""
from __future__ import annotations

import dataclasses
import time

import pytest

from messages.wire import Announce
from sim.chains import make_chain
from sim.peer import ScriptedPeer
from tests.helpers import UdpClient, chain_tip, introduce_and_run_consensus, metric, peer_ports, seed_chain, wait_for

FAST = dict(gossip_interval=0.3, peer_timeout=5.0, consensus_interval=3600.0)
DAY = 86400.0  # a timer this far off never fires during a test


@pytest.fixture(scope="module")
def main_chain():
    return make_chain(300, 2)


def keeper(node):
    return node.ctx.registry.proxy("ChainKeeper")


def test_nodes_form_a_network_by_gossip(make_node):
    a = make_node(**FAST)
    b = make_node(peers=(("127.0.0.1", a.config.port),), **FAST)
    c = make_node(peers=(("127.0.0.1", a.config.port),), **FAST)
    wait_for(lambda: peer_ports(a) == {b.config.port, c.config.port}, timeout=10)
    wait_for(lambda: peer_ports(b) == {a.config.port, c.config.port}, timeout=10)
    wait_for(lambda: peer_ports(c) == {a.config.port, b.config.port}, timeout=10)


def test_fresh_node_joins_and_syncs(make_node, main_chain):
    a = make_node(**FAST)
    seed_chain(a, main_chain)
    b = make_node(peers=(("127.0.0.1", a.config.port),), **FAST)
    wait_for(lambda: chain_tip(b) == (300, main_chain[-1].hash), timeout=15)


def test_majority_chain_wins_a_tie(make_node, main_chain):
    other = make_chain(300, 2, tag="other")
    with ScriptedPeer(main_chain, seed=1) as p1, ScriptedPeer(main_chain, seed=2) as p2, ScriptedPeer(other, seed=3) as p3:
        node = make_node(peers=(p3.address, p1.address, p2.address), **FAST)
        wait_for(lambda: chain_tip(node) == (300, main_chain[-1].hash), timeout=15)


def test_longer_chain_with_a_forged_block_is_refused(make_node, main_chain):
    longer = make_chain(340, 2, base=main_chain[:200], tag="forger")
    forged = list(longer)
    forged[250] = dataclasses.replace(forged[250], messages=("forged!",))
    with ScriptedPeer(main_chain, seed=1, drop_rate=0.1) as p1, ScriptedPeer(main_chain, seed=2, drop_rate=0.1) as p2, \
            ScriptedPeer(forged, seed=3) as liar:
        node = make_node(peers=(liar.address, p1.address, p2.address), **FAST)
        wait_for(lambda: chain_tip(node) == (300, main_chain[-1].hash), timeout=20)
        assert any(h >= 200 for h in liar.get_block_heights)  # it was tried (it claimed the longest chain)
        time.sleep(0.3)
        assert chain_tip(node) == (300, main_chain[-1].hash)
        # The liar is remembered: the next round does not download its chain again.
        asked_before = len(liar.get_block_heights)
        runner = node.ctx.registry.proxy("ConsensusRunner")
        rounds = runner.status().get(timeout=5)["rounds"]
        runner.on_consensus.defer()
        wait_for(lambda: runner.status().get(timeout=5)["rounds"] > rounds and not runner.status().get(timeout=5)["running"])
        assert len(liar.get_block_heights) == asked_before


def test_extension_is_fetched_incrementally(make_node, main_chain):
    node = make_node(**FAST)
    seed_chain(node, main_chain[:250])
    with ScriptedPeer(main_chain, seed=1) as p1, ScriptedPeer(main_chain, seed=2) as p2:
        introduce_and_run_consensus(node, [p1, p2])
        wait_for(lambda: chain_tip(node) == (300, main_chain[-1].hash), timeout=15)
        fetched = p1.get_block_heights + p2.get_block_heights
        assert len(fetched) < 50 + 30, f"{len(fetched)} GET_BLOCKs for a 50-block extension"
        assert min(fetched) >= 200  # nothing near genesis was downloaded


def test_reorg_onto_a_longer_fork(make_node, main_chain):
    node = make_node(**FAST)
    seed_chain(node, main_chain)
    fork = make_chain(310, 2, base=main_chain[:290], tag="fork")
    with ScriptedPeer(fork, seed=1, drop_rate=0.2) as p1, ScriptedPeer(fork, seed=2, drop_rate=0.2) as p2:
        introduce_and_run_consensus(node, [p1, p2])
        wait_for(lambda: chain_tip(node) == (310, fork[-1].hash), timeout=15)
        fetched = p1.get_block_heights + p2.get_block_heights
        below_fork = [h for h in fetched if h < 290]
        assert len(below_fork) < 40, f"{len(below_fork)} probes below the fork"
        assert len(fetched) < 100
        blocks = keeper(node).get_blocks(0, 400).get(timeout=5)
        assert blocks == fork
        assert metric(node, "node_chain_reorgs_total") == 1


def test_unlinked_announce_triggers_a_sync(make_node, main_chain):
    node = make_node(**FAST)
    seed_chain(node, main_chain[:100])
    with ScriptedPeer(main_chain, seed=1) as p1:
        # The announcer is not a tracked peer: the round asks it anyway.
        p1.send(Announce(main_chain[-1]), ("127.0.0.1", node.config.port))
        wait_for(lambda: chain_tip(node) == (300, main_chain[-1].hash), timeout=15)


def test_stats_answered_while_syncing(make_node, main_chain):
    with ScriptedPeer(main_chain, seed=1, reply_delay=0.01) as slow:
        node = make_node(peers=(slow.address,), **FAST)
        client = UdpClient()
        try:
            wait_for(lambda: 0 < slow.received["GetBlock"], timeout=10)
            heights = []
            for _ in range(10):
                # Re-asked as a UDP client would; no bound on how long an answer may take.
                reply = wait_for(lambda: client.ask(node.config.port, {"type": "STATS"}, timeout=0.5), timeout=60)
                assert reply["type"] == "STATS_REPLY"
                heights.append(reply["height"])
                time.sleep(0.05)
            # Each answer told a chain short of the peer's 300 blocks: it was given while the sync
            # ran, not held back until the sync had ended.
            assert all(h < 300 for h in heights), heights
            assert chain_tip(node)[0] < 300, "the sync should still be running"
        finally:
            client.close()


def test_peer_reporting_top_index_instead_of_length_is_still_followed(make_node, main_chain):
    """A STATS_REPLY of (top index, top hash) doesn't check out as a length; it is a weaker vote."""
    with ScriptedPeer(main_chain, seed=1, claim=(299, main_chain[-1].hash)) as odd:
        node = make_node(peers=(odd.address,), **FAST)
        wait_for(lambda: chain_tip(node) == (300, main_chain[-1].hash), timeout=15)


def test_nonsense_stats_replies_do_not_stop_the_round(make_node, main_chain):
    with ScriptedPeer(main_chain, seed=1) as good, ScriptedPeer(main_chain, seed=2, claim=(10**6, "f" * 64)) as liar:
        node = make_node(peers=(liar.address, good.address), **FAST)
        wait_for(lambda: chain_tip(node) == (300, main_chain[-1].hash), timeout=15)


def test_silent_peer_is_dropped_by_the_expiry_timer_not_at_a_keep_alive(make_node):
    """The keep-alive and the consensus rounds (which also drop silent peers) are a day apart:
    a peer that goes at all went by the expiry check's own timer."""
    node = make_node(gossip_interval=DAY, consensus_interval=DAY, peer_timeout=1.0)
    client = UdpClient()
    try:
        client.send(node.config.port, {"type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": client.address[1], "name": "quiet"})
        wait_for(lambda: peer_ports(node) == {client.address[1]})
        wait_for(lambda: peer_ports(node) == set(), timeout=30)
    finally:
        client.close()
