"""Supervision: restarts, backoff, intensity, the tree, handover of queued calls, shutdown."""
from __future__ import annotations

import random
import threading
import time

import pykka
import pytest

from actors.base import NodeActor
from config import NodeConfig
from runtime.context import NodeContext
from runtime.interfaces import ActorInterface
from sim.chains import make_chain
from supervisor import ChildSpec, Supervisor, SupervisorPolicy, SupervisorSpec
from tests.helpers import health, wait_for, wire_block

ACTORS = ["ChainKeeper", "NetworkIO", "GossipManager", "ConsensusRunner"]


def restarts(node, name):
    return next(a for a in health(node)["actors"] if a["name"] == name)["restarts"]


def stats(client, node):
    return client.ask(node.config.port, {"type": "STATS"}, timeout=0.5)


def _seed_chain(node, client, length=4):
    chain = make_chain(length, 2)
    for block in chain:
        client.send(node.config.port, wire_block(block))
    wait_for(lambda: (stats(client, node) or {}).get("height") == length)
    return chain


def live(actor_class) -> list:
    return [ref for ref in pykka.ActorRegistry.get_by_class(actor_class) if ref.is_alive()]


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
    wait_for(lambda: restarts(node, name) == 1 and health(node)["status"] == "ok", timeout=10)
    new_ref = node.supervisor.ref(name)
    assert new_ref is not old_ref and new_ref.actor_urn != old_ref.actor_urn
    assert not old_ref.is_alive() and new_ref.is_alive()
    entry = next(a for a in health(node)["actors"] if a["name"] == name)
    assert entry["alive"] and entry["last_restart"] is not None
    if how == "raise":
        assert "RuntimeError" in entry["last_error"]
    else:
        assert entry["last_error"] == "stopped"
    # ChainKeeper reloaded from disk, NetworkIO serves on the same port:
    wait_for(lambda: (stats(client, node) or {}).get("height") == len(chain))
    assert stats(client, node)["hash"] == chain[-1].hash


# ---------------------------------------------------------------- test actors


class SleepyApi(ActorInterface):
    def hang(self, release): ...

    def record(self, value): ...


class Sleepy(NodeActor, SleepyApi):
    """An actor whose handler can be made to block, as a real deadlock would."""

    released: list = []
    seen: list = []

    def hang(self, release):
        release.wait(30)

    def record(self, value):
        Sleepy.seen.append((self.actor_urn, value))

    def release(self):
        Sleepy.released.append(self.actor_urn)


def test_hung_actor_is_detected_abandoned_and_replaced(tmp_path):
    ctx = NodeContext(NodeConfig(data_dir=tmp_path, message_budgets=(("Sleepy", 0.5),)))
    policy = SupervisorPolicy(backoff_base=0.01, watch_interval=0.05)
    sup = Supervisor(ctx, [ChildSpec("Sleepy", lambda c, n: Sleepy.start(c, n))], policy)
    sup.start()
    release = threading.Event()
    Sleepy.released.clear()
    Sleepy.seen.clear()
    try:
        old = sup.ref("Sleepy")
        proxy = ctx.registry.proxy("Sleepy")
        proxy.hang.defer(release)
        for value in range(3):
            proxy.record.defer(value)  # queued behind the hang
        wait_for(lambda: sup.child("Sleepy").restarts == 1 and health(sup)["status"] == "ok", timeout=10)
        entry = health(sup)["actors"][0]
        assert "hung" in entry["last_error"]
        new = sup.ref("Sleepy")
        assert new is not old
        assert old.actor_urn in Sleepy.released  # what the hung instance held was freed
        assert ctx.registry.proxy("Sleepy").ping().get(timeout=1) == "pong"
        wait_for(lambda: len(Sleepy.seen) == 3)
        assert Sleepy.seen == [(new.actor_urn, v) for v in range(3)]  # handed over
        release.set()  # the abandoned instance wakes up: it must not run them again
        wait_for(lambda: not old.is_alive(), timeout=5)
        assert Sleepy.seen == [(new.actor_urn, v) for v in range(3)]
    finally:
        release.set()
        sup.stop()


class Flaky(NodeActor):
    """Crashes shortly after every start: a crash loop."""

    def on_start(self):
        crash = self.actor_ref.proxy().crash
        threading.Timer(0.05, lambda: crash.defer("always")).start()


class Steady(NodeActor):
    """A well-behaved actor."""


def test_restart_intensity_limit_of_the_root_stops_everything_non_zero(tmp_path):
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    policy = SupervisorPolicy(max_restarts=3, period=30.0, backoff_base=0.01, backoff_max=0.02, watch_interval=0.02)
    sup = Supervisor(ctx, [ChildSpec("Steady", lambda c, n: Steady.start(c, n)),
                           ChildSpec("Flaky", lambda c, n: Flaky.start(c, n))], policy)
    sup.start()
    assert sup.wait(timeout=10) == 1
    assert "restart intensity exceeded" in sup.gave_up_reason
    assert health(sup)["status"] == "down"
    assert sup.child("Flaky").restarts == 3
    assert not live(Flaky) and not live(Steady)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _settle(sup: Supervisor) -> None:
    """Turn the loop until the restarts it began are done (a start completes when the actor answers)."""
    wait_for(lambda: (sup.step(0.005), not sup._ops and sup._op is None)[1])


def _crash_and_handle(sup: Supervisor, name: str) -> None:
    """Crash `name` and let the supervisor handle its Terminated (no loop thread, no real waiting)."""
    sup.ctx.registry.actor(name).crash.defer("test")
    assert sup.step(timeout=5), "no Terminated arrived"


def test_backoff_grows_is_capped_and_resets_after_a_stable_period(tmp_path):
    """Deterministic: injected clock and RNG, no loop thread, no sleeps."""
    clock = Clock()
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    policy = SupervisorPolicy(max_restarts=100, period=1.0, backoff_base=1.0, backoff_max=8.0, stable_after=30.0,
                              start_timeout=1e9)  # the fake clock jumps: no liveness verdicts here
    sup = Supervisor(ctx, [ChildSpec("X", lambda c, n: Steady.start(c, n))], policy, clock=clock, rng=random.Random(1))
    sup.start(run_loop=False)
    child = sup.child("X")
    try:
        delays = []
        for _ in range(5):
            _crash_and_handle(sup, "X")
            assert child.state == "restarting"
            delays.append(child.due - clock.now)
            clock.now = child.due
            _settle(sup)
            assert child.state == "running"
        bases = [1.0, 2.0, 4.0, 8.0, 8.0]  # doubling, capped at 8
        for delay, base in zip(delays, bases):
            assert base <= delay <= base * 1.25  # plus at most 25% jitter
        assert len({round(d / b, 6) for d, b in zip(delays, bases)}) > 1  # the jitter really varies
        # Stable for 30 s: the next failure starts again from the base delay.
        clock.now += 30.0
        sup.step()
        _crash_and_handle(sup, "X")
        assert 1.0 <= child.due - clock.now <= 1.25
        # ... whereas a failure soon after a restart keeps growing the delay.
        clock.now = child.due
        _settle(sup)
        clock.now += 1.0
        _crash_and_handle(sup, "X")
        assert 2.0 <= child.due - clock.now <= 2.5
        assert child.restarts == 6
    finally:
        sup.stop()


def test_intensity_window_slides_with_the_clock(tmp_path):
    """max_restarts in period: restarts older than the period no longer count."""
    clock = Clock()
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    policy = SupervisorPolicy(max_restarts=2, period=10.0, backoff_base=0.1, backoff_max=0.1, start_timeout=1e9)
    sup = Supervisor(ctx, [ChildSpec("X", lambda c, n: Steady.start(c, n))], policy, clock=clock, rng=random.Random(2))
    sup.start(run_loop=False)
    child = sup.child("X")
    for _ in range(2):
        _crash_and_handle(sup, "X")
        clock.now = child.due
        _settle(sup)
    clock.now += 11.0  # both restarts are now out of the window
    _crash_and_handle(sup, "X")
    assert sup.gave_up_reason is None and child.state == "restarting"
    clock.now = child.due
    _settle(sup)
    _crash_and_handle(sup, "X")
    assert sup.gave_up_reason is None  # 2 in the window: still allowed
    clock.now = child.due
    _settle(sup)
    _crash_and_handle(sup, "X")  # the third within 10 s
    assert "restart intensity exceeded" in sup.gave_up_reason
    assert sup.wait(timeout=5) == 1 and not live(Steady)


# ---------------------------------------------------------------- the tree


def test_a_crash_loop_in_each_subtree_degrades_the_node_and_heals_after_a_cool_down(tmp_path):
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    sub = SupervisorPolicy(max_restarts=2, period=30.0, backoff_base=0.01, backoff_max=0.02, watch_interval=0.02)
    root = SupervisorPolicy(max_restarts=1, period=60.0, watch_interval=0.02, cooldown_base=0.5, cooldown_max=0.5)
    fail = {"sync": True, "miners": True}

    class SyncLike(NodeActor):
        def on_start(self):
            if fail["sync"]:
                crash = self.actor_ref.proxy().crash
                threading.Timer(0.02, lambda: crash.defer("sync bug")).start()

    class MinerLike(NodeActor):
        def on_start(self):
            if fail["miners"]:
                crash = self.actor_ref.proxy().crash
                threading.Timer(0.02, lambda: crash.defer("worker died")).start()

    sup = Supervisor(ctx, [
        ChildSpec("Core", lambda c, n: Steady.start(c, n)),
        SupervisorSpec("sync", lambda c: [ChildSpec("SyncLike", lambda c, n: SyncLike.start(c, n))], sub),
        SupervisorSpec("miners", lambda c: [ChildSpec("MinerLike-0", lambda c, n: MinerLike.start(c, n)),
                                           ChildSpec("MinerLike-1", lambda c, n: Steady.start(c, n))], sub),
    ], root)
    core_urn = None
    sup.start()
    try:
        core_urn = sup.ref("Core").actor_urn

        def gave_up(name):
            node = next(c for c in health(sup)["supervision"]["children"] if c["name"] == name)
            return node["state"] == "cooling_down"

        wait_for(lambda: gave_up("sync") and gave_up("miners"), timeout=10)
        doc = health(sup)
        assert doc["status"] == "degraded"
        assert "sync gave up" in doc["reason"] and "miners gave up" in doc["reason"]
        assert "restart intensity exceeded" in doc["reason"]
        assert not live(SyncLike) and not live(MinerLike)
        assert sup.ref("MinerLike-1") is None  # the whole subtree is stopped, not only the failing child
        fail["sync"] = fail["miners"] = False  # the bug is gone (the hostile peer left)
        wait_for(lambda: health(sup)["status"] == "ok", timeout=10)
        assert sup.ref("SyncLike").is_alive() and sup.ref("MinerLike-0").is_alive()
        assert sup.ref("Core").actor_urn == core_urn and sup.child("Core").restarts == 0
        assert sup.gave_up_reason is None and not sup.stopped
        tree = health(sup)["supervision"]
        restarted = {c["name"]: c["restarts"] for c in tree["children"]}
        assert restarted["Core"] == 0 and restarted["sync"] >= 1 and restarted["miners"] >= 1
    finally:
        sup.stop()
    assert not live(SyncLike) and not live(MinerLike) and not live(Steady)


def test_cool_down_doubles_at_each_give_up_and_is_capped(tmp_path):
    clock = Clock()
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    root = SupervisorPolicy(cooldown_base=30.0, cooldown_max=100.0, cooldown_reset=300.0, start_timeout=1e9)
    sub = SupervisorPolicy(start_timeout=1e9)  # the fake clock jumps: no liveness verdicts here
    sup = Supervisor(ctx, [SupervisorSpec("sync", lambda c: [ChildSpec("S", lambda c, n: Steady.start(c, n))], sub)],
                     root, clock=clock, rng=random.Random(3))
    sup.start(run_loop=False)
    child = sup.children["sync"]
    try:
        cooldowns = []
        for _ in range(4):
            sup.handle(_gave_up_event("sync"))
            assert child.state == "cooling_down"
            cooldowns.append(child.due - clock.now)
            clock.now = child.due
            _settle(sup)
            assert child.state == "running" and sup.ref("S").is_alive()
        for got, base in zip(cooldowns, [30.0, 60.0, 100.0, 100.0]):
            assert base <= got <= base * 1.1
        clock.now += 300.0  # stable: the next give-up waits the base cool-down again
        sup.step()
        sup.handle(_gave_up_event("sync"))
        assert 30.0 <= child.due - clock.now <= 33.0
    finally:
        sup.stop()


def _gave_up_event(name):
    from supervisor import Terminated

    return Terminated(name, name, "gave up: test")


def test_health_supervision_tree_is_nested_down_to_each_actor(make_node):
    node = make_node(miner_listen=0)
    tree = health(node)["supervision"]
    assert tree["name"] == "node" and tree["kind"] == "supervisor" and tree["strategy"] == "one_for_one"
    assert tree["state"] == "running" and tree["restarts"] == 0
    assert set(tree["intensity"]) >= {"max_restarts", "period"}
    names = [c["name"] for c in tree["children"]]
    assert names == ["ChainKeeper", "NetworkIO", "GossipManager", "sync"]
    sync = tree["children"][3]
    assert sync["kind"] == "supervisor" and sync["children"][0]["name"] == "ConsensusRunner"
    assert sync["children"][0]["kind"] == "worker" and sync["children"][0]["state"] == "running"
    for child in tree["children"][:3]:
        assert child["kind"] == "worker" and child["state"] == "running" and child["restarts"] == 0

    def walk(node):  # every level has the same keys, down to each actor
        assert {"name", "kind", "strategy", "intensity", "state", "restarts", "children"} <= set(node)
        for child in node["children"]:
            walk(child)

    walk(tree)


# ---------------------------------------------------------------- handover


class RecorderApi(ActorInterface):
    def slow(self, seconds): ...

    def record(self, value): ...

    def crash_on(self, value): ...


class Recorder(NodeActor, RecorderApi):
    """Records calls in a list shared by all its instances; its release is slow."""

    seen: list = []
    events: list = []
    release_seconds = 0.0

    def on_start(self):
        Recorder.events.append(("start", self.actor_urn, time.monotonic()))

    def slow(self, seconds):
        time.sleep(seconds)

    def record(self, value):
        Recorder.seen.append((self.actor_urn, value))

    def crash_on(self, value):
        Recorder.seen.append((self.actor_urn, f"crash {value}"))
        raise RuntimeError(f"bad value {value}")

    def release(self):
        time.sleep(Recorder.release_seconds)
        Recorder.events.append(("released", self.actor_urn, time.monotonic()))


@pytest.mark.parametrize("release_seconds", [0.0, 1.5])
def test_every_call_queued_behind_a_crash_reaches_the_new_instance_but_not_the_crashing_one(tmp_path, release_seconds):
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    policy = SupervisorPolicy(backoff_base=0.01, watch_interval=0.02)
    sup = Supervisor(ctx, [ChildSpec("Recorder", lambda c, n: Recorder.start(c, n))], policy)
    Recorder.seen.clear()
    Recorder.events.clear()
    Recorder.release_seconds = release_seconds
    sup.start()
    try:
        first = sup.ref("Recorder").actor_urn
        proxy = ctx.registry.proxy("Recorder")
        proxy.slow.defer(0.2)  # everything below queues up behind this
        proxy.crash_on.defer("X")
        for value in range(50):
            proxy.record.defer(value)
        wait_for(lambda: len(Recorder.seen) == 51, timeout=15)
        assert Recorder.seen[0] == (first, "crash X")  # the crashing call ran once, on the old instance
        handed = Recorder.seen[1:]
        assert [v for _, v in handed] == list(range(50))  # all of them, in order
        second = sup.ref("Recorder").actor_urn
        assert all(urn == second for urn, _ in handed)
        assert sup.child("Recorder").restarts == 1
        # The new instance started only after the old one had released what it held.
        released = next(t for kind, urn, t in Recorder.events if kind == "released" and urn == first)
        started = next(t for kind, urn, t in Recorder.events if kind == "start" and urn == second)
        assert started >= released
        time.sleep(0.3)
        assert len(Recorder.seen) == 51  # nothing replayed twice
    finally:
        Recorder.release_seconds = 0.0
        sup.stop()


# ---------------------------------------------------------------- shutdown


class SlowStart(NodeActor):
    """Takes a while to start (a miner spawning its worker, NetworkIO binding)."""

    def on_start(self):
        time.sleep(0.5)


def test_stop_during_a_pending_restart_leaves_nothing_running(tmp_path):
    """The supervisor's clock is frozen, so the restart's backoff can never come due: a stop
    that finishes at all did not wait for it. Moving the clock past it afterwards starts nothing."""
    clock = Clock()
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    policy = SupervisorPolicy(backoff_base=2.0, backoff_max=2.0, watch_interval=0.02)
    sup = Supervisor(ctx, [ChildSpec("Steady", lambda c, n: Steady.start(c, n)),
                           ChildSpec("SlowStart", lambda c, n: SlowStart.start(c, n))], policy, clock=clock)
    sup.start()
    sup.ref("SlowStart").proxy().crash.defer("test")
    due = wait_for(lambda: sup.child("SlowStart").state == "restarting" and sup.child("SlowStart").due, timeout=5)
    assert due >= clock.now + 2.0  # the restart waits for its backoff
    sup.stop(timeout=30)
    assert sup.wait(timeout=0) == 0  # stopped while the clock still stands before the restart
    clock.now = due + 1.0  # past the time the restart was due ...
    sup.tick(clock())  # ... and a turn of the loop there
    assert not live(SlowStart) and not live(Steady)
    assert sup.child("SlowStart").restarts == 0
    assert ctx.registry.ref("SlowStart") is None


def test_stop_while_a_child_is_being_restarted_stops_the_new_instance_too(tmp_path):
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    policy = SupervisorPolicy(backoff_base=0.01, backoff_max=0.01, watch_interval=0.02)
    sup = Supervisor(ctx, [ChildSpec("Steady", lambda c, n: Steady.start(c, n)),
                           ChildSpec("SlowStart", lambda c, n: SlowStart.start(c, n))], policy)
    sup.start()
    first = sup.ref("SlowStart")
    first.proxy().crash.defer("test")
    # Stop while the new instance is in its 0.5 s on_start:
    wait_for(lambda: any(ref is not first for ref in pykka.ActorRegistry.get_by_class(SlowStart)), timeout=5)
    sup.stop()
    assert sup.wait(timeout=5) == 0
    time.sleep(0.2)
    assert not live(SlowStart) and not live(Steady)
    assert ctx.registry.ref("SlowStart") is None and ctx.registry.ref("Steady") is None


def test_children_stop_in_reverse_start_order(tmp_path):
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    order: list[str] = []

    class Noting(NodeActor):
        def release(self):
            order.append(self.name)

    sup = Supervisor(ctx, [
        ChildSpec("A", lambda c, n: Noting.start(c, n)),
        SupervisorSpec("sub", lambda c: [ChildSpec("B", lambda c, n: Noting.start(c, n)),
                                        ChildSpec("C", lambda c, n: Noting.start(c, n))]),
        ChildSpec("D", lambda c, n: Noting.start(c, n)),
    ])
    sup.start()
    sup.stop()
    assert order == ["D", "C", "B", "A"]


def test_one_timer_thread_serves_every_actor(make_node):
    node = make_node()
    names = [t.name for t in threading.enumerate()]
    assert not any("timer" in n and n != "timers" for n in names), names
    assert node.ctx.timers.pending() >= 3  # keep-alive, expiry, consensus interval, ...
