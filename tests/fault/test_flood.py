"""A 20,000-datagram flood against a real node process (loopback only)."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import UdpClient, free_tcp_port, free_udp_port, wait_for
from tests.ops.ops_helpers import http, wait_http_ready

ROOT = Path(__file__).resolve().parents[2]


def flood_datagrams(count: int, target_port: int, rng: random.Random) -> list[bytes]:
    """Random bytes, GOSSIP from thousands of claimed (loopback) addresses, STATS and GET_BLOCK storms."""
    out = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            out.append(rng.randbytes(rng.randint(1, 1400)))
        elif kind == 1:
            host = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            out.append(json.dumps({"type": "GOSSIP", "host": host, "port": rng.randint(1024, 65535),
                                   "id": f"flood-{i}", "name": "flood"}).encode())
        elif kind == 2:
            out.append(b'{"type":"STATS"}')
        else:
            out.append(json.dumps({"type": "GET_BLOCK", "height": rng.randint(0, 10**6)}).encode())
    return out


def flood_counts(metrics_text: str) -> dict[str, float]:
    """From /metrics: malformed datagrams (any reason) and GOSSIP datagrams the node read."""
    counts = {"malformed": 0.0, "gossip": 0.0}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "node_malformed_datagrams_total":
                counts["malformed"] += sample.value
            elif sample.name == "node_datagrams_received_total" and sample.labels.get("type") == "GOSSIP":
                counts["gossip"] += sample.value
    return counts


def test_flood_leaves_node_responsive_small_and_bounded(tmp_path):
    port, http_port = free_udp_port(), free_tcp_port()
    proc = subprocess.Popen(
        [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--name", "flooded",
         "--difficulty", "2", "--miners", "0", "--data-dir", str(tmp_path / "d"), "--http-port", str(http_port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = UdpClient()
    attacker = UdpClient()
    try:
        wait_for(lambda: client.ask(port, {"type": "STATS"}, timeout=0.3), timeout=15)
        wait_http_ready(http_port)
        datagrams = flood_datagrams(20_000, port, random.Random(42))
        started = time.monotonic()
        for data in datagrams:
            try:
                attacker.sock.sendto(data, ("127.0.0.1", port))
            except OSError:
                pass
        flood_seconds = time.monotonic() - started
        asked = time.monotonic()
        # As a UDP client would: re-ask until answered (a datagram may be lost). The poll's
        # limit is generous: this proves the node still answers, not how fast (bench_floods.py).
        reply = wait_for(lambda: client.ask(port, {"type": "STATS"}, timeout=0.5), timeout=60)
        answer_seconds = time.monotonic() - asked
        assert reply["type"] == "STATS_REPLY", reply
        landed = flood_counts(http(http_port, "/metrics").text)
        assert landed["malformed"] > 0 and landed["gossip"] > 0, landed  # the flood reached the node and was read
        rss = psutil.Process(proc.pid).memory_info().rss
        assert rss < 300 * 1024 * 1024
        peers = http(http_port, "/peers").json()
        assert len(peers) <= 1024
        health = http(http_port, "/health").json()
        assert all(a["alive"] for a in health["actors"])
        assert proc.poll() is None
        print(f"flood: {len(datagrams)} datagrams in {flood_seconds:.2f}s; STATS answered in "
              f"{answer_seconds * 1000:.0f} ms (measured, not asserted); RSS {rss / 2**20:.0f} MiB; peers {len(peers)}")
    finally:
        client.close()
        attacker.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
