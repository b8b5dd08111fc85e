"""POST /admin/crash/{actor}: refused unless asked for, and a real crash + restart when it is."""
from __future__ import annotations

import time

import pytest

import node as node_module
from supervisor import ChildSpec
from tests.helpers import free_tcp_port, wait_for
from tests.ops.ops_helpers import FakeMiner, FakeMinerWithoutKill, actor_entry, http


def restarted(port: int, actor: str, old_urn: str) -> dict | None:
    """The actor's /health entry once it is back with a new URN, else None."""
    entry = actor_entry(http(port, "/health").json(), actor)
    return entry if entry["alive"] and entry["restarts"] >= 1 and entry["urn"] != old_urn else None


def test_crash_is_refused_without_the_flag(make_node):
    node = make_node(http_port=free_tcp_port())
    port = node.config.http_port
    before = actor_entry(http(port, "/health").json(), "ChainKeeper")
    result = http(port, "/admin/crash/ChainKeeper", method="POST")
    assert result.status == 403
    assert "--enable-fault-injection" in result.json()["error"]
    time.sleep(0.3)  # several watchdog passes with the test policy
    after = actor_entry(http(port, "/health").json(), "ChainKeeper")
    assert after["urn"] == before["urn"] and after["restarts"] == 0 and after["alive"]


@pytest.mark.parametrize("actor", ["ChainKeeper", "NetworkIO", "GossipManager", "ConsensusRunner"])
def test_crash_raises_inside_the_actor_and_the_supervisor_restarts_it(make_node, client, actor):
    node = make_node(http_port=free_tcp_port(), enable_fault_injection=True)
    port = node.config.http_port
    old_urn = actor_entry(http(port, "/health").json(), actor)["urn"]
    result = http(port, f"/admin/crash/{actor}", method="POST")
    assert result.status == 202
    assert result.json() == {"actor": actor, "urn": old_urn, "action": "exception raised inside the actor"}
    entry = wait_for(lambda: restarted(port, actor, old_urn), timeout=5)
    assert entry["restarts"] == 1
    assert "fault injection via HTTP" in entry["last_error"]
    assert entry["last_restart"] is not None
    metrics = http(port, "/metrics").text
    assert f'node_actor_restarts_total{{actor="{actor}"}} 1.0' in metrics
    assert f'node_actor_errors_total{{actor="{actor}"}} 1.0' in metrics
    assert f'node_actor_up{{actor="{actor}"}} 1.0' in metrics
    # The node still serves the network after the restart.
    assert wait_for(lambda: client.ask(node.config.port, {"type": "STATS"}, timeout=0.5), timeout=5)["height"] == 0


def test_crash_of_an_unknown_actor_is_404_and_get_is_405(make_node):
    node = make_node(http_port=free_tcp_port(), enable_fault_injection=True)
    port = node.config.http_port
    result = http(port, "/admin/crash/NoSuchActor", method="POST")
    assert result.status == 404
    assert "NoSuchActor" in result.json()["error"]
    assert http(port, "/admin/crash/ChainKeeper").status == 405


def _with_miner(monkeypatch, actor_class):
    real_specs = node_module.child_specs
    monkeypatch.setattr(node_module, "child_specs",
                        lambda config, *policies: real_specs(config, *policies) + [ChildSpec("MinerActor-0", lambda ctx, name: actor_class.start(ctx, name))])


def test_crash_of_a_miner_kills_its_worker(make_node, monkeypatch):
    _with_miner(monkeypatch, FakeMiner)
    node = make_node(http_port=free_tcp_port(), enable_fault_injection=True)
    port = node.config.http_port
    old_urn = actor_entry(http(port, "/health").json(), "MinerActor-0")["urn"]
    result = http(port, "/admin/crash/MinerActor-0", method="POST")
    assert result.status == 202
    body = result.json()
    assert body["action"] == "worker process killed (SIGKILL)"
    assert body["result"] == {"killed_pid": 4242}
    entry = wait_for(lambda: restarted(port, "MinerActor-0", old_urn), timeout=5)
    assert "worker process died" in entry["last_error"]


def test_crash_of_a_miner_without_kill_worker_falls_back_to_an_exception(make_node, monkeypatch):
    _with_miner(monkeypatch, FakeMinerWithoutKill)
    node = make_node(http_port=free_tcp_port(), enable_fault_injection=True)
    port = node.config.http_port
    old_urn = actor_entry(http(port, "/health").json(), "MinerActor-0")["urn"]
    result = http(port, "/admin/crash/MinerActor-0", method="POST")
    assert result.status == 202
    assert result.json()["action"] == "exception raised inside the actor"
    wait_for(lambda: restarted(port, "MinerActor-0", old_urn), timeout=5)
