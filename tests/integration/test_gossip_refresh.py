"""A peer that reuses one GOSSIP id for every keep-alive stays in our table.

Repeated ids were ignored whole (they are how gossip loops are cut), so such a peer,
once it stopped answering our own GOSSIPs, was never refreshed: it left the table at
the peer timeout and came back only when the id was forgotten. A repeated id that
comes straight from the host it names (same source IP) now refreshes that peer; it
is still neither forwarded nor answered again.
"""
from __future__ import annotations

import json
import socket
import time

from tests.helpers import peer_ports, wait_for

PEER_TIMEOUT = 1.5


def test_a_peer_reusing_one_gossip_id_is_kept_past_several_peer_timeouts(make_node):
    node = make_node(peer_timeout=PEER_TIMEOUT, probe_interval=0)
    target = ("127.0.0.1", node.config.port)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.5", 0))
        host, port = peer.getsockname()
        keepalive = json.dumps({"type": "GOSSIP", "host": host, "port": port, "id": "one-id-forever", "name": "reuser"}).encode()
        peer.sendto(keepalive, target)
        peer.settimeout(5)
        while json.loads(peer.recvfrom(65536)[0])["type"] != "STATS":
            pass  # the node greets the new address with a STATS: answered once, so the peer is tried
        peer.sendto(json.dumps({"type": "STATS_REPLY", "height": 0, "hash": None}).encode(), target)
        wait_for(lambda: port in peer_ports(node, "tried"), timeout=10)
        # From now on it only sends its keep-alive, always with the same id, and answers nothing.
        end = time.monotonic() + 3 * PEER_TIMEOUT
        while time.monotonic() < end:
            peer.sendto(keepalive, target)
            assert port in peer_ports(node, "tried"), "the peer left the table although it keeps gossiping"
            time.sleep(0.25)  # the peer's keep-alive period (load, not synchronisation)
    finally:
        peer.close()
    # Once it really goes quiet, it leaves at the timeout as any silent peer does.
    wait_for(lambda: port not in peer_ports(node), timeout=10 * PEER_TIMEOUT)
