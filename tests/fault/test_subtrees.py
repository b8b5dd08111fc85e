"""A crash loop in an expendable subtree (sync, miners) degrades the node, never ends it, and heals.

Real nodes with small budgets: the subtree gives up after a few crashes, the node
reports `degraded` with the reason, the core (ChainKeeper...) is untouched and keeps
serving, and after the root's cool-down the subtree is back and works again.
"""
from __future__ import annotations

import time

from sim.chains import make_chain
from supervisor import SupervisorPolicy
from tests.conftest import FAST_POLICY
from tests.helpers import health, metric, wait_for

SMALL_BUDGET = SupervisorPolicy(max_restarts=2, period=30.0, backoff_base=0.02, backoff_max=0.1, watch_interval=0.05,
                                start_timeout=5.0)
ROOT = SupervisorPolicy(max_restarts=FAST_POLICY.max_restarts, period=FAST_POLICY.period, backoff_base=0.02,
                        backoff_max=0.5, watch_interval=0.05, start_timeout=5.0, cooldown_base=2.0, cooldown_max=4.0)
FAST = dict(gossip_interval=0.3, peer_timeout=5.0, consensus_interval=3600.0)


def subtree(node, name):
    return next(c for c in health(node)["supervision"]["children"] if c["name"] == name)


def entry(node, name):
    return next(a for a in health(node)["actors"] if a["name"] == name)


def crash_until_given_up(node, subtree_name, crash):
    deadline = time.monotonic() + 30
    while subtree(node, subtree_name)["state"] != "cooling_down":
        assert time.monotonic() < deadline, "the subtree never gave up"
        crash()
        time.sleep(0.05)


def test_sync_crash_loop_degrades_the_node_then_sync_comes_back_and_syncs(make_node, client):
    longer = make_chain(40, 2)
    source = make_node(**FAST)
    assert source.ctx.registry.proxy("ChainKeeper").apply_segment(0, longer).get(timeout=10)
    node = make_node(policy=ROOT, sub_policy=SMALL_BUDGET, **FAST)
    keeper_urn = entry(node, "ChainKeeper")["urn"]

    def crash():
        proxy = node.ctx.registry.proxy("ConsensusRunner")
        if proxy is not None:
            try:
                proxy.crash.defer("crash loop")
            except Exception:  # noqa: BLE001 - it died meanwhile
                pass

    crash_until_given_up(node, "sync", crash)
    doc = health(node)
    assert doc["status"] == "degraded"
    assert "sync gave up" in doc["reason"] and "restart intensity exceeded" in doc["reason"]
    assert not entry(node, "ConsensusRunner")["alive"]
    assert metric(node, "node_supervisor_running", supervisor="sync") == 0
    assert metric(node, "node_supervisor_running", supervisor="node") == 1
    assert client.ask(node.config.port, {"type": "STATS"}, timeout=2) == {"type": "STATS_REPLY", "height": 0, "hash": None}
    # Meanwhile a peer with a longer chain shows up; nobody can sync it yet.
    client.send(node.config.port, {"type": "GOSSIP", "host": "127.0.0.1", "port": source.config.port, "id": "intro",
                                   "name": "source"})
    # The cool-down passes: sync is restarted by the root, by itself, and syncs.
    wait_for(lambda: health(node)["status"] == "ok", timeout=20)
    assert subtree(node, "sync")["restarts"] == 1
    assert metric(node, "node_supervisor_running", supervisor="sync") == 1
    assert metric(node, "node_supervisor_restarts_total", supervisor="sync") == 1
    wait_for(lambda: node.ctx.registry.proxy("ChainKeeper").tip().get(timeout=5) == (40, longer[-1].hash), timeout=20)
    assert entry(node, "ChainKeeper")["urn"] == keeper_urn and entry(node, "ChainKeeper")["restarts"] == 0
    assert not node.supervisor.stopped


def test_miner_crash_loop_degrades_the_node_then_mining_resumes(make_node, client):
    node = make_node(policy=ROOT, sub_policy=SMALL_BUDGET, miners=1, difficulty=40)  # never finds a block
    first_pid = wait_for(lambda: node.ctx.registry.proxy("MinerActor-0").health_details().get(timeout=5)["pid"], timeout=20)

    def crash():
        proxy = node.ctx.registry.proxy("MinerActor-0")
        if proxy is not None:
            try:
                proxy.kill_worker().get(timeout=5)
            except Exception:  # noqa: BLE001 - restarting meanwhile
                pass

    crash_until_given_up(node, "miners", crash)
    doc = health(node)
    assert doc["status"] == "degraded" and "miners gave up" in doc["reason"]
    assert entry(node, "ChainKeeper")["restarts"] == 0 and entry(node, "NetworkIO")["restarts"] == 0
    assert client.ask(node.config.port, {"type": "STATS"}, timeout=2) is not None
    wait_for(lambda: health(node)["status"] == "ok", timeout=30)

    def hashing():
        details = node.ctx.registry.proxy("MinerActor-0").health_details().get(timeout=5)
        return details["pid"] not in (None, first_pid) and details["hashes_total"] > 0

    wait_for(hashing, timeout=20)
    assert not node.supervisor.stopped
