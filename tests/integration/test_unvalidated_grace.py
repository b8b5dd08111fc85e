"""A peer that never validates still syncs from us; the allowance that lets it is bounded.

Some peers ask each GET_BLOCK from a fresh socket (a fresh source port), wait a few
tens of milliseconds and close it, and listen nowhere while they sync: the STATS
probe that would validate their address never reaches anything. Under the plain 3x
rule a 30-byte GET_BLOCK earns 90 bytes, less than any block, so nearly every reply
was dropped. Now an unvalidated IP gets up to 512 KB beyond 3x per 10 minutes (and all
of them together 1 MB a minute): enough for a few hundred blocks, and all a forged
source can aim at a victim besides 3x (tests/net/test_ratelimit.py measures that).
"""
from __future__ import annotations

from sim.chains import make_chain
from sim.reflect import never_validating_fetch
from tests.helpers import metric


def test_a_requester_that_never_validates_gets_300_blocks_without_a_drop(make_node):
    node = make_node(probe_interval=0)
    chain = make_chain(300, 2)
    assert node.ctx.registry.proxy("ChainKeeper").apply_segment(0, chain).get(timeout=10)
    result = never_validating_fetch(("127.0.0.1", node.config.port), range(300), host="127.0.0.4", timeout=0.02, attempts=200)
    assert result.gave_up == []
    assert [result.blocks[h]["hash"] for h in range(300)] == [b.hash for b in chain]
    # Every request was answered (a reply that came after its 20 ms is lost to a closed
    # socket, not refused): none dropped by the amplification rule, none probed for.
    assert metric(node, "node_datagrams_dropped_total", reason="amplification_limit") == 0
    assert metric(node, "node_datagrams_sent_total", type="STATS") == 0
    details = node.ctx.registry.proxy("NetworkIO").health_details().get(timeout=5)
    assert details["validated_addresses"] == 0 and details["unvalidated_bytes_beyond_3x"] > 0
