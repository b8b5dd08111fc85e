"""Supervisors: an Erlang/OTP-style tree that starts the node's actors, watches them, restarts them.

```
node (one_for_one; the core giving up ends the node, exit 1)
├── ChainKeeper, NetworkIO, GossipManager          core children
├── sync (one_for_one)      ConsensusRunner        expendable: gives up -> degraded, restarted after a cool-down
└── miners (one_for_one)    MinerActor-0..N-1, MinerGateway
```

Each supervisor is one event loop (its own thread) that owns a list of children
(workers = actors, or supervisors), a strategy (one_for_one: only the failed child
is restarted), an intensity (restarts per period) and a backoff. It acts on events
handled one after another, never concurrently:

* `Terminated(child, urn, reason)`: an actor sends it as its last act, *after* it
  released its socket or worker process (actors/base.py), so the new instance
  never races the old one. Its queued fire-and-forget calls are in its mailbox
  (runtime/mailbox.py) and are handed to the new instance when it is attached.
* `Stop`: stop every child in reverse start order, also when a restart is due or
  a subtree is cooling down; nothing is restarted afterwards.
* timers it keeps itself: due restarts, liveness pings (a hung actor is abandoned:
  its `release` is called, it is unregistered and replaced).

Intensity: more than `max_restarts` restarts within `period` and the supervisor
gives up: it stops its children and reports `Terminated` to its parent. The
parent restarts an *expendable* subtree (sync, miners) after a cool-down that
doubles at each give-up (capped; reset after a stable period) and does not count
it against its own intensity, so the node heals by itself and only reports
`degraded` meanwhile. The root giving up (the core's budget exhausted) ends the
node with exit code 1.

Backoff: a child's n-th consecutive restart waits base * 2**(n-1) seconds (capped,
plus up to 25% jitter); the count resets once it has been stable for
`stable_after` seconds. The clock and RNG are injected, and the loop's step
(`handle`, `tick`) can be driven by a test without the thread or real sleeps.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import pykka

from messages.internal import Ping
from runtime.context import NodeContext

log = logging.getLogger("node.supervisor")

START_TIMEOUT = 10.0  # a child's on_start must be done within this
SILENT_DEATH_GRACE = 15.0  # a dead actor that never sent Terminated is restarted after this


# ---------------------------------------------------------------- specs


@dataclass(frozen=True)
class ChildSpec:
    """How to run one actor. `start(ctx, name)` returns a started ActorRef."""

    name: str
    start: Callable[[NodeContext, str], pykka.ActorRef[Any]]
    restart: str = "permanent"  # "permanent": always restarted; "temporary": never
    shutdown_timeout: float = 5.0


@dataclass(frozen=True)
class SupervisorPolicy:
    strategy: str = "one_for_one"
    max_restarts: int = 10
    period: float = 60.0
    backoff_base: float = 0.05
    backoff_max: float = 5.0
    stable_after: float = 30.0
    watch_interval: float = 0.25  # liveness ping period
    ping_timeout: float = 10.0
    # For children that are expendable supervisors: wait before restarting one
    # that gave up (doubling per give-up, capped), reset once it ran for `cooldown_reset`.
    cooldown_base: float = 30.0
    cooldown_max: float = 240.0
    cooldown_reset: float = 300.0

    def describe(self) -> str:
        return f"{self.max_restarts} restarts in {self.period:g}s"


@dataclass(frozen=True)
class SupervisorSpec:
    """A child that is itself a supervisor. `children(ctx)` is resolved when it is built
    (so e.g. the miner count comes from the child spec, not from the command line)."""

    name: str
    children: Callable[[NodeContext], list["Spec"]]
    policy: SupervisorPolicy = field(default_factory=SupervisorPolicy)
    expendable: bool = True  # giving up degrades the node; the parent restarts it after a cool-down
    shutdown_timeout: float = 30.0


Spec = Union[ChildSpec, SupervisorSpec]


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class Terminated:
    """Child `name` (instance `urn`) has ended and released what it held; `reason` None = a stop."""

    name: str
    urn: str
    reason: str | None


@dataclass(frozen=True)
class _Stop:
    exit_code: int
    done: threading.Event


@dataclass(frozen=True)
class _Revive:
    """Parent -> a supervisor that gave up: start your children again."""

    done: threading.Event


@dataclass(frozen=True)
class _Wake:
    pass


@dataclass(frozen=True)
class _AddChild:
    """Start one more worker child (OTP's start_child), e.g. a miner for a CPU that joined."""

    spec: ChildSpec
    done: threading.Event


@dataclass(frozen=True)
class _RemoveChild:
    """Stop a worker child for good and forget it (OTP's terminate_child + delete_child)."""

    name: str
    done: threading.Event


# ---------------------------------------------------------------- child state


@dataclass
class Child:
    spec: Spec
    sub: "Supervisor | None" = None  # for a SupervisorSpec
    ref: pykka.ActorRef[Any] | None = None
    state: str = "stopped"  # running | restarting | cooling_down | stopped | failed
    restarts: int = 0
    consecutive: int = 0
    started_at: float = 0.0
    last_restart: float | None = None  # wall-clock time, for operators
    last_error: str | None = None
    due: float | None = None  # monotonic time of a scheduled restart
    ping: Any = None  # the outstanding liveness future
    ping_sent: float = 0.0
    dead_since: float | None = None  # noticed dead without a Terminated
    giveups: int = 0  # consecutive give-ups of a subtree (for its cool-down)

    @property
    def name(self) -> str:
        return self.spec.name


# ---------------------------------------------------------------- the supervisor


class Supervisor:
    """One supervisor of the tree: `start()`, then `stop()`/`wait()`; `health()` any time."""

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
            child = Child(spec)
            if isinstance(spec, SupervisorSpec):
                child.sub = Supervisor(ctx, spec.children(ctx), spec.policy, name=spec.name, parent=self,
                                       clock=clock, wall_clock=wall_clock, rng=self.rng)
            self.children[spec.name] = child
            self._order.append(spec.name)
        self._events: queue.Queue[Any] = queue.Queue()
        self._lock = threading.RLock()  # guards the state read by health() from other threads
        self._restart_times: deque[float] = deque()
        self._loop: threading.Thread | None = None
        self.state = "stopped"  # running | gave_up | stopping | stopped
        self._stop_requested = threading.Event()
        self._finished = threading.Event()
        self.exit_code: int | None = None
        self.gave_up_reason: str | None = None
        self._owners: dict[str, Supervisor] = {}  # on the root: worker name -> its supervisor
        if parent is None:
            ctx.on_terminated = self.route
            ctx.metrics.supervision_source = self._metrics_source

    # ---------------------------------------------------------- public API

    def start(self, run_loop: bool = True) -> None:
        """Start every child in order (blocking), then the event loop; raise if one can't start.

        `run_loop=False` (tests) starts no thread: the test drives `step()` with its own clock.
        """
        failure = self._start_children()
        if failure is not None:
            self._stop_children()
            self.state = "stopped"
            self._finished.set()
            raise RuntimeError(failure)
        if run_loop:
            self._loop = threading.Thread(target=self._run, name=f"supervisor-{self.name}", daemon=True)
            self._loop.start()
        log.info("supervisor %s started %d children", self.name, len(self._order))

    def stop(self, exit_code: int = 0, timeout: float | None = 60.0) -> None:
        """Stop the children in reverse start order, on the event loop; idempotent."""
        self._stop_requested.set()
        if self.exit_code is None:
            self.exit_code = exit_code
        loop = self._loop
        if loop is None or not loop.is_alive() or loop is threading.current_thread():
            with self._lock:
                if not self._finished.is_set():
                    self._shutdown()
            return
        done = threading.Event()
        self._events.put(_Stop(exit_code, done))
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(0.1):
            if self._finished.is_set():
                return
            if deadline is not None and time.monotonic() > deadline:
                log.warning("supervisor %s did not stop within %.0fs", self.name, timeout)
                return

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
        """Start `spec` as a new child of this supervisor (on its loop); returns once it was tried.

        A child that fails to start is handled as a crash (restarted with backoff).
        Ignored if a child of that name exists or the supervisor is not running.
        """
        self._call(_AddChild(spec, threading.Event()), timeout)

    def remove_child(self, name: str, timeout: float = 60.0) -> None:
        """Stop worker child `name` (as at shutdown) and drop it from this supervisor."""
        self._call(_RemoveChild(name, threading.Event()), timeout)

    def _call(self, event: Any, timeout: float) -> None:
        if self._loop is None or not self._loop.is_alive():
            self.handle(event)  # no loop (tests drive step()) or already stopped
            return
        self.post(event)
        event.done.wait(timeout)

    # ---------------------------------------------------------- health

    def health(self) -> dict[str, Any]:
        """`status` (ok/degraded/down), `reason`, the flat `actors` list and the `supervision` tree."""
        tree = self.tree()
        actors = self.actor_entries()
        if self.parent is None and self.gave_up_reason is not None:
            status, reason = "down", self.gave_up_reason
        else:
            problems = _problems(tree)
            status = "degraded" if problems else "ok"
            reason = "; ".join(problems) if problems else None
        return {"status": status, "reason": reason, "actors": actors, "supervision": tree,
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
                              "recent": len(self._restart_times)},
                "state": self.state, "reason": self.gave_up_reason, "restarts": 0,
                "children": children,
            }

    def actor_entries(self) -> list[dict[str, Any]]:
        """One entry per actor of the tree, in start order (the /health `actors` list)."""
        entries: list[dict[str, Any]] = []
        with self._lock:
            for name in self._order:
                child = self.children[name]
                if child.sub is not None:
                    entries.extend(child.sub.actor_entries())
                    continue
                ref = child.ref
                entries.append({
                    "name": name,
                    "supervisor": self.name,
                    "urn": ref.actor_urn if ref is not None else None,
                    "alive": child.state == "running" and ref is not None and ref.is_alive(),
                    "restarts": child.restarts,
                    "last_restart": child.last_restart,
                    "last_error": child.last_error,
                    "messages": self.ctx.metrics.messages(name),
                    "queue_depth": _queue_depth(ref),
                })
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

    # ---------------------------------------------------------- the event loop

    def _run(self) -> None:
        while not self._finished.is_set():
            timeout = self._next_timeout()
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                event = None
            try:
                if event is not None:
                    self.handle(event)
                if not self._finished.is_set():
                    self.tick(self.clock())
            except Exception:  # the loop must never die
                log.exception("supervisor %s: error in its event loop", self.name)

    def _next_timeout(self) -> float:
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

    def handle(self, event: Any) -> None:
        """Process one event (the loop's step; tests call it directly)."""
        if isinstance(event, _Stop):
            if self.exit_code is None:
                self.exit_code = event.exit_code
            self._shutdown()
            event.done.set()
        elif isinstance(event, Terminated):
            self._on_terminated(event)
        elif isinstance(event, _Revive):
            self._revive()
            event.done.set()
        elif isinstance(event, _AddChild):
            self._add_child(event.spec)
            event.done.set()
        elif isinstance(event, _RemoveChild):
            self._remove_child(event.name)
            event.done.set()

    def tick(self, now: float) -> None:
        """Run what is due at `now`: restarts, cool-downs, liveness checks, stability resets."""
        if self.state != "running":
            return
        for name in list(self._order):
            if self.state != "running" or self._stop_requested.is_set():
                return
            child = self.children[name]
            if child.state in ("restarting", "cooling_down") and child.due is not None and now >= child.due:
                self._restart(child)
                continue
            if child.state != "running":
                continue
            if child.sub is not None:
                if child.giveups and now - child.started_at >= self.policy.cooldown_reset:
                    child.giveups = 0
                continue
            if child.consecutive and now - child.started_at >= self.policy.stable_after:
                child.consecutive = 0
            self._check_liveness(child, now)

    # ---------------------------------------------------------- events

    def _on_terminated(self, event: Terminated) -> None:
        child = self.children.get(event.name)
        if child is None:
            return
        if child.sub is not None:
            if child.state != "running" or self.state != "running":
                return
            self._subtree_gave_up(child, event.reason or "stopped")
            return
        if child.ref is None or child.ref.actor_urn != event.urn:
            log.debug("%s: Terminated from an old instance ignored", event.name)
            return
        if self.state != "running" or child.state != "running":
            return
        self._child_down(child, event.reason or "stopped")

    def _child_down(self, child: Child, reason: str) -> None:
        """A running worker ended (crash, stop, hang): unregister it, then restart it or give up."""
        name = child.name
        if child.ref is not None:
            self.ctx.registry.mailbox(name).detach(child.ref.actor_urn)
        self.ctx.registry.set(name, None)
        child.ref = None
        child.ping = None
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
        delay = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** (child.consecutive - 1))
        delay *= 1 + 0.25 * self.rng.random()  # jitter: restarts of many children don't align
        child.due = now + delay
        child.state = "restarting"
        log.warning("%s down (%s); restart #%d in %.2fs", name, reason, child.restarts + 1, delay)

    def _subtree_gave_up(self, child: Child, reason: str) -> None:
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
        delay = min(self.policy.cooldown_max, self.policy.cooldown_base * 2 ** child.giveups)
        delay *= 1 + 0.1 * self.rng.random()
        child.giveups += 1
        child.due = now + delay
        child.state = "cooling_down"
        log.error("supervisor %s gave up (%s); the node is degraded; restarting it in %.0fs",
                  child.name, reason, delay)

    def _count_restart(self, now: float, what: str) -> bool:
        """Record a restart in the intensity window; give up (True) when it is exceeded."""
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > self.policy.period:
            self._restart_times.popleft()
        if len(self._restart_times) <= self.policy.max_restarts:
            return False
        reason = (f"restart intensity exceeded: {len(self._restart_times)} restarts in "
                  f"{self.policy.period:g}s (limit {self.policy.max_restarts}); last: {what}")
        self._give_up(reason)
        return True

    def _give_up(self, reason: str) -> None:
        self.gave_up_reason = reason
        if self.parent is None:
            log.critical("giving up, shutting the node down: %s", reason)
            self._stop_requested.set()
            self.exit_code = 1
            self._shutdown()
            return
        log.error("supervisor %s giving up: %s", self.name, reason)
        self._stop_children()
        self.state = "gave_up"
        self.parent.post(Terminated(self.name, self.name, f"gave up: {reason}"))

    def _revive(self) -> None:
        """Parent's order after a cool-down: a fresh start with a fresh intensity window."""
        if self._stop_requested.is_set() or self.state != "gave_up":
            return
        self._restart_times.clear()
        for child in self.children.values():
            child.consecutive = 0  # a fresh start: backoff from the base again
        failure = self._start_children()
        if self._stop_requested.is_set():
            self._stop_children()
            return
        if failure is not None:
            self._give_up(f"restart failed: {failure}")
            return
        self.gave_up_reason = None
        log.info("supervisor %s restarted its children", self.name)

    # ---------------------------------------------------------- starting and stopping

    def _start_children(self) -> str | None:
        """Start every child in order; the first failure (as text), or None."""
        self.state = "running"
        for name in self._order:
            if self._stop_requested.is_set():
                return "stop requested while starting"
            child = self.children[name]
            child.due = None
            if child.sub is not None:
                try:
                    if child.sub._loop is None:
                        child.sub.start()
                    else:
                        child.sub._request_revive()
                except Exception as exc:  # noqa: BLE001
                    child.last_error = str(exc)
                    child.state = "failed"
                    return f"{name}: {exc}"
                if child.sub.state != "running":
                    child.last_error = child.sub.gave_up_reason
                    child.state = "failed"
                    return f"{name}: {child.sub.gave_up_reason}"
                child.state = "running"
                child.started_at = self.clock()
                continue
            if not self._start_worker(child):
                return f"{name} failed to start: {child.last_error}"
        return None

    def _add_child(self, spec: ChildSpec) -> None:
        if spec.name in self.children or self.state != "running" or self._stop_requested.is_set():
            return
        child = Child(spec)
        with self._lock:
            self.children[spec.name] = child
            self._order.append(spec.name)
        if self._start_worker(child):
            log.info("supervisor %s: %s added", self.name, spec.name)
            return
        child.state = "running"  # so _child_down counts it as a failure and restarts it
        self._child_down(child, child.last_error or "start failed")

    def _remove_child(self, name: str) -> None:
        child = self.children.get(name)
        if child is None or child.sub is not None:
            return
        child.due = None
        self._stop_worker(child)
        self.ctx.registry.mailbox(name).clear()
        with self._lock:
            del self.children[name]
            self._order.remove(name)
        self._root()._owners.pop(name, None)
        log.info("supervisor %s: %s removed", self.name, name)

    def _request_revive(self) -> None:
        done = threading.Event()
        self.post(_Revive(done))
        done.wait(120)

    def _start_worker(self, child: Child) -> bool:
        spec = child.spec
        assert isinstance(spec, ChildSpec)
        name = spec.name
        mailbox = self.ctx.registry.mailbox(name)
        try:
            ref = spec.start(self.ctx, name)
        except Exception as exc:  # noqa: BLE001 - a constructor that raises
            child.last_error = f"{type(exc).__name__}: {exc}"
            log.error("%s failed to start: %s", name, exc)
            child.state = "failed"
            return False
        # on_start runs in the actor's thread; an exception there stops the actor
        # without on_failure. Its first answer tells us it really started.
        try:
            ref.ask(_PING, timeout=min(START_TIMEOUT, self.policy.ping_timeout))
        except Exception as exc:  # noqa: BLE001 - ActorDeadError, Timeout
            child.last_error = child.last_error if child.state == "failed" else f"start failed: {type(exc).__name__}"
            log.error("%s did not come up: %s", name, exc)
            self._abandon(name, ref)
            child.state = "failed"
            return False
        child.ref = ref
        child.state = "running"
        child.started_at = self.clock()
        child.ping = None
        child.dead_since = None
        handed = mailbox.attach(ref)  # before anyone else can reach it: handed-over calls come first
        self.ctx.registry.set(name, ref)
        self._owner_register(name)
        if handed:
            log.info("%s: %d queued calls handed to the new instance", name, handed)
        return True

    def _restart(self, child: Child) -> None:
        child.restarts += 1
        child.last_restart = self.wall_clock()
        if child.sub is not None:
            child.due = None
            try:
                child.sub._request_revive() if child.sub._loop is not None else child.sub.start()
            except Exception as exc:  # noqa: BLE001
                log.error("supervisor %s failed to restart: %s", child.name, exc)
            if child.sub.state == "running":
                child.state = "running"
                child.started_at = self.clock()
                log.info("supervisor %s restarted", child.name)
            else:
                self._subtree_gave_up(child, child.sub.gave_up_reason or "restart failed")
            return
        if self._start_worker(child):
            log.info("%s restarted (%s)", child.name, child.ref.actor_urn if child.ref else "?")
            return
        child.state = "running"  # so _child_down treats it as a failure to count
        self._child_down(child, child.last_error or "restart failed")

    def _shutdown(self) -> None:
        """Stop every child (reverse order); no restart happens afterwards."""
        if self._finished.is_set():
            return
        self.state = "stopping"
        self._stop_children()
        self.state = "stopped"
        for name in self._order:
            child = self.children[name]
            if child.sub is None:
                self.ctx.registry.mailbox(name).clear()
        if self.parent is None:
            self.ctx.timers.close()
            log.info("all actors stopped")
        self._finished.set()

    def _stop_children(self) -> None:
        for name in reversed(self._order):
            child = self.children[name]
            child.due = None
            if child.sub is not None:
                child.sub.stop(self.exit_code or 0, timeout=(child.spec.shutdown_timeout if isinstance(child.spec, SupervisorSpec) else 30.0))
                child.state = "stopped"
                continue
            self._stop_worker(child)

    def _stop_worker(self, child: Child) -> None:
        ref, child.ref = child.ref, None
        name = child.name
        child.state = "stopped"
        child.ping = None
        self.ctx.registry.set(name, None)
        if ref is None:
            return
        self.ctx.registry.mailbox(name).detach(ref.actor_urn)
        timeout = child.spec.shutdown_timeout if isinstance(child.spec, ChildSpec) else 5.0
        try:
            ref.stop(block=True, timeout=timeout)
        except pykka.ActorDeadError:
            pass
        except pykka.Timeout:  # a hung actor is abandoned
            log.warning("%s did not stop within %.1fs; abandoned", name, timeout)
            self._abandon(name, ref)

    def _abandon(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        """Give up on an instance that won't answer: free what it holds, unregister it."""
        release = self.ctx.registry.mailbox(name).take_release(ref.actor_urn)
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

    # ---------------------------------------------------------- liveness

    def _check_liveness(self, child: Child, now: float) -> None:
        ref = child.ref
        if ref is None:
            return
        if not ref.is_alive():
            # Normally Terminated follows (after release); a death without one
            # (a BaseException, on_stop failing) is restarted after a grace period.
            if child.dead_since is None:
                child.dead_since = now
            elif now - child.dead_since > SILENT_DEATH_GRACE:
                self._child_down(child, child.last_error or "stopped without a Terminated")
            return
        if child.ping is None:
            if now - child.ping_sent >= self.policy.watch_interval:
                try:
                    child.ping = ref.ask(_PING, block=False)
                except pykka.ActorDeadError:
                    return
                child.ping_sent = now
            return
        try:
            child.ping.get(timeout=0)
            child.ping = None
        except pykka.Timeout:
            if now - child.ping_sent > self.policy.ping_timeout:
                error = f"hung: no answer to a liveness ping in {self.policy.ping_timeout:g}s"
                log.error("%s %s; abandoned and replaced", child.name, error)
                self._abandon(child.name, ref)
                self._child_down(child, error)
        except Exception:  # noqa: BLE001 - died meanwhile: its Terminated follows
            child.ping = None

    # ---------------------------------------------------------- the tree's owner table

    def _root(self) -> "Supervisor":
        sup = self
        while sup.parent is not None:
            sup = sup.parent
        return sup

    def _owner_register(self, name: str) -> None:
        # No lock: route() runs in actor threads while a supervisor may be waiting
        # for that very actor to stop; a dict item assignment is atomic.
        self._root()._owners[name] = self

    def _owner_of(self, name: str) -> "Supervisor | None":
        return self._root()._owners.get(name)

    def _find(self, name: str) -> Child | None:
        for child_name in self._order:
            child = self.children[child_name]
            if child_name == name and child.sub is None:
                return child
            if child.sub is not None:
                found = child.sub._find(name)
                if found is not None:
                    return found
        return None


_PING = Ping()


def _problems(tree: dict[str, Any]) -> list[str]:
    """What makes the tree not ok, in a few words each (the /health `reason`):
    subtrees that gave up, then `restarting: <actors>`."""
    gave_up: list[str] = []
    down: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        for child in node["children"]:
            if child["kind"] == "supervisor":
                if child["state"] in ("cooling_down", "gave_up"):
                    when = f"; restarting it in {child['restart_in']:.0f}s" if child.get("restart_in") is not None else ""
                    gave_up.append(f"{child['name']} gave up ({child.get('reason') or child.get('last_error')}){when}")
                else:
                    walk(child)
            elif child["state"] != "running":
                down.append(child["name"])

    walk(tree)
    return gave_up + (["restarting: " + ", ".join(down)] if down else [])


def _queue_depth(ref: pykka.ActorRef[Any] | None) -> int | None:
    if ref is None:
        return None
    try:
        return ref.actor_inbox.qsize()
    except Exception:  # noqa: BLE001
        return None
