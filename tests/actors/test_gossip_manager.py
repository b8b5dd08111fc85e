"""GossipManager rules with an injected clock and RNG (no sockets)."""
from __future__ import annotations

from tests.helpers import health
import random

from config import NodeConfig
from runtime.context import NodeContext
from actors.gossip_manager import MAX_NEW, MAX_TRIED, GossipManager
from messages.wire import Gossip, GossipReply


class Recording(GossipManager):
    """GossipManager whose sends are recorded instead of going to NetworkIO."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = []

    def _send(self, message, addr):
        self.sent.append((message, addr))


def make(tmp_path, now):
    ctx = NodeContext(NodeConfig(host="127.0.0.1", port=5000, name="me", data_dir=tmp_path, peer_timeout=60.0))
    return Recording(ctx, clock=lambda: now[0], rng=random.Random(7))


def make_tried(gm, addrs):
    """Addresses answer the keep-alive GOSSIP we send them: they move to the tried table."""
    for host, port in addrs:
        gm.on_gossip_reply(GossipReply(host, port, f"p{port}"), (host, port))  # heard of: new table
    gm.keep_alive()  # probes the new table
    for host, port in addrs:
        gm.on_gossip_reply(GossipReply(host, port, f"p{port}"), (host, port))
    gm.sent.clear()


def test_new_id_replied_once_and_forwarded_to_at_most_three(tmp_path):
    now = [0.0]
    gm = make(tmp_path, now)
    make_tried(gm, [("127.0.0.1", port) for port in range(6001, 6006)])
    assert len(gm.tried) == 5
    gossip = Gossip("127.0.0.1", 6001, "id-1", "p6001")
    gm.on_gossip(gossip, ("127.0.0.1", 6002))
    replies = [a for m, a in gm.sent if isinstance(m, GossipReply)]
    forwards = [a for m, a in gm.sent if m == gossip]
    assert replies == [("127.0.0.1", 6001)]
    assert len(forwards) == 3 and len(set(forwards)) == 3
    assert ("127.0.0.1", 6001) not in forwards  # never back to the originator
    gm.sent.clear()
    gm.on_gossip(gossip, ("127.0.0.1", 6003))
    assert gm.sent == []  # a seen id is neither replied to nor forwarded


def test_silent_peers_are_dropped_after_the_timeout(tmp_path):
    now = [0.0]
    gm = make(tmp_path, now)
    gm.on_gossip_reply(GossipReply("127.0.0.1", 7001, "old"), ("127.0.0.1", 7001))
    now[0] = 50.0
    gm.on_gossip_reply(GossipReply("127.0.0.1", 7002, "new"), ("127.0.0.1", 7002))
    now[0] = 61.0
    gm.expire()
    assert [p["port"] for p in gm.peer_table()] == [7002]


def test_peer_table_and_seen_ids_are_bounded(tmp_path):
    now = [0.0]
    gm = make(tmp_path, now)
    for i in range(3000):
        gm.on_gossip(Gossip(f"127.{i // 250}.{i % 250}.1", 9000, f"flood-{i}", "x"), ("127.0.0.1", 1))
    assert len(gm.new) == MAX_NEW and len(gm.tried) == 0
    now[0] = 1000.0
    gm.expire()
    assert len(gm.seen_ids) == 0 and len(gm.peers) == 0


def test_own_address_is_never_a_peer(tmp_path):
    now = [0.0]
    gm = make(tmp_path, now)
    gm.on_gossip(Gossip("127.0.0.1", 5000, "self", "me"), ("127.0.0.1", 5000))
    gm.on_gossip_reply(GossipReply("127.0.0.1", 5000, "me"), ("127.0.0.1", 5000))
    assert gm.peers == {}


def test_peer_table_survives_a_restart(make_node):
    from tests.helpers import wait_for
    node = make_node()
    gm = node.ctx.registry.proxy("GossipManager")
    for port in (40001, 40002):
        gm.on_gossip.defer(Gossip("127.0.0.1", port, f"id{port}", f"p{port}"), ("127.0.0.1", port))
    wait_for(lambda: len(gm.peer_table().get(timeout=5)) == 2)
    gm.crash.defer("test")
    wait_for(lambda: health(node)["status"] == "ok" and node.supervisor.children["GossipManager"].restarts == 1)
    table = node.ctx.registry.proxy("GossipManager").peer_table().get(timeout=5)
    assert {p["port"] for p in table} == {40001, 40002}


def test_silent_well_known_peer_gets_exactly_one_warning(make_node, caplog, monkeypatch):
    import logging
    import time as _time

    import actors.gossip_manager as gm_module
    monkeypatch.setattr(gm_module, "WELL_KNOWN_GRACE", 0.2)
    with caplog.at_level(logging.WARNING, logger="node.GossipManager"):
        node = make_node(peers=(("127.0.0.1", 9),))
        _time.sleep(1.0)
    warnings = [r for r in caplog.records if "has not answered" in r.getMessage()]
    assert len(warnings) == 1 and "127.0.0.1:9" in warnings[0].getMessage()
    assert health(node)["status"] == "ok"


def test_forged_originators_never_evict_tried_or_well_known_peers(tmp_path):
    """300 forged GOSSIP/s for 20 s (6,000 originators) only churn the new table."""
    now = [0.0]
    gm = make(tmp_path, now)
    gm.well_known = [("127.0.0.1", 7000)]
    make_tried(gm, [("127.0.0.1", 7000), ("127.0.0.1", 7001)])
    assert set(gm.tried) == {("127.0.0.1", 7000), ("127.0.0.1", 7001)}
    for i in range(6000):
        now[0] = i / 300
        gm.on_gossip(Gossip(f"10.{i // 250 % 250}.{i % 250}.1", 9000, f"forged-{i}", "x"), ("10.9.9.9", 1))
        if i % 3000 == 0:  # the honest peers keep gossiping (every 30 s in real life)
            for port in (7000, 7001):
                gm.on_gossip(Gossip("127.0.0.1", port, f"honest-{port}-{i}", "h"), ("127.0.0.1", port))
    assert set(gm.tried) == {("127.0.0.1", 7000), ("127.0.0.1", 7001)}
    assert len(gm.new) == MAX_NEW
    # Consensus, ANNOUNCEs and forwards only go to validated addresses.
    assert set(gm.peer_addresses()) == {("127.0.0.1", 7000), ("127.0.0.1", 7001)}
    forwards = [a for m, a in gm.sent if isinstance(m, Gossip) and m.id.startswith("forged-")]
    assert forwards and set(forwards) <= {("127.0.0.1", 7000), ("127.0.0.1", 7001)}
    assert gm._heard_from <= set(gm.well_known)  # bounded by --peer, not by originators


def test_unsolicited_or_forged_replies_do_not_promote(tmp_path):
    now = [0.0]
    gm = make(tmp_path, now)
    gm.on_gossip_reply(GossipReply("127.0.0.1", 8001, "x"), ("127.0.0.1", 8001))
    assert ("127.0.0.1", 8001) in gm.new and not gm.tried  # never asked: only heard of
    gm.keep_alive()
    gm.on_gossip_reply(GossipReply("127.0.0.1", 8001, "x"), ("127.0.0.9", 8001))
    assert not gm.tried  # the answer must come from the host it names
    now[0] = 11.0
    gm.on_gossip_reply(GossipReply("127.0.0.1", 8001, "x"), ("127.0.0.1", 8001))
    assert not gm.tried  # too late after the probe
    gm.keep_alive()
    gm.on_gossip_reply(GossipReply("127.0.0.1", 8001, "x"), ("127.0.0.1", 8001))
    assert ("127.0.0.1", 8001) in gm.tried


def test_tried_table_is_bounded_and_refuses_rather_than_evicts(tmp_path):
    now = [0.0]
    gm = make(tmp_path, now)
    make_tried(gm, [("127.0.0.1", 10000 + i) for i in range(MAX_TRIED + 10)])
    assert len(gm.tried) == MAX_TRIED
    assert ("127.0.0.1", 10000) in gm.tried  # the first ones stay


def test_a_repeated_id_straight_from_the_peer_it_names_refreshes_it_but_is_not_forwarded(tmp_path):
    """Some peers reuse one GOSSIP id for every keep-alive: sent from the host it names,
    it keeps that peer (tried or new) from expiring; from anywhere else it is ignored."""
    now = [0.0]
    gm = make(tmp_path, now)
    make_tried(gm, [("127.0.0.1", port) for port in range(6001, 6005)])
    keepalive = Gossip("127.0.0.1", 6001, "always-the-same", "p6001")
    heard_only = Gossip("127.0.0.9", 7000, "also-the-same", "p7000")
    gm.on_gossip(keepalive, ("127.0.0.1", 6001))
    gm.on_gossip(heard_only, ("127.0.0.9", 7000))  # new table (it never answers our GOSSIP)
    assert ("127.0.0.9", 7000) in gm.new
    for step in range(1, 10):  # 9 x 20 s: three times the 60 s peer timeout
        now[0] = 20.0 * step
        gm.sent.clear()
        remembered = keepalive.id in gm.seen_ids and heard_only.id in gm.seen_ids  # (for 120 s; then seen afresh)
        gm.on_gossip(keepalive, ("127.0.0.1", 6001))
        gm.on_gossip(heard_only, ("127.0.0.9", 7000))
        gm.on_gossip(keepalive, ("127.0.0.2", 9999))  # a copy from elsewhere: not a sign of life
        if remembered:
            assert [m for m, _ in gm.sent if isinstance(m, (Gossip, GossipReply))] == []  # neither forwarded nor replied to
        gm.expire()
        assert ("127.0.0.1", 6001) in gm.tried and ("127.0.0.9", 7000) in gm.new
        assert ("127.0.0.1", 6002) not in gm.tried or now[0] <= 60.0  # the others go silent and leave
    forged = Gossip("127.0.0.1", 6002, "x", "p6002")
    gm2 = make(tmp_path, now)
    make_tried(gm2, [("127.0.0.1", 6002)])
    gm2.on_gossip(forged, ("127.0.0.1", 6002))
    now[0] += 50.0
    gm2.on_gossip(forged, ("127.0.0.3", 6002))  # same id, another IP than the host it names
    now[0] += 20.0
    gm2.expire()
    assert ("127.0.0.1", 6002) not in gm2.tried
