"""Token buckets, and a live node that refuses to become a flood cannon."""
from __future__ import annotations

import time

import json
import socket
from collections import Counter

from net.ratelimit import AntiAmplification, RoundGate, TokenBuckets
from sim.chains import make_chain
from tests.helpers import UdpClient, metric, wait_for


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


def _bind(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((host, 0))
    return sock


def _drain_bytes(sock: socket.socket, quiet: float = 0.5) -> tuple[int, Counter]:
    total, kinds = 0, Counter()
    sock.settimeout(quiet)
    while True:
        try:
            data, _ = sock.recvfrom(65536)
        except OSError:
            return total, kinds
        total += len(data)
        kinds[json.loads(data)["type"]] += 1


def test_anti_amplification_rule():
    rule = AntiAmplification(factor=3)
    rule.credit("10.0.0.1", 17)
    assert not rule.spend("10.0.0.1", 107, 0.0)  # a STATS_REPLY is more than 3x a bare STATS
    rule.credit("10.0.0.1", 17)
    assert rule.spend("10.0.0.1", 100, 0.0) and not rule.spend("10.0.0.1", 3, 0.0)
    assert not rule.answered("10.0.0.1", 0.0)  # an answer we did not ask for validates nothing
    rule.probe_sent("10.0.0.1", 1.0)
    assert not rule.answered("10.0.0.1", 20.0)  # too late
    rule.probe_sent("10.0.0.1", 30.0)
    assert rule.answered("10.0.0.1", 30.5) and rule.spend("10.0.0.1", 10**6, 31.0)
    assert not rule.is_validated("10.0.0.1", 30.5 + 601)  # validation expires


KB = 1024


def test_an_unvalidated_ip_gets_its_allowance_then_the_3x_rule():
    rule = AntiAmplification(factor=3, grace_bytes=512 * KB, grace_period=600, total_grace_bytes=1024 * KB, total_grace_period=60)
    rule.credit("10.0.0.1", 30)
    assert rule.available("10.0.0.1", 0.0) == 90 + 512 * KB
    assert rule.spend("10.0.0.1", 500, 0.0)  # 90 bytes of 3x credit, 410 of allowance
    assert rule.grace_spent == 410
    sent = 500
    while rule.spend("10.0.0.1", 1000, 0.0):
        sent += 1000
    assert sent <= 90 + 512 * KB and sent > 512 * KB - 1000
    while rule.spend("10.0.0.1", 1, 0.0):
        sent += 1
    assert sent == 90 + 512 * KB
    rule.credit("10.0.0.1", 30)
    assert rule.spend("10.0.0.1", 90, 0.0) and not rule.spend("10.0.0.1", 1, 0.0)  # then only 3x what it sends
    assert not rule.spend("10.0.0.1", 1, 599.0)  # 512 KB per 10-minute window, counted from its first byte ...
    assert rule.spend("10.0.0.1", 512 * KB, 600.0)  # ... then a new window
    assert not rule.spend("10.0.0.1", 1, 600.0)


def test_all_unvalidated_ips_together_get_at_most_1_mb_a_minute_beyond_3x():
    rule = AntiAmplification(factor=3, grace_bytes=512 * KB, grace_period=600, total_grace_bytes=1024 * KB, total_grace_period=60)
    sent = 0
    for i in range(10):
        while rule.spend(f"10.0.0.{i}", 1000, 0.0):
            sent += 1000
    assert 1024 * KB - 1000 < sent <= 1024 * KB
    assert rule.grace_spent == sent
    assert not rule.spend("10.0.1.1", 1000, 0.0)  # a new IP too: the shared allowance is spent ...
    assert not rule.spend("10.0.1.1", 1000, 59.0)  # ... for the rest of the minute
    again = 0
    while rule.spend(f"10.0.2.{again // 100_000}", 1000, 60.0):
        again += 1000
    assert 1024 * KB - 1000 < again <= 1024 * KB


def test_a_validated_ip_spends_no_allowance_and_zero_allowance_is_the_plain_rule():
    rule = AntiAmplification(factor=3, grace_bytes=512 * KB, total_grace_bytes=1024 * KB)
    rule.probe_sent("10.0.0.1", 0.0)
    assert rule.answered("10.0.0.1", 0.1) and rule.spend("10.0.0.1", 10**7, 0.2)
    assert rule.grace_spent == 0
    plain = AntiAmplification(factor=3)
    plain.credit("10.0.0.2", 10)
    assert plain.available("10.0.0.2", 0.0) == 30 and not plain.spend("10.0.0.2", 31, 0.0)


def test_a_full_allowance_table_never_hands_a_victim_a_fresh_allowance():
    """Forgetting an IP that is still spending would give it a new 512 KB: a full table
    drops only entries that have refilled, and otherwise gives a new IP none."""
    rule = AntiAmplification(factor=3, grace_bytes=1000, grace_period=100, total_grace_bytes=10**9, max_grace_ips=4)
    assert rule.spend("victim", 1000, 0.0) and not rule.spend("victim", 1, 0.0)
    for i in range(3):
        assert rule.spend(f"other{i}", 10, 0.0)
    assert not rule.spend("newcomer", 10, 1.0)  # the table is full of IPs still refilling
    assert not rule.spend("victim", 500, 1.0)  # and the victim's entry was not forgotten
    assert rule.spend("newcomer", 10, 101.0)  # once the oldest has refilled, it makes room


def test_round_gate_releases_one_per_gap_and_coalesces_the_rest():
    gate = RoundGate(gap=10.0)
    assert gate.ask(0.0) and gate.due() is None
    assert not any(gate.ask(t / 100) for t in range(1, 900))  # 899 more within the gap: one waits
    assert gate.waiting and gate.due() == 10.0 and gate.coalesced == 898
    assert not gate.poll(9.9) and gate.poll(10.0) and not gate.poll(10.0)
    assert not gate.ask(15.0) and gate.due() == 20.0  # the next no sooner than a gap after the last
    assert gate.poll(20.5) and gate.due() is None and gate.ask(31.0)
    released = sum(gate.ask(40 + t / 1000) or gate.poll(40 + t / 1000) for t in range(100_000))  # 1,000/s for 100 s
    assert released <= 11


def test_a_probe_is_wanted_once_per_window_and_never_for_a_validated_ip():
    rule = AntiAmplification(factor=3, window=10.0)
    assert rule.wants_probe("10.0.0.1", 0.0)
    rule.probe_sent("10.0.0.1", 0.0)
    assert not rule.wants_probe("10.0.0.1", 5.0) and rule.wants_probe("10.0.0.1", 10.5)
    rule.probe_sent("10.0.0.2", 20.0)
    assert rule.answered("10.0.0.2", 20.1) and not rule.wants_probe("10.0.0.2", 40.0)


def test_a_stranger_asking_first_is_probed_and_answered_once_it_replies(make_node, monkeypatch):
    """A peer that sends a bare STATS before we ever asked it anything, past its
    unvalidated allowance (turned off here): the reply (3x its 17 bytes can't carry it)
    is replaced by a STATS probe; once it answers that, it is validated and its next
    bare STATS is answered whole."""
    monkeypatch.setattr("actors.network_io.GRACE_PER_IP_BYTES", 0)
    node = make_node(probe_interval=0)  # the node's own probes come from 127.0.0.1 too: no credit from them
    assert node.ctx.registry.proxy("ChainKeeper").apply_segment(0, make_chain(5, 2)).get(timeout=5)
    stranger = UdpClient()
    try:
        stranger.send(node.config.port, {"type": "STATS"})
        first = stranger.recv(timeout=2)
        assert first == {"type": "STATS"}  # not a STATS_REPLY: a probe, no bigger than what we sent
        stranger.send(node.config.port, {"type": "STATS_REPLY", "height": 0, "hash": None})
        wait_for(lambda: node.ctx.registry.proxy("NetworkIO").validated_addresses().get(timeout=2) >= 1, timeout=5)
        stranger.send(node.config.port, {"type": "STATS"})
        reply = stranger.recv(timeout=2, expect="STATS_REPLY")
        assert reply is not None and reply["height"] == 5
    finally:
        stranger.close()


def test_forged_stats_and_get_block_give_a_victim_at_most_3x_plus_its_allowance(make_node):
    """A victim (127.0.0.2) that never spoke to the node: what it receives is at most 3x
    what was sent in its name plus the 512 KB allowance of an unvalidated IP; past that
    allowance requests are dropped (and it gets one probe per validation window)."""
    node = make_node()
    chain = make_chain(20, 2)
    assert node.ctx.registry.proxy("ChainKeeper").apply_segment(0, chain).get(timeout=5)
    victim = _bind("127.0.0.2")  # the storm carries the victim's address as its source
    try:
        sent = 0
        for i in range(12_000):
            data = b'{"type":"STATS"}' if i % 2 else json.dumps({"type": "GET_BLOCK", "height": i % 20}).encode()
            victim.sendto(data, ("127.0.0.1", node.config.port))
            sent += len(data)
            if i % 500 == 499:  # paced, so the per-IP byte rate bucket is not what stops it
                time.sleep(0.05)
        received, kinds = _drain_bytes(victim)
        assert kinds["STATS_REPLY"] > 0 and kinds["GET_BLOCK_REPLY"] > 0
        assert received > 3 * sent  # the allowance was used ...
        assert received <= 3 * sent + 512 * 1024, (received, sent)  # ... and never more than it, probes included
        assert kinds["STATS"] == 1  # one probe in the validation window, however many requests
        assert metric(node, "node_datagrams_dropped_total", reason="amplification_limit") > 0
    finally:
        victim.close()


def test_gossip_replies_are_limited_per_claimed_originator(make_node):
    node = make_node(gossip_reply_rate_bytes=90, gossip_reply_burst_bytes=900)
    victim, attacker = UdpClient(), UdpClient()
    try:
        for i in range(500):
            attacker.send(node.config.port, {"type": "GOSSIP", "host": "127.0.0.1", "port": victim.address[1], "id": f"x{i}", "name": "v"})
        replies = [m for m in _drain(victim) if json.loads(m)["type"] == "GOSSIP_REPLY"]
        assert 1 <= len(replies) <= 12 + 2
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
    assert metric(server, "node_datagrams_dropped_total", reason="rate_limited") == 0


def test_a_peer_that_introduced_itself_fetches_300_blocks_in_full_on_its_validated_budget(make_node):
    """GOSSIP in, answer the node's greeting (a STATS), then 300 GET_BLOCKs (unpadded): every one is answered.

    The replies are well over 3x the requests, so the 3x rule alone would refuse them; and the
    unvalidated allowance stays untouched, so it is the validation that lets them through.
    """
    node = make_node(probe_interval=0)  # the node's own probes would spend allowance from 127.0.0.1
    chain = make_chain(300, 2)
    assert node.ctx.registry.proxy("ChainKeeper").apply_segment(0, chain).get(timeout=10)
    network = node.ctx.registry.proxy("NetworkIO")
    peer = _bind("127.0.0.3")
    try:
        host, port = peer.getsockname()
        intro = json.dumps({"type": "GOSSIP", "host": host, "port": port, "id": "intro", "name": "p"}).encode()
        answer = json.dumps({"type": "STATS_REPLY", "height": 0, "hash": None}).encode()
        sent = len(intro) + len(answer)  # every byte this IP sent: what the 3x rule would credit it
        peer.sendto(intro, ("127.0.0.1", node.config.port))
        peer.settimeout(5)
        while True:  # the node greets the new address with a STATS; a node answers it
            message = json.loads(peer.recvfrom(65536)[0])
            if message["type"] == "STATS":
                peer.sendto(answer, ("127.0.0.1", node.config.port))
                break
        wait_for(lambda: network.validated_addresses().get(timeout=2) >= 1, timeout=5)
        allowance_before = network.health_details().get(timeout=2)["unvalidated_bytes_beyond_3x"]
        got: set[int] = set()
        received = 0
        peer.settimeout(10)  # generous: a reply is either sent at once or dropped, never delayed
        for window in range(0, 300, 50):
            for height in range(window, window + 50):
                request = json.dumps({"type": "GET_BLOCK", "height": height}).encode()
                peer.sendto(request, ("127.0.0.1", node.config.port))
                sent += len(request)
            while len(got) < window + 50:
                try:
                    data = peer.recvfrom(65536)[0]
                except socket.timeout:
                    break
                message = json.loads(data)
                if message["type"] == "GET_BLOCK_REPLY" and message["height"] is not None:
                    got.add(message["height"])
                    received += len(data)
        assert got == set(range(300))
        assert received > 3 * sent, (received, sent)  # more than the 3x rule would have let through
        assert network.health_details().get(timeout=2)["unvalidated_bytes_beyond_3x"] == allowance_before
        assert metric(node, "node_datagrams_dropped_total", reason="amplification_limit") == 0
        assert metric(node, "node_datagrams_dropped_total", reason="rate_limited") == 0
    finally:
        peer.close()
