"""The supervision matrix, in the style of OTP's supervisor_SUITE: each strategy against a
child crash, intensity exceeded, shutdown order, shutdown timeout and a crash during a
restart; busy versus hung; escalation. The supervisor runs without its thread, on an
injected clock, driven step by step; the children are tiny actors with no sockets."""
from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from actors.base import NodeActor
from config import NodeConfig
from runtime.context import NodeContext
from runtime.interfaces import ActorInterface
from runtime.supervision_model import StopRequest
from supervisor import ChildSpec, Supervisor, SupervisorPolicy, SupervisorSpec
from tests.helpers import wait_for

NAMES = ["A", "B", "C"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class WorkerApi(ActorInterface):
    def note(self, value: Any) -> None:
        raise NotImplementedError


class Worker(NodeActor, WorkerApi):
    """Records its starts and stops (in a list shared by the test) and fails on request."""

    events: list[tuple[str, str]] = []
    fail_starts: dict[str, int] = {}

    def on_start(self) -> None:
        left = Worker.fail_starts.get(self.name, 0)
        if left:
            Worker.fail_starts[self.name] = left - 1
            raise RuntimeError(f"{self.name} can't start")
        Worker.events.append(("start", self.name))

    def note(self, value: Any) -> None:
        Worker.events.append(("note", f"{self.name}:{value}"))

    def release(self) -> None:
        if not getattr(self, "_released", False):  # idempotent, as every release must be
            self._released = True
            Worker.events.append(("stop", self.name))


class StateOwner(Worker):
    owns_shared_state = True


@pytest.fixture(autouse=True)
def clean_events():
    Worker.events = []
    Worker.fail_starts = {}
    yield


def make(tmp_path, strategy="one_for_one", *, max_restarts=5, names=NAMES, shutdown_timeout=5.0,
         worker=Worker, budgets=(), parent_policy=None, clock=None):
    clock = clock or FakeClock()
    ctx = NodeContext(NodeConfig(data_dir=tmp_path, message_budgets=budgets))
    policy = SupervisorPolicy(strategy=strategy, max_restarts=max_restarts, period=60.0, backoff_base=1.0,
                              backoff_max=8.0, start_timeout=5.0)
    specs = [ChildSpec(n, lambda c, n, w=worker: w.start(c, n), shutdown_timeout=shutdown_timeout) for n in names]
    sup = Supervisor(ctx, specs, parent_policy or policy, clock=clock, rng=random.Random(1))
    return sup, ctx, clock


def drive(sup: Supervisor, until, what="condition") -> None:
    """Turn the loop (this supervisor and its subtrees) until `until()`; the actors run on their threads."""

    def turned() -> bool:
        for each in _tree(sup):
            each.step(0.005)
        return bool(until())

    wait_for(turned, timeout=20)


def _tree(sup: Supervisor) -> list[Supervisor]:
    found = [sup]
    for child in sup.children.values():
        if child.sub is not None:
            found += _tree(child.sub)
    return found


def urns(sup: Supervisor) -> dict[str, str | None]:
    return {n: (sup.ref(n).actor_urn if sup.ref(n) else None) for n in sup._order}


def crash(ctx: NodeContext, name: str) -> None:
    ctx.registry.actor(name).crash.defer("test")


def restart_due(sup: Supervisor, clock: FakeClock) -> None:
    """Move the clock past every scheduled restart."""
    clock.advance(20.0)


# ---------------------------------------------------------------- child crash, per strategy


@pytest.mark.parametrize("strategy, restarted", [
    ("one_for_one", ["B"]),
    ("one_for_all", ["A", "B", "C"]),
    ("rest_for_one", ["B", "C"]),
])
def test_a_child_crash_restarts_what_the_strategy_says_in_start_order(tmp_path, strategy, restarted):
    sup, ctx, clock = make(tmp_path, strategy)
    sup.start(run_loop=False)
    try:
        before = urns(sup)
        Worker.events.clear()
        crash(ctx, "B")
        # The siblings the strategy names are stopped first (none runs while B is down) ...
        drive(sup, lambda: all(sup.children[n].state == "restarting" for n in restarted))
        assert [n for n in NAMES if sup.ref(n) is not None] == [n for n in NAMES if n not in restarted]
        restart_due(sup, clock)
        drive(sup, lambda: all(sup.children[n].state == "running" for n in NAMES))
        after = urns(sup)
        changed = [n for n in NAMES if after[n] != before[n]]
        assert changed == restarted
        starts = [name for kind, name in Worker.events if kind == "start"]
        assert starts == restarted  # in start order
        stops = [name for kind, name in Worker.events if kind == "stop"]
        siblings = [n for n in restarted if n != "B"]
        assert stops == ["B"] + list(reversed(siblings))  # the crashed one released, then siblings in reverse
        assert all(sup.children[n].restarts == (1 if n in restarted else 0) for n in NAMES)
    finally:
        sup.stop()


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
def test_intensity_exceeded_gives_up_and_the_root_exits_1(tmp_path, strategy):
    sup, ctx, clock = make(tmp_path, strategy, max_restarts=2)
    sup.start(run_loop=False)
    for round_ in range(3):
        crash(ctx, "C")
        drive(sup, lambda: sup.children["C"].state != "running" or sup.state != "running")
        if sup.state != "running":
            drive(sup, sup._finished.is_set)
            break
        restart_due(sup, clock)
        drive(sup, lambda: sup.children["C"].state == "running")
    assert sup.wait(timeout=0) == 1
    assert "intensity exceeded" in (sup.gave_up_reason or "")
    assert all(sup.ref(n) is None for n in NAMES)
    assert round_ == 2  # the third crash in the window was one too many


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
def test_shutdown_stops_children_in_reverse_start_order(tmp_path, strategy):
    sup, ctx, clock = make(tmp_path, strategy)
    sup.start(run_loop=False)
    Worker.events.clear()
    sup.stop()
    assert [name for kind, name in Worker.events if kind == "stop"] == ["C", "B", "A"]
    assert sup.wait(timeout=0) == 0


def test_shutdown_timeout_abandons_a_child_that_does_not_stop(tmp_path):
    sup, ctx, clock = make(tmp_path, shutdown_timeout=3.0, budgets=(("B", 3600.0),))
    sup.start(run_loop=False)
    ctx.registry.actor("B").stall.defer(3600)
    wait_for(lambda: (sup.ctx.registry.mailbox("B").current_record().busy_for() or 0) > 0)
    Worker.events.clear()
    sup.handle(StopRequest(0))
    drive(sup, lambda: [n for k, n in Worker.events if k == "stop"] == ["C"])
    assert not sup._finished.is_set()  # B is still being waited for
    clock.advance(3.5)  # past B's shutdown timeout
    drive(sup, sup._finished.is_set)
    stops = [name for kind, name in Worker.events if kind == "stop"]
    assert stops == ["C", "B", "A"]  # B released when abandoned, then A stopped


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
def test_a_crash_during_the_restart_is_a_crash_like_any_other(tmp_path, strategy):
    sup, ctx, clock = make(tmp_path, strategy, max_restarts=5)
    sup.start(run_loop=False)
    try:
        Worker.fail_starts["B"] = 2  # its next two starts raise in on_start
        crash(ctx, "B")
        for _ in range(3):
            drive(sup, lambda: sup.children["B"].state in ("restarting", "running") and not sup._ops and sup._op is None)
            if sup.children["B"].state == "running":
                break
            restart_due(sup, clock)
        drive(sup, lambda: all(sup.children[n].state == "running" for n in NAMES))
        assert sup.children["B"].restarts == 3  # two failed starts counted, then it came up
        assert "start failed" in (sup.children["B"].last_error or "")
        assert sup._intensity.recent() == 3
    finally:
        sup.stop()


# ---------------------------------------------------------------- busy is not hung


def test_minutes_of_queued_work_is_busy_not_hung(tmp_path):
    sup, ctx, clock = make(tmp_path, budgets=(("A", 5.0),))
    sup.start(run_loop=False)
    try:
        first = sup.ref("A")
        proxy = ctx.registry.actor("A")
        for _ in range(6):
            proxy.stall.defer(0.3)  # each well under the budget; together 1.8 s of backlog
        proxy.note.defer("after")
        entry = wait_for(lambda: next((e for e in [sup.actor_entries()[0]]
                                       if e["activity"] == "busy" and e["current"] == "stall" and e["queue_depth"]), None))
        assert entry["instances"] == 1 and entry["busy_for"] is not None
        drive(sup, lambda: ("note", "A:after") in Worker.events)
        assert sup.ref("A") is first and sup.children["A"].restarts == 0
        assert sup.actor_entries()[0]["instances"] == 1
    finally:
        sup.stop()


def test_a_hung_expendable_actor_is_abandoned_and_replaced(tmp_path):
    sup, ctx, clock = make(tmp_path, budgets=(("A", 0.2),))
    sup.start(run_loop=False)
    try:
        first = sup.ref("A")
        ctx.registry.actor("A").stall.defer(60)
        ctx.registry.actor("A").note.defer("queued")
        drive(sup, lambda: sup.children["A"].state == "restarting")
        assert "hung" in sup.children["A"].last_error and "'stall'" in sup.children["A"].last_error
        restart_due(sup, clock)
        drive(sup, lambda: sup.children["A"].state == "running")
        assert sup.ref("A") is not first
        drive(sup, lambda: ("note", "A:queued") in Worker.events)  # handed to the successor
        wait_for(lambda: sup.actor_entries()[0]["instances"] == 1 and not first.is_alive())
    finally:
        sup.stop()


def test_a_hung_state_owner_is_never_duplicated_the_node_exits_1_with_its_stack(tmp_path, caplog):
    sup, ctx, clock = make(tmp_path, worker=StateOwner, budgets=(("B", 0.2),))
    sup.start(run_loop=False)
    first = sup.ref("B")
    caplog.set_level(logging.INFO, logger="node.supervisor")
    ctx.registry.actor("B").stall.defer(60)
    drive(sup, sup._finished.is_set)
    assert sup.exit_code == 1
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1
    assert "B hung" in critical[0].getMessage() and "'stall'" in critical[0].getMessage()
    assert any("stack of B's thread" in r.getMessage() and "def stall" not in r.getMessage()
               and "stall" in r.getMessage() for r in caplog.records)
    assert sup.children["B"].restarts == 0
    assert ("start", "B") not in Worker.events[3:]  # no second instance was ever started
    assert len([e for e in Worker.events if e == ("start", "B")]) == 1
    del first


def test_a_state_owner_that_crashes_is_restarted_only_after_its_thread_ended(tmp_path):
    sup, ctx, clock = make(tmp_path, worker=StateOwner)
    sup.start(run_loop=False)
    try:
        record = ctx.registry.mailbox("A").current_record()
        crash(ctx, "A")
        drive(sup, lambda: sup.children["A"].state == "restarting")
        restart_due(sup, clock)
        drive(sup, lambda: sup.children["A"].state == "running")
        assert not record.thread_alive()
        assert sup.actor_entries()[0]["instances"] == 1
    finally:
        sup.stop()


# ---------------------------------------------------------------- the tree


def sub_tree(tmp_path, clock, sub_strategy="one_for_one"):
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    sub_policy = SupervisorPolicy(strategy=sub_strategy, max_restarts=1, period=60.0, backoff_base=1.0,
                                  cooldown_base=30.0)
    root_policy = SupervisorPolicy(max_restarts=5, period=60.0, backoff_base=1.0, cooldown_base=30.0, cooldown_max=60.0)
    specs = [
        ChildSpec("A", lambda c, n: Worker.start(c, n)),
        SupervisorSpec("sub", lambda c: [ChildSpec("X", lambda c2, n: Worker.start(c2, n)),
                                         ChildSpec("Y", lambda c2, n: Worker.start(c2, n))], sub_policy),
    ]
    return Supervisor(ctx, specs, root_policy, clock=clock, rng=random.Random(1)), ctx


def test_an_expendable_subtree_gives_up_cools_down_and_comes_back_while_the_root_keeps_working(tmp_path):
    clock = FakeClock()
    root, ctx = sub_tree(tmp_path, clock)
    root.start(run_loop=False)
    try:
        sub = root.children["sub"].sub
        crash(ctx, "X")
        drive(root, lambda: sub.children["X"].state == "restarting")
        clock.advance(5)
        drive(root, lambda: sub.children["X"].state == "running")
        crash(ctx, "X")  # the second within its period: over the subtree's intensity
        drive(root, lambda: root.children["sub"].state == "cooling_down")
        assert sub.state == "gave_up" and root.state == "running"
        # The root is not blocked by the subtree: a crash of its own child is handled meanwhile.
        crash(ctx, "A")
        drive(root, lambda: root.children["A"].state == "restarting")
        clock.advance(5)
        drive(root, lambda: root.children["A"].state == "running")
        clock.advance(40)  # past the cool-down
        drive(root, lambda: root.children["sub"].state == "running" and sub.state == "running")
        assert all(sub.children[n].state == "running" for n in ("X", "Y"))
        assert root.children["sub"].restarts == 1
    finally:
        root.stop()
    assert root.wait(timeout=0) == 0


def test_shutdown_of_a_tree_is_reverse_order_through_subtrees(tmp_path):
    clock = FakeClock()
    root, ctx = sub_tree(tmp_path, clock)
    root.start(run_loop=False)
    Worker.events.clear()
    root.stop()
    assert [name for kind, name in Worker.events if kind == "stop"] == ["Y", "X", "A"]


def test_an_internal_error_of_a_supervisor_escalates(tmp_path, monkeypatch):
    clock = FakeClock()
    root, ctx = sub_tree(tmp_path, clock)
    root.start(run_loop=True)
    try:
        sub = root.children["sub"].sub

        def broken(event):
            raise KeyError("a bug in the supervisor")

        monkeypatch.setattr(sub, "handle", broken)
        sub.post(object())
        wait_for(lambda: root.children["sub"].state == "cooling_down")
        assert "internal error in supervisor sub" in root.children["sub"].last_error
    finally:
        monkeypatch.undo()
        root.stop()

    root2, ctx2 = sub_tree(tmp_path / "2", FakeClock())
    root2.start(run_loop=True)

    def broken_root(event):
        raise KeyError("a bug in the root")

    monkeypatch.setattr(root2, "handle", broken_root)
    root2.post(object())
    assert root2.wait(timeout=20) == 1
    assert "internal error in supervisor node" in (root2.gave_up_reason or "")
