"""What the supervisor and /health say is what really happens, driven through the fault endpoints:
busy is not hung, a hung state owner ends the node instead of being duplicated, a
hung expendable actor is replaced, a dead thread is seen, and the probes notice a
part that stopped working."""
from __future__ import annotations

import logging
import os
import threading

import pytest

from node import Node
from sim.chains import make_chain
from sim.peer import ScriptedPeer
from tests.conftest import FAST_POLICY, FAST_SUB_POLICY
from tests.helpers import free_tcp_port, node_config, wait_for
from tests.ops.ops_helpers import actor_entry, http

FAST = dict(gossip_interval=0.3, peer_timeout=5.0, consensus_interval=3600.0, probe_interval=0.25)


def served(make_served_node, **overrides):
    return make_served_node(http_port=free_tcp_port(), enable_fault_injection=True, **FAST, **overrides).node


def health(node) -> dict:
    return http(node.config.http_port, "/health").json()


def post(node, path, body=None):
    import json

    return http(node.config.http_port, path, method="POST", body=None if body is None else json.dumps(body).encode())


def tip(node):
    return node.ctx.registry.proxy("ChainKeeper").tip().get(timeout=10)


class MaxInstances:
    """Samples an actor's `instances` in /health on a thread until stopped: the most ever seen."""

    def __init__(self, node, actor: str) -> None:
        self.node, self.actor, self.most = node, actor, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from tests.helpers import health as facts_health

        while not self._stop.is_set():
            entry = actor_entry(facts_health(self.node), self.actor)
            self.most = max(self.most, entry["instances"])
            self._stop.wait(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.most


def test_queued_stalls_on_chain_keeper_are_busy_never_a_restart_and_the_sync_completes(make_served_node):
    chain = make_chain(600, 2)
    with ScriptedPeer(chain, seed=5) as peer:
        node = served(make_served_node)
        for _ in range(5):
            assert post(node, "/admin/stall/ChainKeeper", {"seconds": 0.4}).status == 202
        sampler = MaxInstances(node, "ChainKeeper")
        busy = wait_for(lambda: (e := actor_entry(health(node), "ChainKeeper"))["activity"] == "busy" and e)
        assert busy["busy_for"] is not None or busy["queue_depth"] > 0
        from tests.helpers import introduce_and_run_consensus

        introduce_and_run_consensus(node, [peer])
        wait_for(lambda: tip(node) == (600, chain[-1].hash), timeout=60)
        assert sampler.stop() == 1
    entry = actor_entry(health(node), "ChainKeeper")
    assert entry["restarts"] == 0 and entry["instances"] == 1


def test_a_killed_udp_reader_is_seen_restarted_and_stats_come_back(make_served_node, client):
    node = served(make_served_node)
    wait_for(lambda: health(node)["status"] == "ok")
    names = [t["name"] for t in actor_entry(health(node), "NetworkIO")["threads"]]
    assert "NetworkIO.reader" in names
    assert post(node, "/admin/kill-thread/NetworkIO.reader").status == 202
    entry = wait_for(lambda: (e := actor_entry(health(node), "NetworkIO"))["restarts"] == 1 and e)
    assert "NetworkIO.reader" in entry["last_error"]
    assert wait_for(lambda: client.ask(node.config.port, {"type": "STATS"}, timeout=0.5))["height"] == 0
    doc = wait_for(lambda: (d := health(node))["status"] == "ok" and d)
    udp = next(p for p in doc["probes"] if p["name"] == "udp")
    assert udp["ok"] and udp["last_success_age"] is not None


def test_an_unknown_thread_is_404(make_served_node):
    node = served(make_served_node)
    result = post(node, "/admin/kill-thread/NetworkIO.nothing")
    assert result.status == 404
    assert "NetworkIO.reader" in result.json()["threads"] and "node.prober" in result.json()["threads"]


def test_a_hung_chain_keeper_ends_the_node_with_one_critical_line_and_loses_no_block(tmp_path, caplog):
    config = node_config(tmp_path, message_budgets=(("ChainKeeper", 1.0),), **FAST)
    node = Node(config, FAST_POLICY, sync_policy=FAST_SUB_POLICY, miners_policy=FAST_SUB_POLICY).start()
    chain = make_chain(30, 2)
    try:
        assert node.ctx.registry.proxy("ChainKeeper").apply_segment(0, chain).get(timeout=10)
        caplog.set_level(logging.INFO)
        node.stall("ChainKeeper", 600)
        assert node.wait(timeout=60) == 1
    finally:
        node.stop()
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "ChainKeeper hung" in critical[0].getMessage()
    assert "'stall'" in critical[0].getMessage()
    assert any("stack of ChainKeeper's thread" in r.getMessage() for r in caplog.records)
    assert node.supervisor.children["ChainKeeper"].restarts == 0  # never a second writer
    again = Node(node_config(tmp_path, port=config.port, **FAST), FAST_POLICY).start()
    try:
        assert tip(again) == (30, chain[-1].hash)
    finally:
        again.stop()


def test_a_hung_consensus_runner_is_replaced_and_the_node_syncs_afterwards(make_served_node):
    chain = make_chain(120, 2)
    with ScriptedPeer(chain, seed=6) as peer:
        node = served(make_served_node, message_budgets=(("ConsensusRunner", 0.5),))
        old = actor_entry(health(node), "ConsensusRunner")["urn"]
        assert post(node, "/admin/stall/ConsensusRunner", {"seconds": 600}).status == 202
        entry = wait_for(lambda: (e := actor_entry(health(node), "ConsensusRunner"))["urn"] not in (None, old)
                         and e["alive"] and e)
        assert "hung" in entry["last_error"] and entry["instances"] == 1
        from tests.helpers import introduce_and_run_consensus

        introduce_and_run_consensus(node, [peer])
        wait_for(lambda: tip(node) == (120, chain[-1].hash), timeout=30)


def test_an_unreadable_store_makes_the_node_down_naming_chain_keeper(make_served_node):
    node = served(make_served_node)
    wait_for(lambda: health(node)["status"] == "ok")
    db = node.config.data_dir / "chain.sqlite3"
    moved = db.with_name("moved-away.sqlite3")
    os.rename(db, moved)  # ChainKeeper keeps its open file; the store on disk is gone
    try:
        doc = wait_for(lambda: (d := health(node))["status"] == "down" and d, timeout=20)
        assert "ChainKeeper: store probe failing" in doc["reason"]
    finally:
        os.rename(moved, db)
    wait_for(lambda: health(node)["status"] == "ok", timeout=20)


@pytest.mark.parametrize("seconds", [0, -1, "x", 10_000])
def test_a_stall_needs_a_sensible_duration(make_served_node, seconds):
    node = served(make_served_node)
    assert post(node, "/admin/stall/ChainKeeper", {"seconds": seconds}).status == 400


def test_a_killed_dashboard_sampler_is_restarted_counted_and_shown(make_served_node):
    node = served(make_served_node)
    assert post(node, "/admin/kill-thread/ops.history").status == 202
    kept = wait_for(lambda: next((t for t in health(node)["threads"] if t["name"] == "ops.history"
                                  and t["restarts"] == 1 and t["alive"]), None), timeout=20)
    assert "InjectedFault" in kept["error"]


def test_stats_unanswered_while_chain_keeper_is_busy_reads_as_down_naming_both_then_ok(make_served_node):
    node = served(make_served_node)
    wait_for(lambda: health(node)["status"] == "ok")
    assert post(node, "/admin/stall/ChainKeeper", {"seconds": 8}).status == 202  # busy, under its 30 s budget
    doc = wait_for(lambda: (d := health(node))["status"] == "down" and d, timeout=20)
    assert "NetworkIO: udp probe failing" in doc["reason"] and "ChainKeeper busy" in doc["reason"]
    keeper = actor_entry(doc, "ChainKeeper")
    assert keeper["activity"] == "busy" and keeper["restarts"] == 0 and keeper["instances"] == 1
    wait_for(lambda: health(node)["status"] == "ok", timeout=30)
    assert actor_entry(health(node), "ChainKeeper")["restarts"] == 0


def test_a_gateway_that_stops_answering_reads_as_degraded_naming_it(make_served_node):
    from supervisor import SupervisorPolicy

    slow = SupervisorPolicy(max_restarts=20, period=10.0, backoff_base=30.0, backoff_max=30.0, watch_interval=0.05)
    node = served(make_served_node, sub_policy=slow, miner_listen=free_tcp_port(), miner_token="t")
    wait_for(lambda: next(p for p in health(node)["probes"] if p["name"] == "gateway")["successes"] > 0)
    assert post(node, "/admin/kill-thread/MinerGateway.accept").status == 202  # its restart waits 30 s
    doc = wait_for(lambda: (d := health(node))["status"] == "degraded" and "gateway probe" in (d["reason"] or "") and d,
                   timeout=20)
    assert "MinerGateway: gateway probe failing" in doc["reason"]
    assert next(p for p in doc["probes"] if p["name"] == "gateway")["core"] is False
