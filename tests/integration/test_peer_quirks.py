"""Honest peers that speak the protocol a little differently (issue 19): the node still syncs from them.

The peer here answers the way two real implementations do: a hyphenated
`GOSSIP-REPLY` (the course rubric's spelling), every height as `str(height)`, and
`json.dumps` defaults (", " separators, \\uXXXX escapes).
"""
from __future__ import annotations

import json

import pytest

from chain.block import Block
from messages.wire import encode
from net.address import Address
from sim.chains import make_chain
from sim.peer import ScriptedPeer
from tests.helpers import introduce_and_run_consensus, wait_for

QUIET = dict(gossip_interval=30.0, peer_timeout=120.0, consensus_interval=3600.0)


class QuirkyPeer(ScriptedPeer):
    quirks: frozenset[str] = frozenset()

    def send(self, message: object, addr: Address) -> None:
        body = json.loads(encode(message))  # type: ignore[arg-type]
        if body["type"] == "GOSSIP_REPLY" and "hyphen" in self.quirks:
            body["type"] = "GOSSIP-REPLY"
        if isinstance(body.get("height"), int) and "str_height" in self.quirks:
            body["height"] = str(body["height"])
        self.sock.sendto(json.dumps(body).encode(), addr)


@pytest.mark.parametrize("quirks", [{"hyphen"}, {"str_height"}, {"hyphen", "str_height"}], ids=lambda q: "+".join(sorted(q)))
def test_a_peer_with_gossip_reply_hyphenated_or_string_heights_is_tracked_and_synced_from(make_node, quirks):
    chain: list[Block] = make_chain(60, 2)
    node = make_node(**QUIET)
    peer = QuirkyPeer(chain, seed=19, name="rubric")
    peer.quirks = frozenset(quirks)
    with peer:
        # Tracked only once its GOSSIP-REPLY is read (the tried table), then asked STATS ("height": "60").
        introduce_and_run_consensus(node, [peer])
        wait_for(lambda: node.ctx.registry.chain().tip().get(timeout=5) == (60, chain[-1].hash), timeout=60)
        assert peer.received["Stats"] >= 1 and len(peer.get_block_heights) >= 59
