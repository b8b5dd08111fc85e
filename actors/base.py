"""What every actor of the node shares: a name, progress stamps, owned threads, timers.

Pykka has no supervision and no timers; this base class supplies the hooks the
supervisor relies on, with Pykka's public API only:

* calls arrive as plain messages through the actor's mailbox (runtime/mailbox.py),
  carrying the interface function to run, so a crash costs only the message that
  caused it and only declared methods can be called;
* every message is stamped when it starts and ends (runtime/instances.py): the
  supervisor tells busy from hung by how long the *current* message has run
  against `message_budget`, never by a ping queued behind real work;
* threads the actor needs run as `OwnedThread`s (`spawn`): one that dies crashes
  the actor, so the supervisor restarts it, counted and visible;
* timers are entries in the node's one timer service;
* once the actor has released what it holds (socket, worker process) after a
  failure or a stop, it tells the supervisor `Terminated` as its very last act, so
  a new instance never races it.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, TypeVar

import pykka

from runtime.context import NodeContext
from runtime.instances import InstanceRecord
from runtime.interfaces import NodeActorApi, declared_methods
from runtime.mailbox import Call, Deferred, Tick
from runtime.threads import Backoff, OwnedThread, RepeatLog, ThreadDied, current_thread
from runtime.timers import TimerHandle
from messages.internal import Attached, Ping


P = TypeVar("P")
T = TypeVar("T")

DEFAULT_MESSAGE_BUDGET = 10.0


@dataclass(frozen=True, slots=True)
class OwnedThreadDied:
    """An owned thread -> its actor: `thread` ended with `error`; the actor fails with it."""

    thread: str
    error: str


class NodeActor(pykka.ThreadingActor, NodeActorApi):
    """Base of NetworkIO, GossipManager, ChainKeeper, ConsensusRunner, MinerActor."""

    # Abandoned (hung) actors must not keep the process alive at exit.
    use_daemon_thread = True
    # Reached through a runtime.mailbox.SupervisedProxy (plain Call/Deferred messages).
    takes_mailbox_calls = True
    # The longest one message may run before this actor counts as hung (seconds).
    # Documented per actor in docs/supervision.md (message budgets).
    message_budget: ClassVar[float] = DEFAULT_MESSAGE_BUDGET
    # True for an actor that owns something a second instance must never share (the
    # store, a listening socket): it is never duplicated; a hang ends the node.
    owns_shared_state: ClassVar[bool] = False

    def __init__(self, ctx: NodeContext, name: str) -> None:
        super().__init__()
        self.ctx = ctx
        self.name = name
        self.log: logging.Logger | ActorLog = ActorLog(logging.getLogger(f"node.{name}"), name)
        self._timers: list[TimerHandle] = []
        self._mailbox = ctx.registry.mailbox(name)
        budget = dict(ctx.config.message_budgets).get(name, self.message_budget)
        self.instance_record = InstanceRecord(name, self.actor_urn, budget)
        self._mailbox.register(self.instance_record)
        # Set when this instance is abandoned or released: a stall injected for a test ends then.
        self._interrupted = threading.Event()
        # If this instance ever hangs, the supervisor abandons it and frees what it holds.
        self._mailbox.on_release(self.actor_urn, self._release_abandoned)
        self._handling: Deferred | None = None  # the call being handled (to know what crashed us)
        self._repeats = RepeatLog(self.log)  # repeated conditions: one log line per 10 s, with a count

    # ---------------------------------------------------------- protocol

    def ping(self) -> str:
        """Start check: answering proves on_start finished and the loop runs."""
        return "pong"

    def crash(self, reason: str = "fault injection") -> None:
        """Fail the way a real bug would: raise inside the actor (call with defer)."""
        raise RuntimeError(f"{self.name}: {reason}")

    def stall(self, seconds: float) -> None:
        """Fault injection: stay busy in this message for `seconds` (a hang when over budget).

        Waits on an event rather than sleeping blindly, so an instance that was
        abandoned or stopped lets go of its thread at once.
        """
        self._interrupted.wait(max(0.0, float(seconds)))

    def queue_depth(self) -> int:
        """Messages waiting in the inbox (safe to read from any thread)."""
        return self.actor_inbox.qsize()  # type: ignore[attr-defined]

    def health_details(self) -> dict[str, Any]:
        """Extra fields for this actor's /health entry (actors with something to say override it)."""
        return {}

    # ---------------------------------------------------------- helpers

    def ask(self, proxy: P | None, call: Callable[[P], "pykka.Future[T]"], *, timeout: float) -> T | None:
        """`call(proxy)` and wait at most `timeout`; None if that actor is down, restarting or slow.

        Callers treat None as "can't know now" and carry on: an actor must not
        fail because another one is restarting. The other actor's own errors are
        not hidden: they are raised here, as from any ask.
        """
        if proxy is None:
            return None
        try:
            return call(proxy).get(timeout=timeout)
        except pykka.Timeout:
            self.log.warning("%s did not answer within %.1fs", _target_name(proxy), timeout)
        except pykka.ActorDeadError:
            pass
        return None

    def every(self, interval: float, method: Callable[..., Any], *args: Any) -> TimerHandle:
        """Call our own `method(*args)` (e.g. `self.keep_alive`) as a message every
        `interval` seconds, until the returned handle is cancelled or this instance ends."""
        handle = self.ctx.timers.every(interval, self._tick_sender(method, args))
        self._timers.append(handle)
        return handle

    def after(self, delay: float, method: Callable[..., Any], *args: Any) -> TimerHandle:
        """Call our own `method(*args)` as a message once, `delay` seconds from now
        (cancelled with the handle or when this instance ends)."""
        handle = self.ctx.timers.after(delay, self._tick_sender(method, args))
        self._timers = [h for h in self._timers if not h.cancelled]
        self._timers.append(handle)
        return handle

    def tell_self(self, method: Callable[..., Any], *args: Any) -> None:
        """Queue a call of our own public `method(*args)` behind what is already in the inbox."""
        self.actor_ref.tell(self._tick(method, args))

    def spawn(self, role: str, target: Callable[..., None], *args: Any) -> OwnedThread:
        """Start `target(*args)` on a thread this instance owns, named `<actor>.<role>`.

        If it raises, this actor fails with ThreadDied (and is restarted): a loop
        that dies must never leave a healthy-looking actor behind. The loop calls
        `runtime.threads.checkpoint()` once per turn so a fault can be injected.
        """
        ref = self.actor_ref

        def died(name: str, exc: BaseException) -> None:
            self.log.error("thread %s died: %s: %s", name, type(exc).__name__, exc)
            ref.tell(OwnedThreadDied(name, f"{type(exc).__name__}: {exc}"))

        thread = OwnedThread(self.name, role, target, *args, on_death=died)
        self.instance_record.add_thread(thread)
        return thread.start()

    def transient_error(self, call: str, exc: OSError, backoff: Backoff, stopping: threading.Event) -> None:
        """In one of our owned threads, `call` failed with a transient OS error (runtime/threads.py
        `is_transient`): count it (on the thread and in the metrics), log it at most once per
        10 s with a count, and wait the next backoff step (or until `stopping`)."""
        owned = current_thread()
        name = owned.name if owned is not None else self.name
        if owned is not None:
            owned.count_transient()
        self.ctx.metrics.thread_transient_errors.labels(thread=name).inc()
        self._repeats.report(f"{name}:{call}:{exc.errno}", logging.WARNING, "%s: %s failed (%s); retrying with backoff",
                             name, call, exc)
        stopping.wait(backoff.next())

    def _tick_sender(self, method: Callable[..., Any], args: tuple[Any, ...]) -> Callable[[], None]:
        """What the timer thread runs: tell us a Tick of `method`, one of our own public methods."""
        ref = self.actor_ref
        message = self._tick(method, args)
        return lambda: ref.tell(message)

    def _tick(self, method: Callable[..., Any], args: tuple[Any, ...]) -> Tick:
        """A Tick carrying `method`'s function. It takes the bound method itself, so a
        renamed or foreign method fails here, where it is set, not later on another thread."""
        function = getattr(method, "__func__", None)
        if getattr(method, "__self__", None) is not self or function is None or method.__name__.startswith("_"):
            raise ValueError(f"a timer calls a public method of this actor, not {method!r}")
        return Tick(function, args)

    def _cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    # ---------------------------------------------------------- pykka hooks

    def on_receive(self, message: Any) -> Any:
        self.ctx.metrics.count_message(self.name)
        record = self.instance_record
        record.begin(_describe(message))
        try:
            return self._handle(message)
        finally:
            record.end()

    def _handle(self, message: Any) -> Any:
        if isinstance(message, Ping):
            return "pong"
        if isinstance(message, Deferred):
            if not self._mailbox.begin(message.seq, self.actor_urn):
                return None  # we were replaced (hung, abandoned): our successor has it
            self._handling = message
            result = self._invoke(message.method, message.args, message.kwargs)
            self._handling = None
            return result
        if isinstance(message, Call):
            return self._invoke(message.method, message.args, message.kwargs)
        if isinstance(message, Tick):
            if not self._mailbox.is_current(self.actor_urn):
                return None
            if getattr(type(self), message.method.__name__, None) is not message.method:
                raise AttributeError(f"{type(self).__name__} has no method {message.method.__qualname__}")
            return message.method(self, *message.args)
        if isinstance(message, Attached):
            if self._mailbox.is_current(self.actor_urn):
                self.on_attached()
            return None
        if isinstance(message, OwnedThreadDied):
            if self._mailbox.is_current(self.actor_urn):
                raise ThreadDied(message.thread, message.error)
            return None
        return super().on_receive(message)

    def _invoke(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run a call: only a method one of our interfaces declares (runtime/interfaces.py)."""
        name = getattr(function, "__name__", "")
        if declared_methods(type(self)).get(name) is not function:
            raise AttributeError(f"{type(self).__name__} does not declare {getattr(function, '__qualname__', function)!r}")
        return getattr(self, name)(*args, **kwargs)

    def on_stop(self) -> None:
        self._interrupted.set()
        self._cancel_timers()
        try:
            self.release()
        finally:
            self._terminated(None)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._interrupted.set()
        self._cancel_timers()
        try:
            self.release()
        finally:
            self.ctx.metrics.actor_errors.labels(actor=self.name).inc()
            if self._handling is not None:
                # Queued copies of the call that crashed us would crash the new instance too.
                dropped = self._mailbox.drop_copies(self._handling)
                if dropped:
                    self.log.warning("dropped %d queued copies of the call that crashed %s", dropped, self.name)
            reason = f"{type(exception_value).__name__}: {exception_value}" if exception_value is not None else "failed"
            self._terminated(reason)

    def _terminated(self, reason: str | None) -> None:
        """Our last act, after release(): tell the supervisor it may start a successor."""
        self._mailbox.forget(self.actor_urn)
        self.ctx.on_terminated(self.name, self.actor_urn, reason)

    def on_attached(self) -> None:
        """Hook: this instance is now the one the registry lists (after on_start and the
        supervisor's start check). Work whose answers must come back to us starts here."""

    def _release_abandoned(self) -> None:
        """The supervisor gave up on this instance (hung): let go of any stall, then release."""
        self._interrupted.set()
        self.release()

    def release(self) -> None:
        """Free what the actor holds (sockets, processes, files). Must be idempotent."""


class ActorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """An actor's logger: every record carries `actor` (a field of the JSON log), merged with
    the call's own `extra=` fields (height, hash, peer) rather than replacing them."""

    def __init__(self, logger: logging.Logger, actor: str) -> None:
        super().__init__(logger, {"actor": actor})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def _target_name(proxy: Any) -> str:
    """The asked actor's class name, for a log line."""
    try:
        return str(proxy.actor_ref.actor_class.__name__)
    except AttributeError:
        return "actor"


def _describe(message: Any) -> str:
    """What a message is, in a few words, for /health's `current` and a hang's log line."""
    method = getattr(message, "method", None)
    if method is not None and hasattr(method, "__qualname__"):
        return str(method.__name__)
    return type(message).__name__
