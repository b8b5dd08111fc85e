"""`python run_node.py status` as a user runs it, against live, degraded, down and absent nodes."""
from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

from supervisor import SupervisorPolicy
from tests.helpers import free_tcp_port, wait_for
from tests.ops.ops_helpers import http as http_get

ROOT = Path(__file__).resolve().parents[2]
ACTORS = ["ChainKeeper", "NetworkIO", "GossipManager", "ConsensusRunner"]


def status(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_node.py", "status", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def test_status_of_a_live_node_prints_every_actor_and_exits_0(make_node):
    node = make_node(http_port=free_tcp_port())
    result = status("--http-port", str(node.config.http_port))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "status OK" in lines[0] and node.config.name in lines[0]
    assert any(line.startswith("chain: 0 blocks  (empty chain)") for line in lines)
    assert any(line.split()[:2] == ["ACTOR", "ALIVE"] for line in lines)
    for actor in ACTORS:
        row = next(line for line in lines if line.startswith(actor + " "))
        assert row.split()[1:3] == ["yes", "0"]  # alive, restarts
    assert "peers: none" in lines
    assert result.stderr == ""


def test_status_json_prints_the_health_document(make_node):
    node = make_node(http_port=free_tcp_port())
    result = status("--http-port", str(node.config.http_port), "--json")
    assert result.returncode == 0
    assert [a["name"] for a in json.loads(result.stdout)["actors"]] == ACTORS


def test_status_of_a_dead_port_is_one_line_and_non_zero():
    port = free_tcp_port()
    result = status("--http-port", str(port), "--timeout", "2")
    assert result.returncode == 4
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"127.0.0.1:{port}" in lines[0] and "unreachable" in lines[0]


def test_status_of_a_degraded_node_shows_the_table_and_exits_1(make_node):
    slow_restart = SupervisorPolicy(backoff_base=20.0, backoff_max=20.0, watch_interval=0.05, start_timeout=2.0)
    node = make_node(policy=slow_restart, http_port=free_tcp_port())
    node.ctx.registry.proxy("GossipManager").crash.defer("test")
    wait_for(lambda: http_get(node.config.http_port, "/health").json()["status"] == "degraded", timeout=5)
    result = status("--http-port", str(node.config.http_port))
    assert result.returncode == 1
    row = next(line for line in result.stdout.splitlines() if line.startswith("GossipManager "))
    assert row.split()[1] == "NO" and "RuntimeError" in row
    assert result.stderr.strip().splitlines() == ["degraded: restarting: GossipManager"]
    tree = result.stdout[result.stdout.index("supervision:"):].split("\n\n")[0].splitlines()
    assert tree[1].startswith("node  [one_for_one, ")
    assert any(line.startswith("├── GossipManager  restarting  restarts 0") for line in tree)
    assert tree[-2].startswith("└── sync  [one_for_one, ") and tree[-1].startswith("    └── ConsensusRunner  running")


def test_status_of_a_node_whose_supervisor_gave_up_exits_3(make_node):
    give_up_at_once = SupervisorPolicy(max_restarts=0, watch_interval=0.05, start_timeout=2.0)
    node = make_node(policy=give_up_at_once, http_port=free_tcp_port())
    node.ctx.registry.proxy("GossipManager").crash.defer("test")  # a core actor: its supervisor is the root
    wait_for(lambda: http_get(node.config.http_port, "/health").status == 503, timeout=5)
    result = status("--http-port", str(node.config.http_port))
    assert result.returncode == 3
    assert "status DOWN" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("down: restart intensity exceeded")


def test_status_of_something_that_is_not_a_node_exits_4():
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = status("--http-port", str(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 4
    assert len(result.stderr.strip().splitlines()) == 1


def test_status_shows_blocks_top_index_sync_percentage_and_total_hash_rate():
    from ops.status_cmd import render

    doc = {
        "status": "ok", "node": {"name": "n", "udp": "127.0.0.1:1", "difficulty": 8}, "process": {},
        "chain": {"height": 100, "hash": "ab" * 32},
        "consensus": {"running": True, "stage": "fetch", "target_height": 1100, "fetched": 250},
        "actors": [{"name": "MinerActor-0", "alive": True, "restarts": 0, "hashrate": 6e6},
                   {"name": "MinerGateway", "alive": True, "restarts": 0, "hashrate": 2e6, "clients": 1}],
        "peers": [],
    }
    lines = render(doc).splitlines()
    assert lines[0].endswith("status OK, SYNCING 25.0%")
    assert f"chain: 100 blocks  top #99 {'ab' * 32}" in lines
    assert "sync: fetch to 1100 blocks: 25.0% (250/1000 blocks)" in lines
    mining = next(line for line in lines if line.startswith("mining:"))
    assert mining.startswith("mining: 8.00 MH/s total (local 6.00 MH/s, external 2.00 MH/s)")
    assert "a block every ~8m 57s" in mining


def test_status_shows_version_uptime_sync_state_and_each_peers_claimed_height(make_node):
    alice = make_node(name="alice")
    bob = make_node(name="bob", http_port=free_tcp_port(), peers=(("127.0.0.1", alice.config.port),))
    # bob greets alice, his well-known peer, at once (a GOSSIP; his join round asks her STATS): wait until he holds her claim.
    def claim_known() -> bool:
        best = http_get(bob.config.http_port, "/api/overview").json()["sync"].get("best_claim") or {}
        return best.get("address") == f"127.0.0.1:{alice.config.port}"

    wait_for(claim_known, timeout=20)
    result = status("--http-port", str(bob.config.http_port))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    from version import __version__
    assert f"version {__version__}" in lines[0]
    assert "uptime " in lines[1] and "uptime -" not in lines[1]
    assert "sync: in sync (longest claim: 0 blocks by alice" in result.stdout
    header = next(line for line in lines if line.startswith("PEER "))
    assert header.split() == ["PEER", "ADDRESS", "TABLE", "CLAIMS", "CLAIMED", "LAST", "SEEN"]
    row = next(line for line in lines if line.startswith("alice "))
    assert row.split()[1] == f"127.0.0.1:{alice.config.port}" and row.split()[3:5] == ["0", "blocks"]
