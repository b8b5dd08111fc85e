"""What GossipManager tells the operator about peers: each join and leave once, and the first peer."""
from __future__ import annotations

import logging

from messages.wire import GossipReply
from tests.actors.test_gossip_manager import make, make_tried


def peer_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name.startswith("node.GossipManager") and r.levelno >= logging.INFO]


def test_the_first_peer_a_join_and_a_leave_are_each_logged_once(tmp_path, caplog):
    now = [0.0]
    gm = make(tmp_path, now)
    with caplog.at_level(logging.INFO):
        make_tried(gm, [("127.0.0.1", 6001)])
        make_tried(gm, [("127.0.0.1", 6002)])
        for _ in range(3):  # the same peers answering again: nothing new to say
            gm.on_gossip_reply(GossipReply("127.0.0.1", 6001, "p6001"), ("127.0.0.1", 6001))
        now[0] = 50.0
        gm.on_gossip_reply(GossipReply("127.0.0.1", 6002, "p6002"), ("127.0.0.1", 6002))
        now[0] = 61.0
        gm.expire()
        gm.expire()
    assert peer_lines(caplog) == [
        "first peer 127.0.0.1:6001 (p6001) answered: no longer on our own",
        "peer 127.0.0.1:6002 (p6002) joined: 2 peers",
        "dropped silent peer 127.0.0.1:6001 (p6001)",
    ]
