"""Replies forged with the serving peer's own address, against a real node over UDP.

A raw socket puts the honest peer's address (127.0.0.1 and its port) in the source
of each datagram, so the node cannot tell them from the peer's own: all-null "no
such block" replies at 200/s, or false blocks sprayed over the heights it fetches.
Neither may stop or stall the sync, nor get the honest peer set aside or banned.
"""
from __future__ import annotations

import dataclasses
import itertools

import pytest

from chain.block import Block
from messages.wire import GetBlockReply, encode
from sim.chains import make_chain
from sim.peer import ScriptedPeer
from sim.spoof import SpoofFlood, raw_sockets_allowed
from tests.helpers import chain_tip, free_udp_port, introduce_and_run_consensus, metric, wait_for

pytestmark = pytest.mark.skipif(not raw_sockets_allowed(), reason="forging a source address needs a raw socket (root or CAP_NET_RAW)")

QUIET = dict(gossip_interval=30.0, peer_timeout=120.0, consensus_interval=3600.0)


@pytest.fixture(scope="module")
def chain() -> list[Block]:
    return make_chain(300, 2)


def consensus_status(node):
    return node.ctx.registry.consensus().status().get(timeout=5)


def test_spoofed_nulls_at_200_per_second_do_not_stop_a_catch_up(make_node, chain):
    """The attack of issue 19: the node stayed at 20 blocks while it lasted; now it catches up."""
    port = free_udp_port()
    with ScriptedPeer(chain, seed=1, name="honest") as honest, \
            SpoofFlood(honest.address, ("127.0.0.1", port), rate=200) as flood:
        node = make_node(port=port, **QUIET)
        assert node.ctx.registry.chain().apply_segment(0, chain[:20]).get(timeout=10)
        introduce_and_run_consensus(node, [honest])
        wait_for(lambda: chain_tip(node) == (300, chain[-1].hash), timeout=60)
        assert flood.sent > 0
        status = consensus_status(node)
        assert status["banned_peers"] == 0
        # Those that came with nothing in flight were dropped and counted, for operators too.
        # (those that came while no fetch ran are counted apart)
        wait_for(lambda: sum(metric(node, "node_datagrams_dropped_total", reason=reason)
                             for reason in ("unsolicited_block_reply", "block_reply_without_fetch")) > 0)
        assert status["ignored_replies"] > 0


def test_forged_blocks_racing_a_far_peer_do_not_get_it_blamed(make_node, chain):
    """The peer answers 20-40 ms late; forged copies of the heights being fetched (true hash,
    false contents, or a false hash) are sprayed from its address at 200/s, top down."""
    forged = [encode(GetBlockReply(dataclasses.replace(b, messages=("forged",)) if b.height % 2
                                   else dataclasses.replace(b, hash="00" + b.hash[2:]))) for b in chain]
    heights = itertools.cycle(range(299, 19, -1))
    port = free_udp_port()
    with ScriptedPeer(chain, seed=2, jitter=(0.02, 0.04), name="far-honest") as honest, \
            SpoofFlood(honest.address, ("127.0.0.1", port), rate=200, make=lambda i: forged[next(heights)]) as flood:
        node = make_node(port=port, **QUIET)
        assert node.ctx.registry.chain().apply_segment(0, chain[:20]).get(timeout=10)
        introduce_and_run_consensus(node, [honest])
        wait_for(lambda: chain_tip(node) == (300, chain[-1].hash), timeout=60)
        assert flood.sent > 0
        status = consensus_status(node)
        assert status["banned_peers"] == 0
        assert status["rejected_replies"] + status["ignored_replies"] > 0
