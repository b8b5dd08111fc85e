"""Token buckets, and a live node that refuses to become a flood cannon."""
from __future__ import annotations

import time

from net.ratelimit import TokenBuckets
from sim.chains import make_chain
from tests.helpers import UdpClient, wait_for


def test_bucket_allows_burst_then_rate():
    buckets = TokenBuckets(rate=100, burst=300)
    assert [buckets.allow("a", 100, 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.allow("b", 100, 0.0)  # buckets are per key
    assert not buckets.allow("a", 100, 0.5)
    assert buckets.allow("a", 100, 1.0)  # refilled at 100/s


def test_bucket_table_is_bounded():
    buckets = TokenBuckets(rate=1, burst=1, max_keys=100)
    for i in range(10_000):
        buckets.allow(("127.0.0.1", i), 1, 0.0)
    assert len(buckets) == 100


def _drain(sock_client: UdpClient, quiet: float = 0.5) -> list[bytes]:
    got = []
    sock_client.sock.settimeout(quiet)
    while True:
        try:
            data, _ = sock_client.sock.recvfrom(65536)
        except OSError:
            return got
        got.append(data)


def test_forged_get_block_storm_yields_at_most_the_bucket(make_node):
    rate, burst = 10_000, 20_000
    node = make_node(reply_rate_bytes=rate, reply_burst_bytes=burst)
    chain = make_chain(5, 2)
    assert node.ctx.registry.proxy("ChainKeeper").apply_segment(0, chain).get(timeout=5)
    victim = UdpClient()  # the storm carries the victim's address as its source
    try:
        start = time.monotonic()
        for i in range(3000):
            victim.send(node.config.port, {"type": "GET_BLOCK", "height": i % 5})
        elapsed = time.monotonic() - start
        replies = _drain(victim)
        allowed_requests = (burst + rate * (elapsed + 0.1)) / 400
        assert 0 < len(replies) <= allowed_requests + 1, (len(replies), allowed_requests)
        assert len(replies) < 300  # of 3000 requests
        dropped = node.ctx.metrics.dropped.labels(reason="rate_limited")._value.get()
        assert dropped >= 3000 - len(replies) - 50
    finally:
        victim.close()
    # Another address is not affected by the victim's empty bucket.
    other = UdpClient()
    try:
        assert other.ask(node.config.port, {"type": "STATS"})["height"] == 5
    finally:
        other.close()


def test_gossip_replies_are_limited_per_claimed_originator(make_node):
    node = make_node(gossip_reply_rate_bytes=90, gossip_reply_burst_bytes=900)
    victim, attacker = UdpClient(), UdpClient()
    try:
        for i in range(500):
            attacker.send(node.config.port, {"type": "GOSSIP", "host": "127.0.0.1", "port": victim.address[1], "id": f"x{i}", "name": "v"})
        replies = _drain(victim)
        assert 1 <= len(replies) <= 10 + 2
    finally:
        victim.close()
        attacker.close()


def test_real_peer_syncing_from_us_runs_at_full_speed(make_node):
    """Default budgets: a 3000-block sync from one of our nodes is not throttled."""
    chain = make_chain(3000, 2)
    server = make_node(gossip_interval=0.3)
    assert server.ctx.registry.proxy("ChainKeeper").apply_segment(0, chain).get(timeout=10)
    client_node = make_node(peers=(("127.0.0.1", server.config.port),))
    keeper = client_node.ctx.registry.proxy("ChainKeeper")
    wait_for(lambda: keeper.tip().get(timeout=5)[0] == 3000, timeout=20)
    assert server.ctx.metrics.dropped.labels(reason="rate_limited")._value.get() == 0
