"""Floods (issue 11), in a short form: forged GOSSIP and NEW_WORD floods leave the node
answering STATS, following its honest well-known peer, with a small data dir.

The full-length versions (20 s of forged GOSSIP at 1,000/s, 40,000 NEW_WORDs at
4,000/s) are `bench/bench_floods.py`.
"""
from __future__ import annotations

import threading

from sim.chains import make_chain
from sim.flood import StatsProbe, gossip_flood, word_flood
from sim.peer import ScriptedPeer
from tests.helpers import health, wait_for


def _dir_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_forged_gossip_flood_keeps_the_honest_peer_and_its_longer_chain(make_node):
    chain = make_chain(40, 2)
    with ScriptedPeer(chain[:20], name="honest") as honest:
        node = make_node(peers=(honest.address,), gossip_interval=0.5, consensus_interval=1.0)
        keeper = node.ctx.registry.proxy("ChainKeeper")
        wait_for(lambda: keeper.tip().get(timeout=5)[0] == 20, timeout=20)
        gossip = node.ctx.registry.proxy("GossipManager")
        probe = StatsProbe(("127.0.0.1", node.config.port)).start()
        flood = threading.Thread(target=gossip_flood, args=(("127.0.0.1", node.config.port), 1000, 4.0))
        flood.start()
        honest.blocks = list(chain)  # the honest peer's chain grows during the flood
        flood.join()
        probe.stop()
        table = gossip.peer_table().get(timeout=5)
        mine = [p for p in table if (p["host"], p["port"]) == honest.address]
        assert mine and mine[0]["table"] == "tried"
        assert honest.address in gossip.peer_addresses().get(timeout=5)
        assert sum(1 for p in table if p["table"] == "tried") == 1  # no forged originator got in
        wait_for(lambda: keeper.tip().get(timeout=5)[0] == 40, timeout=20)
        assert probe.answered_within(1.0) >= 0.9, probe.latencies
        assert sum(a["restarts"] for a in health(node)["actors"]) == 0


def test_new_word_flood_is_bounded_and_stats_stay_answered(make_node):
    node = make_node()
    probe = StatsProbe(("127.0.0.1", node.config.port)).start()
    sent = word_flood(("127.0.0.1", node.config.port), 4000, 2.0)
    probe.stop()
    keeper = node.ctx.registry.proxy("ChainKeeper")
    queued = keeper.word_count().get(timeout=5)
    assert 0 < queued <= 500 < sent  # one source: its rate and its share of the queue
    keeper.on_new_word.defer("other", "127.0.0.9")
    wait_for(lambda: "other" in keeper.pending_words(1000).get(timeout=5))  # another source still gets in
    assert probe.answered_within(1.0) >= 0.9, probe.latencies
    assert _dir_bytes(node.config.data_dir) < 2 * 1024 * 1024
