"""Supervisors: an Erlang/OTP-style tree that starts the node's actors, watches them, restarts them.

```
node (one_for_one; the core giving up ends the node, exit 1)
├── ChainKeeper, NetworkIO, GossipManager          core children
├── sync (one_for_one)      ConsensusRunner        expendable: gives up -> degraded, restarted after a cool-down
└── miners (one_for_one)    MinerActor-0..N-1, MinerGateway
```

Each supervisor is one event loop (its own thread) over a list of children
(workers = actors, or supervisors). Its decisions (strategy, intensity, backoff,
cool-down) are pure functions in runtime/restart_policy.py; this module carries
them out, and never blocks: starting a child, stopping one and a whole subtree's
revival are operations that complete later, noticed as events (a `Terminated`,
a subtree's `SubtreeUp`/`SubtreeStopped`) or on the loop's next look, so a
crash or a stop request is handled as it comes, whatever else is under way.

* `Terminated(child, urn, reason)`: an actor sends it as its last act, *after* it
  released its socket or worker process (actors/base.py). Its queued
  fire-and-forget calls are in its mailbox (runtime/mailbox.py) and go to the
  new instance when it is attached.
* Busy is not hung. Each instance stamps the start and end of every message
  (runtime/instances.py); an actor is hung only when the message running now has
  run past the actor's `message_budget`. A hung expendable actor (ConsensusRunner,
  a miner) is abandoned: what it holds is released, it is unregistered, and a new
  instance takes its place. An actor that owns shared state (ChainKeeper: the
  store; NetworkIO, MinerGateway: a socket) is never duplicated: it is restarted
  only once its old thread has ended, and if it hangs the node logs its stack and
  exits 1 (the store survives kill -9, so nothing is lost; a service manager
  restarts the node).
* Intensity: more than `max_restarts` restarts within `period` and the supervisor
  gives up: it stops its children and reports `Terminated` to its parent. The
  parent restarts an *expendable* subtree (sync, miners) after a cool-down and
  does not count it against its own intensity, so the node heals by itself and
  reports `degraded` meanwhile. The root giving up ends the node with exit 1.
* An error inside a supervisor's own loop is escalated as its own failure (to
  its parent, or ending the node at the root), never swallowed.

The clock and RNG are injected, and the loop's step (`handle`, `tick`, `step`) can be
driven by a test without the thread.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from typing import Any, Callable

import pykka

from messages.internal import Attached, Ping
from runtime.context import NodeContext
from runtime.instances import InstanceRecord
from runtime.supervision_model import (
    AddChild,
    Child,
    ChildSpec,
    Escalate,
    RemoveChild,
    Revive,
    Spec,
    StopRequest,
    SubtreeStopped,
    SubtreeUp,
    SupervisorSpec,
    Terminated,
)
from runtime.restart_policy import (
    Intensity,
    SupervisorPolicy,
    affected_children,
    backoff_delay,
    cooldown_delay,
    is_stable,
)

__all__ = ["ChildSpec", "SupervisorSpec", "Spec", "Supervisor", "SupervisorPolicy", "Terminated"]

log = logging.getLogger("node.supervisor")

SILENT_DEATH_GRACE = 5.0  # a dead actor that never sent Terminated is restarted after this
BUSY_LOOK = 0.01  # how often the loop looks while it starts or stops a child


# ---------------------------------------------------------------- the supervisor


class Supervisor:
    """One supervisor of the tree: `start()`, then `stop()`/`wait()`; `snapshot()` any time."""

    def __init__(
        self,
        ctx: NodeContext,
        specs: list[Spec],
        policy: SupervisorPolicy | None = None,
        *,
        name: str = "node",
        parent: "Supervisor | None" = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.policy = policy or SupervisorPolicy()
        self.parent = parent
        self.clock = clock
        self.wall_clock = wall_clock
        self.rng = rng or random.Random()
        self.children: dict[str, Child] = {}
        self._order: list[str] = []
        for spec in specs:
            self._add_spec(spec)
        self._events: queue.Queue[Any] = queue.Queue()
        self._lock = threading.RLock()  # guards the state read by snapshot() from other threads
        self._intensity = Intensity(self.policy.max_restarts, self.policy.period)
        self._ops: deque[tuple[str, str]] = deque()  # ("start" | "stop", child name), one at a time
        self._op: tuple[str, str] | None = None
        self._loop: threading.Thread | None = None
        self._run_loop = True
        self.state = "stopped"  # starting | running | reviving | giving_up | gave_up | stopping | stopped
        self._stop_requested = threading.Event()
        self._finished = threading.Event()
        self._startup_failure: str | None = None
        self.exit_code: int | None = None
        self.gave_up_reason: str | None = None
        self._owners: dict[str, Supervisor] = {}  # on the root: worker name -> its supervisor
        if parent is None:
            ctx.on_terminated = self.route
            ctx.metrics.supervision_source = self._metrics_source

    def _add_spec(self, spec: Spec) -> Child:
        child = Child(spec)
        if isinstance(spec, SupervisorSpec):
            child.sub = Supervisor(self.ctx, spec.children(self.ctx), spec.policy, name=spec.name, parent=self,
                                   clock=self.clock, wall_clock=self.wall_clock, rng=self.rng)
        self.children[spec.name] = child
        self._order.append(spec.name)
        return child

    # ---------------------------------------------------------- public API

    def start(self, run_loop: bool = True) -> None:
        """Start every child in order (blocking the caller, not a loop), then the event loop;
        raise RuntimeError if one can't start (the others are stopped again).

        `run_loop=False` (tests) starts no thread: the test drives `step()` with its own clock.
        """
        self._run_loop = run_loop
        self.state = "starting"
        for name in self._order:
            self._enqueue("start", name)
        self._drive(lambda: not self._ops and self._op is None)
        if self._startup_failure is not None or self.state != "starting":
            failure = self._startup_failure or f"stopped while starting ({self.state})"
            self._begin_stop(self.exit_code or 0)
            self._drive(self._finished.is_set)
            raise RuntimeError(failure)
        self.state = "running"
        if run_loop:
            self._loop = threading.Thread(target=self._run, name=f"supervisor-{self.name}", daemon=True)
            self._loop.start()
        log.info("supervisor %s started %d children", self.name, len(self._order))

    def stop(self, exit_code: int = 0, timeout: float | None = 60.0) -> None:
        """Stop the children in reverse start order; idempotent. Blocks the caller until done
        (or `timeout`); the loop itself never waits."""
        self._stop_requested.set()
        if self.exit_code is None:
            self.exit_code = exit_code
        if self._finished.is_set():
            return
        loop = self._loop
        if loop is None or not loop.is_alive():
            if loop is not threading.current_thread():
                self.handle(StopRequest(exit_code))
                self._drive(self._finished.is_set, timeout)
            return
        self._events.put(StopRequest(exit_code))
        if loop is threading.current_thread():
            return
        if not self._finished.wait(timeout):
            log.warning("supervisor %s did not stop within %.0fs", self.name, timeout or 0)

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the tree has stopped; the exit code (None on timeout)."""
        if not self._finished.wait(timeout):
            return None
        return self.exit_code

    @property
    def stopped(self) -> bool:
        """Stopping or stopped, by request or because the root gave up."""
        return self._stop_requested.is_set() or self._finished.is_set()

    def ref(self, name: str) -> pykka.ActorRef[Any] | None:
        child = self._find(name)
        return child.ref if child is not None else None

    def child(self, name: str) -> Child | None:
        """A worker anywhere in the tree, by name."""
        return self._find(name)

    def route(self, name: str, urn: str, reason: str | None) -> None:
        """ctx.on_terminated: post `Terminated` to the supervisor that owns `name`."""
        owner = self._owner_of(name)
        if owner is not None:
            owner.post(Terminated(name, urn, reason))

    def post(self, event: Any) -> None:
        self._events.put(event)

    def add_child(self, spec: ChildSpec, timeout: float = 60.0) -> None:
        """Start `spec` as a new child of this supervisor; returns once it was tried.

        A child that fails to start is handled as a crash (restarted with backoff).
        Ignored if a child of that name exists or the supervisor is not running.
        """
        self._call(AddChild(spec, threading.Event()), timeout)

    def remove_child(self, name: str, timeout: float = 60.0) -> None:
        """Stop worker child `name` (as at shutdown) and drop it from this supervisor."""
        self._call(RemoveChild(name, threading.Event()), timeout)

    def _call(self, event: Any, timeout: float) -> None:
        if self._loop is None or not self._loop.is_alive():
            self.handle(event)  # no loop (tests drive step()) or already stopped
            self._drive(lambda: not self._ops and self._op is None, timeout)
            event.done.set()
            return
        self.post(event)
        event.done.wait(timeout)

    # ---------------------------------------------------------- what there is to see

    def snapshot(self) -> dict[str, Any]:
        """The raw facts for /health (ops/health.py renders them): the `supervision` tree,
        the flat `actors` list, and why the root gave up, if it did."""
        return {"supervision": self.tree(), "actors": self.actor_entries(),
                "gave_up": self.gave_up_reason if self.parent is None else None}

    def tree(self) -> dict[str, Any]:
        """This supervisor and everything below it, as nested dicts (the /health `supervision` key)."""
        now = self.clock()
        with self._lock:
            children = []
            for name in self._order:
                child = self.children[name]
                if child.sub is not None:
                    node = child.sub.tree()
                    node["restarts"] = child.restarts
                    node["last_error"] = child.last_error
                    if child.state == "cooling_down" and child.due is not None:
                        node["state"] = "cooling_down"
                        node["restart_in"] = round(max(0.0, child.due - now), 1)
                    node["expendable"] = isinstance(child.spec, SupervisorSpec) and child.spec.expendable
                    children.append(node)
                else:
                    children.append({
                        "name": name, "kind": "worker", "strategy": None, "intensity": None,
                        "state": child.state, "restarts": child.restarts, "last_error": child.last_error,
                        "urn": child.ref.actor_urn if child.ref is not None else None, "children": [],
                    })
            return {
                "name": self.name, "kind": "supervisor", "strategy": self.policy.strategy,
                "intensity": {"max_restarts": self.policy.max_restarts, "period": self.policy.period,
                              "recent": self._intensity.recent(now)},
                "state": self.state, "reason": self.gave_up_reason, "restarts": 0,
                "children": children,
            }

    def actor_entries(self) -> list[dict[str, Any]]:
        """One entry per actor of the tree, in start order (the /health `actors` list).

        Everything here is read without asking the actor (its inbox may be long):
        the progress stamps and threads of its instances (runtime/instances.py).
        """
        entries: list[dict[str, Any]] = []
        with self._lock:
            for name in self._order:
                child = self.children[name]
                if child.sub is not None:
                    entries.extend(child.sub.actor_entries())
                    continue
                ref = child.ref
                mailbox = self.ctx.registry.mailbox(name)
                record = mailbox.record(ref.actor_urn) if ref is not None else None
                alive = child.state == "running" and ref is not None and ref.is_alive()
                entry: dict[str, Any] = {
                    "name": name,
                    "supervisor": self.name,
                    "urn": ref.actor_urn if ref is not None else None,
                    "alive": alive,
                    "state": child.state,
                    "restarts": child.restarts,
                    "last_restart": child.last_restart,
                    "last_error": child.last_error,
                    "messages": self.ctx.metrics.messages(name),
                    "queue_depth": _queue_depth(ref),
                    "instances": len(mailbox.live_records()),
                    "abandoned_instances": len(mailbox.abandoned_records()),
                    "owns_shared_state": bool(getattr(ref.actor_class, "owns_shared_state", False)) if ref else None,
                }
                if record is not None:
                    entry.update(record.describe())
                    entry["activity"] = ("hung" if record.hung() else "busy" if record.busy_for() is not None
                                         or (entry["queue_depth"] or 0) > 0 else "idle")
                else:
                    entry.update({"busy_for": None, "current": None, "handled": 0, "budget": None,
                                  "threads": [], "activity": None})
                entries.append(entry)
        return entries

    def _metrics_source(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
        supervisors: list[dict[str, Any]] = []

        def walk(node: dict[str, Any]) -> None:
            if node["kind"] == "supervisor":
                supervisors.append({"name": node["name"], "state": node["state"], "restarts": node["restarts"]})
                for child in node["children"]:
                    walk(child)

        walk(self.tree())
        return self.actor_entries(), supervisors, self.gave_up_reason is not None

    def thread(self, name: str) -> Any | None:
        """The owned thread called `name` (`NetworkIO.reader`) of a current actor instance, or None."""
        actor = name.split(".", 1)[0]
        child = self._find(actor)
        if child is None or child.ref is None:
            return None
        record = self.ctx.registry.mailbox(actor).record(child.ref.actor_urn)
        return record.thread(name) if record is not None else None

    # ---------------------------------------------------------- the event loop

    def _run(self) -> None:
        while not self._finished.is_set():
            try:
                event = self._events.get(timeout=self._next_timeout())
            except queue.Empty:
                event = None
            try:
                if event is not None:
                    self.handle(event)
                if not self._finished.is_set():
                    self.tick(self.clock())
            except Exception as exc:  # noqa: BLE001 - a supervisor's own fault is escalated, never hidden
                log.exception("supervisor %s: internal error", self.name)
                self._internal_error(f"internal error in supervisor {self.name}: {type(exc).__name__}: {exc}")

    def _internal_error(self, reason: str) -> None:
        if self.parent is None:
            self.gave_up_reason = reason
            log.critical("%s; shutting the node down", reason)
            self._stop_requested.set()
            self.exit_code = 1
            try:
                self._begin_stop(1)
            except Exception:  # noqa: BLE001 - broken beyond repair: let the caller see it stopped
                self._finished.set()
            return
        self._give_up(reason)

    def _next_timeout(self) -> float:
        if self._op is not None or self._ops:
            return BUSY_LOOK
        now = self.clock()
        timeout = self.policy.watch_interval
        with self._lock:
            for child in self.children.values():
                if child.due is not None:
                    timeout = min(timeout, max(0.0, child.due - now))
        return max(0.001, timeout)

    def step(self, timeout: float = 0.0) -> bool:
        """One turn of the loop by hand (tests): handle the next event, if one comes
        within `timeout`, then run what is due at `self.clock()`. True if an event was handled."""
        try:
            event = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            event = None
        if event is not None:
            self.handle(event)
        if not self._finished.is_set():
            self.tick(self.clock())
        return event is not None

    def _drive(self, done: Callable[[], bool], timeout: float | None = None) -> None:
        """Turn this supervisor's loop in the caller's thread until `done()` (start-up, tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            if deadline is not None and time.monotonic() > deadline:
                return
            self.step(BUSY_LOOK)

    def handle(self, event: Any) -> None:
        """Process one event (the loop's step; tests call it directly)."""
        if isinstance(event, StopRequest):
            if self.exit_code is None:
                self.exit_code = event.exit_code
            self._begin_stop(event.exit_code)
        elif isinstance(event, Terminated):
            self._on_terminated(event)
        elif isinstance(event, SubtreeUp):
            self._on_subtree_up(event.name)
        elif isinstance(event, SubtreeStopped):
            pass  # the stop operation sees the subtree finished
        elif isinstance(event, Revive):
            self._revive()
        elif isinstance(event, Escalate):
            self._escalated(event.reason)
        elif isinstance(event, AddChild):
            self._add_child(event.spec)
            event.done.set()  # the caller waits only for the start to be under way, not for it
        elif isinstance(event, RemoveChild):
            self._remove_child(event.name)
            event.done.set()

    def tick(self, now: float) -> None:
        """Run what is due at `now`: operations under way, restarts, cool-downs, hangs, resets."""
        if self.state in ("running", "reviving"):
            for name in list(self._order):
                child = self.children.get(name)
                if child is None:
                    continue
                if child.state in ("restarting", "cooling_down") and not child.queued \
                        and child.due is not None and now >= child.due:
                    child.due = None
                    child.is_restart = True
                    self._enqueue("start", name)
                    continue
                if child.state != "running":
                    continue
                if child.sub is not None:
                    if child.giveups and is_stable(child.started_at, now, self.policy.cooldown_reset):
                        child.giveups = 0
                    continue
                if child.consecutive and is_stable(child.started_at, now, self.policy.stable_after):
                    child.consecutive = 0
                self._watch(child, now)
        self._advance(now)

    # ---------------------------------------------------------- operations (one at a time)

    def _enqueue(self, kind: str, name: str) -> None:
        child = self.children.get(name)
        if child is None:
            return
        child.queued = True
        self._ops.append((kind, name))

    def _advance(self, now: float) -> None:
        """Carry the operation queue forward: finish the current one if it is done, begin the next."""
        while True:
            if self._op is not None:
                if not self._op_done(self._op, now):
                    return
                self._op = None
            if not self._ops:
                self._ops_drained()
                return
            op = self._ops.popleft()
            if op[0] == "forget":
                self._forget(op[1])
                continue
            child = self.children.get(op[1])
            if child is None:
                continue
            child.queued = any(name == op[1] for _, name in self._ops)
            self._op = op
            if op[0] == "start":
                self._begin_start(child, now)
            else:
                self._begin_child_stop(child, now)

    def _ops_drained(self) -> None:
        """Every queued operation is done: finish a stop, a give-up or a revival."""
        if self.state == "stopping":
            self._finish_stop()
        elif self.state == "giving_up":
            self.state = "gave_up"
            self._clear_mailboxes()
            if self.parent is not None:
                self.parent.post(Terminated(self.name, self.name, f"gave up: {self.gave_up_reason}"))
        elif self.state == "reviving":
            if all(c.state == "running" for c in self.children.values()):
                self.state = "running"
                self.gave_up_reason = None
                log.info("supervisor %s restarted its children", self.name)
                if self.parent is not None:
                    self.parent.post(SubtreeUp(self.name))

    # -- start

    def _begin_start(self, child: Child, now: float) -> None:
        if self.state not in ("starting", "running", "reviving"):
            return
        if child.is_restart:
            child.restarts += 1
            child.last_restart = self.wall_clock()
        child.is_restart = False
        child.deadline = None
        if child.sub is not None:
            child.state = "starting"
            sub = child.sub
            if sub._loop is None and sub.state == "stopped" and not sub._finished.is_set():
                try:
                    sub.start(self._run_loop)  # the first start (at the node's start-up)
                except Exception as exc:  # noqa: BLE001 - reported as the subtree's failure
                    self._subtree_failed(child, str(exc))
                    return
                self._subtree_running(child)
            else:
                sub.post(Revive())
            return
        child.state = "starting"
        # A state owner's successor starts only after the old instance's thread has ended.
        child.deadline = now + self.policy.start_timeout + _shutdown_timeout(child)

    def _op_done(self, op: tuple[str, str], now: float) -> bool:
        child = self.children.get(op[1])
        if child is None:
            return True
        if op[0] == "stop":
            return self._stop_done(child, now)
        if child.state != "starting":
            return True
        if child.sub is not None:
            if child.sub._loop is None:
                child.sub.step()  # a subtree without a thread (tests): turn it here
            return False  # SubtreeUp or its Terminated will move it on
        if child.pending_ref is None:
            if self.ctx.registry.mailbox(child.name).live_records():
                if child.deadline is not None and now > child.deadline:
                    self._escalate(child.name, f"{child.name}: the previous instance's thread did not end; "
                                               "a second instance must not share its state")
                    return True
                return False  # the old instance's thread is still ending
            self._launch(child, now)
            if child.pending_ref is None:
                return True  # its constructor failed: handled as a crash
        return self._poll_start(child, now)

    def _launch(self, child: Child, now: float) -> None:
        spec = child.spec
        assert isinstance(spec, ChildSpec)
        try:
            ref = spec.start(self.ctx, spec.name)
        except Exception as exc:  # noqa: BLE001 - a constructor that raises
            log.error("%s failed to start: %s", spec.name, exc)
            self._start_failed(child, f"{type(exc).__name__}: {exc}")
            return
        child.pending_ref = ref
        # on_start runs in the actor's thread; an exception there stops the actor
        # without on_failure. Its first answer tells us it really started.
        child.start_future = ref.ask(_PING, block=False)
        child.deadline = now + self.policy.start_timeout

    def _poll_start(self, child: Child, now: float) -> bool:
        ref = child.pending_ref
        assert ref is not None
        try:
            child.start_future.get(timeout=0)
        except pykka.Timeout:
            if child.deadline is not None and now <= child.deadline:
                return False
            error = f"did not come up within {self.policy.start_timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - ActorDeadError: on_start raised
            error = f"start failed: {type(exc).__name__}"
        else:
            self._started(child, ref, now)
            return True
        log.error("%s %s", child.name, error)
        child.pending_ref = None
        child.start_future = None
        self._abandon(child.name, ref)
        self._start_failed(child, error)
        return True

    def _started(self, child: Child, ref: pykka.ActorRef[Any], now: float) -> None:
        child.pending_ref = None
        child.start_future = None
        child.deadline = None
        child.ref = ref
        child.state = "running"
        child.started_at = now
        child.dead_since = None
        child.escalated = False
        handed = self.ctx.registry.mailbox(child.name).attach(ref)  # handed-over calls come first
        self.ctx.registry.set(child.name, ref)
        self._owner_register(child.name)
        try:
            ref.tell(_ATTACHED)  # its on_attached hook: answers addressed to it reach it now
        except pykka.ActorDeadError:
            pass  # died already: its Terminated (or the watch) follows
        if child.restarts:
            log.info("%s restarted (%s)", child.name, ref.actor_urn)
        if handed:
            log.info("%s: %d queued calls handed to the new instance", child.name, handed)

    def _start_failed(self, child: Child, error: str) -> None:
        child.last_error = error
        if self.state == "starting":  # the node's start-up: no restarts, the caller is told
            child.state = "failed"
            self._startup_failure = f"{child.name} failed to start: {error}"
            self._ops.clear()
            return
        child.state = "running"  # so _child_down counts it as a failure to restart
        self._child_down(child, error)

    # -- stop

    def _begin_child_stop(self, child: Child, now: float) -> None:
        child.deadline = now + _shutdown_timeout(child)
        if child.sub is not None:
            if child.sub._finished.is_set() or child.sub.state in ("stopped", "gave_up") and child.sub._loop is None:
                child.state = "stopped"
                return
            child.state = "stopping"
            child.sub._stop_requested.set()
            if child.sub._loop is None or not child.sub._loop.is_alive():
                child.sub.handle(StopRequest(self.exit_code or 0))
            else:
                child.sub.post(StopRequest(self.exit_code or 0))
            return
        ref, child.ref = child.ref, None
        if child.pending_ref is not None:  # stopped while starting
            ref, child.pending_ref, child.start_future = child.pending_ref, None, None
        self.ctx.registry.set(child.name, None)
        if ref is None:
            child.state = self._after_stop_state(child)
            return
        self.ctx.registry.mailbox(child.name).detach(ref.actor_urn)
        if child.escalated:  # hung: a stop would wait behind the message that never ends
            log.warning("%s is hung; abandoned at shutdown", child.name)
            self._abandon(child.name, ref)
            child.state = self._after_stop_state(child)
            return
        child.state = "stopping"
        child.pending_ref = ref  # the instance being stopped
        child.stopped_urn = None
        try:
            ref.stop(block=False)
        except pykka.ActorDeadError:
            pass

    def _stop_done(self, child: Child, now: float) -> bool:
        if child.state != "stopping":
            return True
        if child.sub is not None:
            sub = child.sub
            if sub._loop is None or not sub._loop.is_alive():
                sub.tick(self.clock())  # a subtree without a thread (tests): turn it here
            if sub._finished.is_set() or sub.state == "gave_up":
                child.state = self._after_stop_state(child)
                return True
        else:
            ref = child.pending_ref
            record = self.ctx.registry.mailbox(child.name).record(ref.actor_urn) if ref is not None else None
            ended = ref is None or child.stopped_urn == ref.actor_urn or (
                record is not None and record.actor_thread is not None and not record.thread_alive())
            if ended or (record is None and ref is not None and not ref.is_alive()):
                child.pending_ref = None
                child.state = self._after_stop_state(child)
                return True
        if child.deadline is not None and now > child.deadline:
            log.warning("%s did not stop within %.1fs; abandoned", child.name, _shutdown_timeout(child))
            if child.pending_ref is not None:
                self._abandon(child.name, child.pending_ref)
                child.pending_ref = None
            child.state = self._after_stop_state(child)
            return True
        return False

    def _after_stop_state(self, child: Child) -> str:
        """What a child stopped by an operation becomes: waiting for its group restart, or stopped."""
        return "restarting" if child.due is not None and self.state in ("running", "reviving") else "stopped"

    def _begin_stop(self, exit_code: int) -> None:
        """Stop every child in reverse start order (operations); no restart happens afterwards."""
        if self.state in ("stopping", "stopped") and (self._finished.is_set() or self.state == "stopping"):
            return  # under way, or done: whoever asked waits on `_finished`
        self._stop_requested.set()
        if self.exit_code is None:
            self.exit_code = exit_code
        self._stop_all("stopping")

    def _stop_all(self, state: str) -> None:
        """Enter `state` (stopping, giving_up): forget due restarts and queued operations, and
        stop every child in reverse start order."""
        self.state = state
        self._ops.clear()
        for child in self.children.values():
            child.due = None
            child.queued = False
        for name in reversed(self._order):
            self._enqueue("stop", name)
        self._advance(self.clock())

    def _finish_stop(self) -> None:
        self.state = "stopped"
        self._clear_mailboxes()
        if self.parent is None:
            self.ctx.timers.close()
            log.info("all actors stopped")
        self._finished.set()
        if self.parent is not None:
            self.parent.post(SubtreeStopped(self.name))

    def _clear_mailboxes(self) -> None:
        for name in self._order:
            if self.children[name].sub is None:
                self.ctx.registry.mailbox(name).clear()

    # ---------------------------------------------------------- watching running workers

    def _watch(self, child: Child, now: float) -> None:
        """A running worker: dead without a Terminated, or hung past its budget?"""
        ref = child.ref
        if ref is None:
            return
        mailbox = self.ctx.registry.mailbox(child.name)
        record = mailbox.record(ref.actor_urn)
        if not ref.is_alive():
            # Normally Terminated follows (after release); a death without one
            # (a BaseException, on_stop failing) is restarted after a grace period.
            if child.dead_since is None:
                child.dead_since = now
            elif now - child.dead_since > SILENT_DEATH_GRACE or (record is not None and not record.thread_alive()):
                self._child_down(child, child.last_error or "stopped without a Terminated")
            return
        if record is None or not record.hung():
            return
        busy = record.busy_for() or 0.0
        what = f"message {record.current!r} has run {busy:.1f}s (budget {record.budget:g}s)"
        if getattr(ref.actor_class, "owns_shared_state", False):
            if not child.escalated:
                child.escalated = True
                self._escalate(child.name, f"{child.name} hung: {what}", record)
            return
        log.error("%s hung: %s; abandoned and replaced", child.name, what)
        record.abandoned = True
        self._abandon(child.name, ref)
        self._child_down(child, f"hung: {what}")

    def _escalate(self, name: str, reason: str, record: InstanceRecord | None = None) -> None:
        """A state owner can't be duplicated and won't finish: log where it is stuck, end the node."""
        if record is not None:
            log.error("stack of %s's thread (%s):\n%s", name, record.urn, record.stack().rstrip())
        self._root().post(Escalate(reason))

    def _escalated(self, reason: str) -> None:
        if self.parent is not None:
            self.parent.post(Escalate(reason))
            return
        if self.state in ("stopping", "stopped"):
            return
        self.gave_up_reason = reason
        log.critical("%s; exiting (exit 1): a second instance must not share its state, the store "
                     "survives this, and a service manager restarts the node", reason)
        self.exit_code = 1
        self._begin_stop(1)

    # ---------------------------------------------------------- events

    def _on_terminated(self, event: Terminated) -> None:
        child = self.children.get(event.name)
        if child is None:
            return
        if child.sub is not None:
            if child.state == "starting":
                self._subtree_failed(child, event.reason or "stopped")
            elif child.state == "running" and self.state == "running":
                self._subtree_failed(child, event.reason or "stopped")
            return
        if child.state == "stopping":
            if child.pending_ref is not None and child.pending_ref.actor_urn == event.urn:
                child.stopped_urn = event.urn
                self._advance(self.clock())
            return
        if child.ref is None or child.ref.actor_urn != event.urn:
            log.debug("%s: Terminated from an old instance ignored", event.name)
            return
        if self.state not in ("running", "reviving") or child.state != "running":
            return
        self._child_down(child, event.reason or "stopped")

    def _on_subtree_up(self, name: str) -> None:
        child = self.children.get(name)
        if child is not None and child.state == "starting":
            self._subtree_running(child)

    def _subtree_running(self, child: Child) -> None:
        child.state = "running"
        child.started_at = self.clock()
        if child.restarts:
            log.info("supervisor %s restarted", child.name)

    def _child_down(self, child: Child, reason: str) -> None:
        """A running worker ended (crash, stop, hang): unregister it, then restart it (and the
        siblings its strategy names) or give up."""
        name = child.name
        if child.ref is not None:
            self.ctx.registry.mailbox(name).detach(child.ref.actor_urn)
        self.ctx.registry.set(name, None)
        child.ref = None
        child.dead_since = None
        child.last_error = reason
        now = self.clock()
        if isinstance(child.spec, ChildSpec) and child.spec.restart != "permanent":
            log.info("%s ended (%s); not restarted (%s)", name, reason, child.spec.restart)
            child.state = "stopped"
            return
        if self._count_restart(now, f"{name}: {reason}"):
            return  # gave up
        child.consecutive += 1
        delay = backoff_delay(self.policy, child.consecutive, self.rng)
        child.state = "restarting"
        child.due = now + delay
        log.warning("%s down (%s); restart #%d in %.2fs", name, reason, child.restarts + 1, delay)
        self._restart_siblings(name, child.due)

    def _restart_siblings(self, failed: str, due: float) -> None:
        """one_for_all / rest_for_one: stop the other affected children (reverse order); they
        restart with the failed one, in start order, when it is due."""
        affected = affected_children(self.policy.strategy, self._order, failed)
        siblings = [name for name in affected if name != failed]
        if not siblings:
            return
        log.warning("supervisor %s (%s): %s restarts with %s", self.name, self.policy.strategy,
                    ", ".join(siblings), failed)
        for name in reversed(siblings):
            sibling = self.children[name]
            sibling.due = due
            if sibling.state in ("running", "starting"):
                self._enqueue("stop", name)
            elif sibling.state in ("stopped", "failed", "cooling_down"):
                sibling.state = "restarting"

    def _subtree_failed(self, child: Child, reason: str) -> None:
        now = self.clock()
        child.last_error = reason
        spec = child.spec
        assert isinstance(spec, SupervisorSpec)
        if not spec.expendable:
            if self._count_restart(now, f"{child.name}: {reason}"):
                return
            child.due = now + self.policy.backoff_base
            child.state = "restarting"
            return
        delay = cooldown_delay(self.policy, child.giveups, self.rng)
        child.giveups += 1
        child.due = now + delay
        child.state = "cooling_down"
        log.error("supervisor %s gave up (%s); the node is degraded; restarting it in %.0fs",
                  child.name, reason, delay)

    def _count_restart(self, now: float, what: str) -> bool:
        """Record a restart in the intensity window; give up (True) when it is exceeded."""
        if not self._intensity.record(now):
            return False
        reason = (f"restart intensity exceeded: {self._intensity.describe(self._intensity.recent())}; "
                  f"last: {what}")
        self._give_up(reason)
        return True

    def _give_up(self, reason: str) -> None:
        self.gave_up_reason = reason
        if self.parent is None:
            log.critical("giving up, shutting the node down: %s", reason)
            self._stop_requested.set()
            self.exit_code = 1
            self._begin_stop(1)
            return
        log.error("supervisor %s giving up: %s", self.name, reason)
        self._stop_all("giving_up")

    def _revive(self) -> None:
        """Parent's order after a cool-down: a fresh start with a fresh intensity window."""
        if self._stop_requested.is_set() or self.state != "gave_up":
            if self.state == "running" and self.parent is not None:
                self.parent.post(SubtreeUp(self.name))
            return
        self._intensity.clear()
        self.state = "reviving"
        for name in self._order:
            child = self.children[name]
            child.consecutive = 0  # a fresh start: backoff from the base again
            child.due = None
            child.is_restart = True
            self._enqueue("start", name)
        self._advance(self.clock())

    def _add_child(self, spec: ChildSpec) -> None:
        if spec.name in self.children or self.state != "running" or self._stop_requested.is_set():
            return
        with self._lock:
            self._add_spec(spec)
        self._enqueue("start", spec.name)
        self._advance(self.clock())
        log.info("supervisor %s: %s added", self.name, spec.name)

    def _remove_child(self, name: str) -> None:
        child = self.children.get(name)
        if child is None or child.sub is not None:
            return
        child.due = None
        self._enqueue("stop", name)
        self._ops.append(("forget", name))
        self._advance(self.clock())

    def _forget(self, name: str) -> None:
        self.ctx.registry.mailbox(name).clear()
        with self._lock:
            self.children.pop(name, None)
            if name in self._order:
                self._order.remove(name)
        self._root()._owners.pop(name, None)
        log.info("supervisor %s: %s removed", self.name, name)

    def _abandon(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        """Give up on an instance that won't answer: free what it holds, unregister it."""
        mailbox = self.ctx.registry.mailbox(name)
        record = mailbox.record(ref.actor_urn)
        if record is not None:
            record.abandoned = True
        release = mailbox.take_release(ref.actor_urn)
        if release is not None:
            try:
                release()
            except Exception as exc:  # noqa: BLE001 - best effort on a broken actor
                log.debug("release of abandoned %s failed: %s", name, exc)
        try:
            ref.stop(block=False)
        except pykka.ActorDeadError:
            pass
        pykka.ActorRegistry.unregister(ref)

    # ---------------------------------------------------------- the tree's owner table

    def _root(self) -> "Supervisor":
        sup = self
        while sup.parent is not None:
            sup = sup.parent
        return sup

    def _owner_register(self, name: str) -> None:
        # No lock: route() runs in actor threads; a dict item assignment is atomic.
        self._root()._owners[name] = self

    def _owner_of(self, name: str) -> "Supervisor | None":
        return self._root()._owners.get(name)

    def _find(self, name: str) -> Child | None:
        for child_name in list(self._order):
            child = self.children.get(child_name)
            if child is None:
                continue
            if child_name == name and child.sub is None:
                return child
            if child.sub is not None:
                found = child.sub._find(name)
                if found is not None:
                    return found
        return None


_PING = Ping()
_ATTACHED = Attached()


def _shutdown_timeout(child: Child) -> float:
    return child.spec.shutdown_timeout


def _queue_depth(ref: pykka.ActorRef[Any] | None) -> int | None:
    if ref is None:
        return None
    try:
        return ref.actor_inbox.qsize()
    except Exception:  # noqa: BLE001
        return None
