"""Fault injection: every actor crashed again and again comes back; nothing is lost.

Through the supervisor directly (in-process) and through POST /admin/crash/{actor}
on a real node process, as a chaos drill would.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.chains import make_chain
from tests.helpers import UdpClient, free_tcp_port, free_udp_port, wait_for, wire_block
from tests.ops.ops_helpers import http, wait_http_ready

ROOT = Path(__file__).resolve().parents[2]
ACTORS = ["ChainKeeper", "NetworkIO", "GossipManager", "ConsensusRunner"]


def entry(health, name):
    return next(a for a in health["actors"] if a["name"] == name)


@pytest.mark.parametrize("name", ACTORS)
def test_repeated_crashes_lose_nothing(make_node, client, name):
    node = make_node()
    chain = make_chain(20, 2)
    for block in chain[:10]:
        client.send(node.config.port, wire_block(block))
    wait_for(lambda: (client.ask(node.config.port, {"type": "STATS"}, timeout=0.3) or {}).get("height") == 10)
    client.send(node.config.port, {"type": "NEW_WORD", "word": "keepme"})
    wait_for(lambda: node.ctx.registry.proxy("ChainKeeper").pending_words().get(timeout=5) == ["keepme"])
    for i in range(5):
        node.ctx.registry.proxy(name).crash.defer(f"drill {i}")
        wait_for(lambda: entry(node.health(), name)["restarts"] == i + 1 and node.health()["status"] == "ok", timeout=10)
        stats = client.ask(node.config.port, {"type": "STATS"}, timeout=1.0)
        assert stats is not None and stats["height"] >= 10  # never shortened, always served
    # Still fully working: it takes new blocks and kept the queued word.
    for block in chain[10:]:
        client.send(node.config.port, wire_block(block))
    wait_for(lambda: (client.ask(node.config.port, {"type": "STATS"}, timeout=0.3) or {}).get("height") == 20)
    assert node.ctx.registry.proxy("ChainKeeper").pending_words().get(timeout=5) == ["keepme"]


def _start_ready(tmp_path: Path, client: UdpClient) -> tuple[subprocess.Popen, int, int]:
    """A node process with fault injection, serving UDP and its ops HTTP: (process, udp port, http port)."""
    port, http_port = free_udp_port(), free_tcp_port()
    proc = subprocess.Popen(
        [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--name", "chaos", "--difficulty", "2",
         "--miners", "0", "--data-dir", str(tmp_path / "d"), "--http-port", str(http_port), "--enable-fault-injection"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: client.ask(port, {"type": "STATS"}, timeout=0.3), timeout=15)
        wait_http_ready(http_port)
    except BaseException:
        proc.kill()
        client.close()
        raise
    return proc, port, http_port


def test_crash_endpoint_drill_on_a_node_process(tmp_path):
    client = UdpClient()
    proc, port, http_port = _start_ready(tmp_path, client)
    try:
        chain = make_chain(15, 2)
        for block in chain:
            client.send(port, wire_block(block))
        wait_for(lambda: (client.ask(port, {"type": "STATS"}, timeout=0.3) or {}).get("height") == 15)
        for name in ACTORS:
            before = entry(http(http_port, "/health").json(), name)
            assert http(http_port, f"/admin/crash/{name}", method="POST").status == 202
            wait_for(lambda: entry(http(http_port, "/health").json(), name)["restarts"] == before["restarts"] + 1, timeout=10)
            wait_for(lambda: http(http_port, "/health").json()["status"] == "ok", timeout=10)
            after = entry(http(http_port, "/health").json(), name)
            assert after["urn"] != before["urn"] and after["alive"]
            stats = wait_for(lambda: client.ask(port, {"type": "STATS"}, timeout=0.5), timeout=5)
            assert stats == {"type": "STATS_REPLY", "height": 15, "hash": chain[-1].hash}
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_passing_the_restart_intensity_limit_stops_the_node_non_zero(tmp_path):
    client = UdpClient()
    proc, port, http_port = _start_ready(tmp_path, client)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                http(http_port, "/admin/crash/GossipManager", method="POST", timeout=1.0)
            except OSError:
                pass  # the HTTP server is going away with the node
            time.sleep(0.05)
        _, err = proc.communicate(timeout=20)
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "restart intensity exceeded" in err
    assert "CRITICAL" in err
