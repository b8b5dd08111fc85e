"""The ops endpoints with real MinerActors (worker processes hashing at a difficulty never met)."""
from __future__ import annotations

import importlib.util

import psutil
import pytest

from tests.helpers import free_tcp_port, wait_for
from tests.ops.ops_helpers import actor_entry, http

pytestmark = pytest.mark.skipif(importlib.util.find_spec("actors.miner") is None,
                                reason="mining (actors.miner) not present")

UNREACHABLE_DIFFICULTY = 40  # the workers hash for the whole test without finding a block


def hashing(port: int, name: str) -> dict | None:
    entry = actor_entry(http(port, "/health").json(), name)
    return entry if entry["alive"] and entry["pid"] and (entry["hashrate"] or 0) > 0 else None


def test_health_and_metrics_show_each_miner_worker(make_node):
    node = make_node(http_port=free_tcp_port(), miners=2, difficulty=UNREACHABLE_DIFFICULTY)
    port = node.config.http_port
    miners = [wait_for(lambda i=i: hashing(port, f"MinerActor-{i}"), timeout=10) for i in range(2)]
    pids = {m["pid"] for m in miners}
    assert len(pids) == 2
    for pid in pids:
        assert psutil.Process(pid).ppid() == psutil.Process().pid  # our own worker processes
    for miner in miners:
        assert miner["rss_bytes"] > 0 and miner["cpu_percent"] is not None
        assert miner["backend"] == "process" and "ray_node" not in miner
    metrics = http(port, "/metrics").text
    for index in ("0", "1"):
        line = next(l for l in metrics.splitlines() if l.startswith(f'node_miner_hashrate_hashes_per_second{{backend="process",miner="{index}"}}'))
        assert float(line.split()[-1]) > 0
        assert f'node_actor_restarts_total{{actor="MinerActor-{index}"}} 0.0' in metrics
    assert "MinerActor-1" in http(port, "/").text


def test_crash_of_a_real_miner_kills_its_worker_and_it_comes_back(make_node):
    node = make_node(http_port=free_tcp_port(), miners=1, difficulty=UNREACHABLE_DIFFICULTY, enable_fault_injection=True)
    port = node.config.http_port
    before = wait_for(lambda: hashing(port, "MinerActor-0"), timeout=10)
    result = http(port, "/admin/crash/MinerActor-0", method="POST")
    assert result.status == 202
    assert result.json()["action"] == "worker process killed (SIGKILL)"
    assert result.json()["result"] == before["pid"]
    after = wait_for(lambda: (e := hashing(port, "MinerActor-0")) and e["restarts"] == 1 and e, timeout=10)
    assert after["pid"] != before["pid"] and after["urn"] != before["urn"]
    assert not psutil.pid_exists(before["pid"]) or psutil.Process(before["pid"]).status() == psutil.STATUS_ZOMBIE
