"""A single node over UDP: STATS, GET_BLOCK, ANNOUNCE, GOSSIP, malformed datagrams."""
from __future__ import annotations

import dataclasses

from messages.wire import DECODE_ERROR_KINDS
from sim.chains import make_chain
from tests.helpers import UdpClient, metric, real_blocks, wait_for, wire_block


def stats(client, node):
    return client.ask(node.config.port, {"type": "STATS"})


def test_empty_chain_stats_and_get_block(make_node, client):
    node = make_node()
    assert stats(client, node) == {"type": "STATS_REPLY", "height": 0, "hash": None}
    reply = client.ask(node.config.port, {"type": "GET_BLOCK", "height": 0})
    assert reply == {"type": "GET_BLOCK_REPLY", "height": None, "minedBy": None, "messages": None,
                     "nonce": None, "timestamp": None, "hash": None}


def test_real_blocks_are_accepted_by_announce(make_node, client):
    node = make_node(difficulty=8)
    blocks = real_blocks()
    for block in blocks:
        client.send(node.config.port, wire_block(block))
    wait_for(lambda: stats(client, node)["height"] == 2)
    assert stats(client, node)["hash"] == blocks[1].hash
    reply = client.ask(node.config.port, {"type": "GET_BLOCK", "height": 1})
    assert reply == wire_block(blocks[1], "GET_BLOCK_REPLY")


def test_tampered_and_unlinked_announces_are_ignored(make_node, client):
    node = make_node(difficulty=8)
    blocks = real_blocks()
    tampered = dataclasses.replace(blocks[0], nonce="1")
    client.send(node.config.port, wire_block(tampered))
    client.send(node.config.port, wire_block(blocks[1]))  # does not link to an empty chain
    client.send(node.config.port, wire_block(blocks[0]))
    wait_for(lambda: stats(client, node)["height"] == 1)
    client.send(node.config.port, wire_block(dataclasses.replace(blocks[1], timestamp=1)))
    assert stats(client, node) == {"type": "STATS_REPLY", "height": 1, "hash": blocks[0].hash}


def test_malformed_burst_leaves_node_serving_and_chain_unchanged(make_node, client):
    node = make_node()
    chain = make_chain(3, 2)
    for block in chain:
        client.send(node.config.port, wire_block(block))
    wait_for(lambda: stats(client, node)["height"] == 3)
    garbage = [b"\xff\xfe", b"[]", b"{}", b'{"type":"ANNOUNCE"}', b'{"type":"GET_BLOCK","height":-5}',
               b'{"type":"GOSSIP","port":"x"}', b"null", b'{"type":"STATS_REPLY","height":"9"}', b"A" * 9000]
    for _ in range(200):
        for data in garbage:
            client.send(node.config.port, data)
    assert stats(client, node) == {"type": "STATS_REPLY", "height": 3, "hash": chain[-1].hash}
    wait_for(lambda: sum(metric(node, "node_malformed_datagrams_total", reason=r) for r in DECODE_ERROR_KINDS) >= 1800)
    assert all(a["alive"] for a in node.health()["actors"])


def test_gossip_reply_goes_to_the_originator_in_the_message(make_node, client):
    node = make_node()
    originator = UdpClient()
    try:
        client.send(node.config.port, {"type": "GOSSIP", "host": "127.0.0.1", "port": originator.address[1], "id": "g-1", "name": "orig"})
        reply = originator.recv(expect="GOSSIP_REPLY")
        assert reply == {"type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": node.config.port, "name": node.config.name}
        # A peer seen for the first time is also greeted: our GOSSIP and a STATS (catch-up on first sight).
        greeting = sorted(originator.recv()["type"] for _ in range(2))
        assert greeting == ["GOSSIP", "STATS"]
        assert client.recv(timeout=0.3) is None  # not to the datagram's source
        client.send(node.config.port, {"type": "GOSSIP", "host": "127.0.0.1", "port": originator.address[1], "id": "g-1", "name": "orig"})
        assert originator.recv(timeout=0.3, expect="GOSSIP_REPLY") is None  # a seen id is not answered again
    finally:
        originator.close()


def test_new_word_is_queued_durably(make_node, client):
    node = make_node()
    client.send(node.config.port, {"type": "NEW_WORD", "word": "hello"})
    keeper = node.ctx.registry.proxy("ChainKeeper")
    wait_for(lambda: keeper.pending_words().get() == ["hello"])


def test_datagrams_for_a_restarting_actor_are_held_not_lost(make_node, client):
    node = make_node()
    keeper = node.ctx.registry.proxy("ChainKeeper")
    keeper.crash.defer("test")
    # Sent while ChainKeeper is down or restarting: held by NetworkIO, then delivered.
    client.send(node.config.port, {"type": "NEW_WORD", "word": "held"})
    reply = client.ask(node.config.port, {"type": "STATS"}, timeout=3.0)
    assert reply == {"type": "STATS_REPLY", "height": 0, "hash": None}
    wait_for(lambda: node.ctx.registry.proxy("ChainKeeper").pending_words().get(timeout=5) == ["held"])
    assert node.supervisor.children["ChainKeeper"].restarts == 1


def test_sends_to_addresses_sendto_cannot_take_are_dropped_and_counted(make_node, client):
    """Defence in depth behind the codec: a bad address in a send never reaches sendto() (no DNS, no TypeError)."""
    from messages.wire import Stats

    node = make_node()
    proxy = node.ctx.registry.proxy("NetworkIO")
    for addr in [("\ud800", 9), ("127.0.0.1\x00", 9), ("\x80", 9), ("localhost", 9), ("::1", 9), ("127.0.0.1", 0), (None, 9), "junk"]:
        proxy.send.defer(Stats(), addr)
    assert client.ask(node.config.port, {"type": "STATS"}) is not None
    assert metric(node, "node_datagrams_dropped_total", reason="bad_address") == 8
    assert sum(a["restarts"] for a in node.health()["actors"]) == 0
