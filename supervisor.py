"""The supervisor: starts the node's actors, watches them, restarts them.

Modelled on an Erlang/OTP supervisor:

* **Child specs** name each child, how to start it, whether to restart it and how
  long to wait for it to stop. Children start in order (storage, network, ...,
  miners last) and stop in reverse order.
* **One-for-one**: only the failed child is restarted. Its new reference goes into
  the registry, so everyone else reaches the new instance.
* **Detection** both ways Pykka allows: `on_failure` reports a crash at once, and a
  watchdog thread notices actors that stopped silently (a failing `on_start`) and,
  with a liveness ping and a timeout, actors that hang. A hung actor can't be
  killed, only replaced and abandoned.
* **Backoff**: a child that keeps failing waits base * 2**(n-1) seconds (capped, with
  jitter) before its n-th consecutive restart; the count resets once it has been
  stable for `stable_after` seconds.
* **Intensity**: more than `max_restarts` restarts within `period` seconds means
  something is badly wrong: the supervisor stops every child and the node exits
  non-zero with a clear log line. Our default is 10 in 60 s: more tolerant than
  OTP's 1 in 5 s because a flood or a flaky disk can legitimately cost a few
  restarts, but a crash loop still ends the node within a minute.

Clock and RNG are injectable so supervision tests are deterministic.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import pykka

from runtime.context import NodeContext
from messages.internal import Ping

log = logging.getLogger("node.supervisor")


@dataclass(frozen=True)
class ChildSpec:
    """How to run one child. `start(ctx, name)` returns a started ActorRef."""

    name: str
    start: Callable[[NodeContext, str], pykka.ActorRef[Any]]
    restart: str = "permanent"  # "permanent": always restarted; "temporary": never
    shutdown_timeout: float = 5.0


@dataclass(frozen=True)
class SupervisorPolicy:
    max_restarts: int = 10
    period: float = 60.0
    backoff_base: float = 0.05
    backoff_max: float = 5.0
    stable_after: float = 30.0
    watch_interval: float = 0.25
    ping_timeout: float = 10.0


@dataclass
class ChildState:
    spec: ChildSpec
    ref: pykka.ActorRef[Any] | None = None
    restarts: int = 0
    consecutive: int = 0
    started_at: float = 0.0
    last_restart: float | None = None  # wall-clock time, for operators
    last_error: str | None = None
    restart_due: float | None = None  # monotonic time of a scheduled restart
    ping: Any = None  # the outstanding liveness future
    handover: list[Any] = field(default_factory=list)  # calls queued when it crashed
    ping_sent: float = 0.0


class Supervisor:
    def __init__(
        self,
        ctx: NodeContext,
        specs: list[ChildSpec],
        policy: SupervisorPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.ctx = ctx
        self.policy = policy or SupervisorPolicy()
        self.clock = clock
        self.wall_clock = wall_clock
        self.rng = rng or random.Random()
        self.children: dict[str, ChildState] = {spec.name: ChildState(spec) for spec in specs}
        self._order = [spec.name for spec in specs]
        self._lock = threading.RLock()
        self._restart_times: deque[float] = deque()
        self._wake = threading.Event()
        self._done = threading.Event()  # stopping has begun: no more restarts
        self._finished = threading.Event()  # every child has been stopped
        self._watchdog: threading.Thread | None = None
        self.exit_code: int | None = None
        self.gave_up_reason: str | None = None
        ctx.report_failure = self.report_failure

    # ---------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start every child in order; raise if one can't start at all."""
        for name in self._order:
            child = self.children[name]
            self._start_child(child)
            if child.ref is None:
                self.stop()
                raise RuntimeError(f"{name} failed to start: {child.last_error}")
        self._watchdog = threading.Thread(target=self._watch, name="supervisor-watchdog", daemon=True)
        self._watchdog.start()
        log.info("started %d actors", len(self._order))

    def stop(self, exit_code: int = 0) -> None:
        """Stop the children in reverse start order; idempotent."""
        with self._lock:
            if self._done.is_set():
                return
            if self.exit_code is None:
                self.exit_code = exit_code
            self._done.set()
            self._wake.set()
        for name in reversed(self._order):
            child = self.children[name]
            self._stop_ref(child)
        log.info("all actors stopped")
        self._finished.set()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until every child has been stopped; the exit code (None on timeout)."""
        if not self._finished.wait(timeout):
            return None
        return self.exit_code

    @property
    def stopped(self) -> bool:
        return self._done.is_set()

    # ---------------------------------------------------------- reports

    def report_failure(self, name: str, exc: BaseException | None, queued: list[Any] | None = None) -> None:
        """Called from an actor's `on_failure`: note the error, keep the calls it had
        queued for its next instance, restart it soon."""
        with self._lock:
            child = self.children.get(name)
            if child is not None:
                child.last_error = f"{type(exc).__name__}: {exc}" if exc is not None else "failed"
                if queued:
                    child.handover = list(queued)
        log.error("%s crashed: %s", name, exc)
        self._wake.set()

    def health(self) -> dict[str, Any]:
        """Per child: alive, restarts, last restart time, last error, URN, queue depth."""
        with self._lock:
            actors = []
            for name in self._order:
                child = self.children[name]
                ref = child.ref
                alive = ref is not None and ref.is_alive() and child.restart_due is None
                entry: dict[str, Any] = {
                    "name": name,
                    "urn": ref.actor_urn if ref is not None else None,
                    "alive": alive,
                    "restarts": child.restarts,
                    "last_restart": child.last_restart,
                    "last_error": child.last_error,
                    "messages": _counter_value(self.ctx.metrics.actor_messages, name),
                    "queue_depth": _queue_depth(ref),
                }
                actors.append(entry)
            if self.gave_up_reason is not None:
                status = "down"
            elif all(a["alive"] for a in actors):
                status = "ok"
            else:
                status = "degraded"
            return {"status": status, "actors": actors, "gave_up": self.gave_up_reason}

    def ref(self, name: str) -> pykka.ActorRef[Any] | None:
        return self.children[name].ref

    # ---------------------------------------------------------- internals

    def _start_child(self, child: ChildState) -> None:
        name = child.spec.name
        try:
            ref = child.spec.start(self.ctx, name)
        except Exception as exc:  # a constructor that raises
            child.last_error = f"{type(exc).__name__}: {exc}"
            log.error("%s failed to start: %s", name, exc)
            child.ref = None
            return
        # on_start runs in the actor's thread; an exception there stops the actor
        # without on_failure. Wait for its first answer to know it really started.
        try:
            ref.ask(_PING, timeout=self.policy.ping_timeout)
        except Exception as exc:  # ActorDeadError, Timeout
            child.last_error = child.last_error or f"start failed: {type(exc).__name__}"
            log.error("%s did not come up: %s", name, exc)
            self._abandon(ref)
            child.ref = None
            self.ctx.registry.set(name, None)
            return
        child.ref = ref
        child.started_at = self.clock()
        child.restart_due = None
        child.ping = None
        self.ctx.registry.set(name, ref)
        self.ctx.metrics.actor_up.labels(actor=name).set(1)

    def _stop_ref(self, child: ChildState) -> None:
        ref, child.ref = child.ref, None
        self.ctx.registry.set(child.spec.name, None)
        self.ctx.metrics.actor_up.labels(actor=child.spec.name).set(0)
        if ref is None:
            return
        try:
            ref.stop(block=True, timeout=child.spec.shutdown_timeout)
        except pykka.ActorDeadError:
            pass
        except Exception:  # Timeout: a hung actor is abandoned
            log.warning("%s did not stop within %.1fs; abandoned", child.spec.name, child.spec.shutdown_timeout)
            self._abandon(ref)

    def _abandon(self, ref: pykka.ActorRef[Any]) -> None:
        """Give up on an actor that won't answer: let it release what it holds, unregister it."""
        actor_weakref = getattr(ref, "_actor_weakref", None)
        actor = actor_weakref() if actor_weakref is not None else None
        release = getattr(actor, "release", None)
        if callable(release):
            try:
                release()
            except Exception as exc:  # noqa: BLE001 - best effort on a broken actor
                log.debug("release of abandoned %s failed: %s", ref, exc)
        try:
            ref.stop(block=False)
        except pykka.ActorDeadError:
            pass
        pykka.ActorRegistry.unregister(ref)

    def _watch(self) -> None:
        while not self._done.is_set():
            self._wake.wait(self.policy.watch_interval)
            self._wake.clear()
            if self._done.is_set():
                return
            try:
                self._check_children()
            except Exception:  # the watchdog must never die
                log.exception("supervisor watchdog error")

    def _check_children(self) -> None:
        now = self.clock()
        for name in self._order:
            if self._done.is_set():
                return
            child = self.children[name]
            if child.restart_due is not None:
                if now >= child.restart_due:
                    self._restart(child)
                continue
            ref = child.ref
            if ref is None or not ref.is_alive():
                self._schedule_restart(child, now, child.last_error or "actor stopped")
                continue
            if child.consecutive and now - child.started_at >= self.policy.stable_after:
                child.consecutive = 0
            self._check_liveness(child, now)

    def _check_liveness(self, child: ChildState, now: float) -> None:
        if child.ping is None:
            child.ping = child.ref.ask(_PING, block=False) if child.ref else None
            child.ping_sent = now
            return
        try:
            child.ping.get(timeout=0)
            child.ping = None
        except pykka.Timeout:
            if now - child.ping_sent > self.policy.ping_timeout:
                error = f"hung: no answer to a liveness ping in {self.policy.ping_timeout:.1f}s"
                child.last_error = error
                log.error("%s %s", child.spec.name, error)
                if child.ref is not None:
                    self._abandon(child.ref)
                self._schedule_restart(child, now, error)
        except Exception:
            child.ping = None  # died meanwhile: the next pass sees it

    def _schedule_restart(self, child: ChildState, now: float, reason: str) -> None:
        name = child.spec.name
        self.ctx.registry.set(name, None)
        self.ctx.metrics.actor_up.labels(actor=name).set(0)
        child.ref = None
        child.ping = None
        if child.spec.restart != "permanent":
            log.info("%s stopped (%s); not restarted (%s)", name, reason, child.spec.restart)
            child.restart_due = float("inf")
            return
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > self.policy.period:
            self._restart_times.popleft()
        if len(self._restart_times) > self.policy.max_restarts:
            self.gave_up_reason = (
                f"restart intensity exceeded: {len(self._restart_times)} restarts in "
                f"{self.policy.period:.0f}s (limit {self.policy.max_restarts}); last: {name}: {reason}"
            )
            log.critical("giving up, shutting the node down: %s", self.gave_up_reason)
            threading.Thread(target=self.stop, args=(1,), name="supervisor-giveup", daemon=True).start()
            child.restart_due = float("inf")
            return
        child.consecutive += 1
        delay = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** (child.consecutive - 1))
        delay *= 1 + 0.25 * self.rng.random()  # jitter: restarts of many children don't align
        child.restart_due = now + delay
        log.warning("%s down (%s); restart #%d in %.2fs", name, reason, child.restarts + 1, delay)

    def _restart(self, child: ChildState) -> None:
        child.restarts += 1
        child.last_restart = self.wall_clock()
        self.ctx.metrics.actor_restarts.labels(actor=child.spec.name).inc()
        self._start_child(child)
        if child.ref is None:
            self._schedule_restart(child, self.clock(), child.last_error or "restart failed")
            return
        log.info("%s restarted (%s)", child.spec.name, child.ref.actor_urn)
        with self._lock:
            handover, child.handover = child.handover, []
        for message in handover:  # what the crashed instance had not handled yet
            try:
                child.ref.tell(message)
            except pykka.ActorDeadError:
                break
        if handover:
            log.info("%s: %d queued calls handed to the new instance", child.spec.name, len(handover))


_PING = Ping()


def _counter_value(counter: Any, actor: str) -> float:
    try:
        return float(counter.labels(actor=actor)._value.get())
    except Exception:  # noqa: BLE001
        return 0.0


def _queue_depth(ref: pykka.ActorRef[Any] | None) -> int | None:
    inbox = getattr(ref, "actor_inbox", None)
    try:
        return inbox.qsize() if inbox is not None else None
    except Exception:  # noqa: BLE001
        return None
