"""What every actor of the node shares: a name, liveness pings, counters, timers.

Pykka has no supervision and no timers (DESIGN.md); this base class supplies the
hooks the supervisor relies on, with Pykka's public API only: `Ping` answers
liveness checks; calls arrive as plain messages through the actor's mailbox
(runtime/mailbox.py), so a crash costs only the message that caused it; timers
are entries in the node's one timer service; and once the actor has released
what it holds (socket, worker process) after a failure or a stop, it tells the
supervisor `Terminated` as its very last act, so a new instance never races it.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

import pykka

from runtime.context import NodeContext
from runtime.interfaces import NodeActorApi
from runtime.mailbox import Call, Deferred, Tick
from runtime.timers import TimerHandle
from messages.internal import Ping


P = TypeVar("P")
T = TypeVar("T")


class NodeActor(pykka.ThreadingActor, NodeActorApi):
    """Base of NetworkIO, GossipManager, ChainKeeper, ConsensusRunner, MinerActor."""

    # Abandoned (hung) actors must not keep the process alive at exit.
    use_daemon_thread = True
    # Reached through a runtime.mailbox.SupervisedProxy (plain Call/Deferred messages).
    takes_mailbox_calls = True

    def __init__(self, ctx: NodeContext, name: str) -> None:
        super().__init__()
        self.ctx = ctx
        self.name = name
        self.log = logging.getLogger(f"node.{name}")
        self._timers: list[TimerHandle] = []
        self._mailbox = ctx.registry.mailbox(name)
        # If this instance ever hangs, the supervisor abandons it and frees what it holds.
        self._mailbox.on_release(self.actor_urn, self.release)
        self._handling: Deferred | None = None  # the call being handled (to know what crashed us)

    # ---------------------------------------------------------- protocol

    def ping(self) -> str:
        """Liveness check: answering proves the actor's loop is not stuck."""
        return "pong"

    def crash(self, reason: str = "fault injection") -> None:
        """Fail the way a real bug would: raise inside the actor (call with defer)."""
        raise RuntimeError(f"{self.name}: {reason}")

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

    def _tick_sender(self, method: Callable[..., Any], args: tuple[Any, ...]) -> Callable[[], None]:
        """What the timer thread runs: tell us a Tick naming `method`, one of our own public methods.

        Timers take the bound method itself, so a renamed method fails here, where
        the timer is set, not later on the timer thread.
        """
        if getattr(method, "__self__", None) is not self or method.__name__.startswith("_"):
            raise ValueError(f"a timer calls a public method of this actor, not {method!r}")
        ref = self.actor_ref
        message = Tick(method.__name__, args)
        return lambda: ref.tell(message)

    def _cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    # ---------------------------------------------------------- pykka hooks

    def on_receive(self, message: Any) -> Any:
        self.ctx.metrics.count_message(self.name)
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
            return self._invoke(message.method, message.args, {})
        return super().on_receive(message)

    def _invoke(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if method.startswith("_"):
            raise AttributeError(f"{type(self).__name__}.{method} is private")
        return getattr(self, method)(*args, **kwargs)

    def on_stop(self) -> None:
        self._cancel_timers()
        try:
            self.release()
        finally:
            self._terminated(None)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
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

    def release(self) -> None:
        """Free what the actor holds (sockets, processes, files). Must be idempotent."""


def _target_name(proxy: Any) -> str:
    """The asked actor's class name, for a log line."""
    try:
        return str(proxy.actor_ref.actor_class.__name__)
    except AttributeError:
        return "actor"
