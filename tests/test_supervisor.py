"""Supervision: every actor killed (stopped or made to raise) comes back with its state."""
from __future__ import annotations

import threading

import pykka
import pytest

from actors.base import NodeActor
from config import NodeConfig
from runtime.context import NodeContext
from sim.chains import make_chain
from supervisor import ChildSpec, Supervisor, SupervisorPolicy
from tests.helpers import wait_for, wire_block

ACTORS = ["ChainKeeper", "NetworkIO", "GossipManager", "ConsensusRunner"]


def restarts(node, name):
    return next(a for a in node.health()["actors"] if a["name"] == name)["restarts"]


def stats(client, node):
    return client.ask(node.config.port, {"type": "STATS"}, timeout=0.5)


def _seed_chain(node, client, length=4):
    chain = make_chain(length, 2)
    for block in chain:
        client.send(node.config.port, wire_block(block))
    wait_for(lambda: (stats(client, node) or {}).get("height") == length)
    return chain


@pytest.mark.parametrize("name", ACTORS)
@pytest.mark.parametrize("how", ["raise", "stop"])
def test_killed_actor_comes_back_with_its_state(make_node, client, name, how):
    node = make_node()
    chain = _seed_chain(node, client)
    old_ref = node.supervisor.ref(name)
    if how == "raise":
        node.ctx.registry.proxy(name).crash.defer("test")
    else:
        old_ref.stop()
    wait_for(lambda: restarts(node, name) == 1 and node.health()["status"] == "ok", timeout=10)
    new_ref = node.supervisor.ref(name)
    assert new_ref is not old_ref and new_ref.actor_urn != old_ref.actor_urn
    entry = next(a for a in node.health()["actors"] if a["name"] == name)
    assert entry["alive"] and entry["last_restart"] is not None
    if how == "raise":
        assert "RuntimeError" in entry["last_error"]
    # ChainKeeper reloaded from disk, NetworkIO serves on the same port:
    wait_for(lambda: (stats(client, node) or {}).get("height") == len(chain))
    assert stats(client, node)["hash"] == chain[-1].hash


class Sleepy(NodeActor):
    """An actor whose handler can be made to block, as a real deadlock would."""

    def hang(self, release):
        release.wait(30)


def test_hung_actor_is_detected_and_replaced(tmp_path):
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    policy = SupervisorPolicy(backoff_base=0.01, watch_interval=0.05, ping_timeout=0.5)
    sup = Supervisor(ctx, [ChildSpec("Sleepy", lambda c, n: Sleepy.start(c, n))], policy)
    sup.start()
    release = threading.Event()
    try:
        old = sup.ref("Sleepy")
        ctx.registry.proxy("Sleepy").hang.defer(release)
        wait_for(lambda: sup.children["Sleepy"].restarts == 1 and sup.health()["status"] == "ok", timeout=10)
        entry = sup.health()["actors"][0]
        assert "hung" in entry["last_error"]
        assert sup.ref("Sleepy") is not old
        assert ctx.registry.proxy("Sleepy").ping().get(timeout=1) == "pong"
    finally:
        release.set()
        sup.stop()


class Flaky(NodeActor):
    """Crashes shortly after every start: a crash loop."""

    def on_start(self):
        crash = self.actor_ref.proxy().crash
        threading.Timer(0.05, lambda: crash.defer("always")).start()


def test_restart_intensity_limit_stops_everything_non_zero(tmp_path):
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    policy = SupervisorPolicy(max_restarts=3, period=30.0, backoff_base=0.01, backoff_max=0.02, watch_interval=0.02)
    sup = Supervisor(ctx, [ChildSpec("Flaky", lambda c, n: Flaky.start(c, n))], policy)
    sup.start()
    assert sup.wait(timeout=10) == 1
    assert "restart intensity exceeded" in sup.gave_up_reason
    assert sup.health()["status"] == "down"
    assert not any(ref.is_alive() for ref in pykka.ActorRegistry.get_by_class(Flaky))


def test_backoff_grows_and_resets(tmp_path):
    """Deterministic: injected clock and RNG."""
    now = [0.0]
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    import random
    policy = SupervisorPolicy(max_restarts=100, period=1.0, backoff_base=1.0, backoff_max=8.0, stable_after=30.0)
    sup = Supervisor(ctx, [ChildSpec("X", lambda c, n: NodeActor.start(c, n))], policy, clock=lambda: now[0], rng=random.Random(1))
    child = sup.children["X"]
    delays = []
    for _ in range(5):
        sup._schedule_restart(child, now[0], "test")
        delays.append(child.restart_due - now[0])
        child.restart_due = None
    assert [round(d) for d in delays] == [round(d) for d in delays]
    assert 1.0 <= delays[0] <= 1.25 and 2.0 <= delays[1] <= 2.5 and 4.0 <= delays[2] <= 5.0
    assert 8.0 <= delays[3] <= 10.0 and 8.0 <= delays[4] <= 10.0  # capped (plus jitter)


class Recorder(NodeActor):
    """Records calls in a list shared by all its instances (test only)."""

    seen: list = []

    def slow(self, seconds):
        __import__("time").sleep(seconds)

    def record(self, value):
        Recorder.seen.append((self.actor_urn, value))


def test_calls_queued_behind_a_crash_reach_the_restarted_instance(tmp_path):
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    policy = SupervisorPolicy(backoff_base=0.01, watch_interval=0.02)
    sup = Supervisor(ctx, [ChildSpec("Recorder", lambda c, n: Recorder.start(c, n))], policy)
    sup.start()
    try:
        Recorder.seen.clear()
        first = sup.ref("Recorder").actor_urn
        proxy = ctx.registry.proxy("Recorder")
        proxy.slow.defer(0.2)  # everything below queues up behind this
        proxy.crash.defer("test")
        for value in range(5):
            proxy.record.defer(value)
        wait_for(lambda: len(Recorder.seen) == 5, timeout=5)
        assert [v for _, v in Recorder.seen] == [0, 1, 2, 3, 4]
        assert all(urn != first for urn, _ in Recorder.seen)  # handled by the new instance
        assert sup.children["Recorder"].restarts == 1
    finally:
        sup.stop()
