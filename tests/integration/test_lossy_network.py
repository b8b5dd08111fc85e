"""Gossip and sync converge through a proxy that drops, duplicates, delays and reorders."""
from __future__ import annotations


from sim.chains import make_chain
from sim.lossy_proxy import Impairment, LossyProxy
from tests.helpers import UdpClient, free_udp_port, peer_ports, wait_for

BAD = Impairment(drop=0.25, duplicate=0.1, delay=(0.0, 0.02))
FAST = dict(gossip_interval=0.3, peer_timeout=5.0, consensus_interval=2.0)


def proxied_node(make_node, seed, **overrides):
    """A node behind its own lossy proxy, advertising the proxy's port."""
    port = free_udp_port()
    proxy = LossyProxy(("127.0.0.1", port), BAD, seed=seed).start()
    node = make_node(port=port, advertise_port=proxy.address[1], **FAST, **overrides)
    return node, proxy


def test_proxy_impairs_traffic_both_ways():
    target = UdpClient()
    client = UdpClient()
    with LossyProxy(target.address, Impairment(drop=0.5, duplicate=0.2), seed=3) as proxy:
        for i in range(400):
            client.send(proxy.address[1], {"type": "STATS", "n": i})
        received = []
        while (msg := target.recv(timeout=0.3)) is not None:
            received.append(msg["n"])
    assert 100 < len(received) < 350
    assert len(received) > len(set(received))  # some duplicated
    assert proxy.stats["dropped"] > 100
    target.close()
    client.close()


def test_gossip_and_sync_converge_through_a_lossy_network(make_node):
    chain = make_chain(400, 2)
    proxies = []
    try:
        a, pa = proxied_node(make_node, 1)
        proxies.append(pa)
        assert a.ctx.registry.proxy("ChainKeeper").apply_segment(0, chain).get(timeout=10)
        b, pb = proxied_node(make_node, 2, peers=(pa.address,))
        proxies.append(pb)
        c, pc = proxied_node(make_node, 3, peers=(pa.address,))
        proxies.append(pc)
        # Membership: everyone learns everyone (by their proxy addresses).
        wait_for(lambda: peer_ports(a) >= {pb.address[1], pc.address[1]}, timeout=20)
        wait_for(lambda: peer_ports(b) >= {pa.address[1], pc.address[1]}, timeout=20)
        wait_for(lambda: peer_ports(c) >= {pa.address[1], pb.address[1]}, timeout=20)
        # Sync: both newcomers end on A's chain.
        for node in (b, c):
            keeper = node.ctx.registry.proxy("ChainKeeper")
            wait_for(lambda: keeper.tip().get(timeout=5) == (400, chain[-1].hash), timeout=30)
        assert all(p.stats["dropped"] > 0 for p in proxies)
    finally:
        for p in proxies:
            p.stop()
