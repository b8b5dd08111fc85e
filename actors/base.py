"""What every actor of the node shares: a name, liveness pings, counters, timers.

Pykka has no supervision and no timers (DESIGN.md); this base class supplies the
hooks the supervisor relies on: `ping()` answers liveness checks, unhandled
failures are reported to the supervisor, and timers are threads that `tell` the
actor and die with it.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, TypeVar

import pykka
from pykka.messages import ProxyCall

from runtime.context import NodeContext
from runtime.interfaces import NodeActorApi
from messages.internal import Ping


P = TypeVar("P")
T = TypeVar("T")

MAX_HANDOVER = 5000  # queued calls handed to a restarted instance, at most


class Ticker:
    """Calls `callback` every `interval` seconds on a daemon thread until cancelled.

    The callback should only *send* to an actor (defer/tell); a dead actor ends the
    ticker quietly.
    """

    def __init__(self, interval: float, callback: Callable[[], Any], name: str) -> None:
        self._interval = interval
        self._callback = callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Ticker":
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._callback()
            except pykka.ActorDeadError:
                return


class NodeActor(pykka.ThreadingActor, NodeActorApi):
    """Base of NetworkIO, GossipManager, ChainKeeper, ConsensusRunner, MinerActor."""

    # Abandoned (hung) actors must not keep the process alive at exit.
    use_daemon_thread = True

    def __init__(self, ctx: NodeContext, name: str) -> None:
        super().__init__()
        self.ctx = ctx
        self.name = name
        self.log = logging.getLogger(f"node.{name}")
        self._tickers: list[Ticker] = []
        self._messages = ctx.metrics.actor_messages.labels(actor=name)
        self._handling: Any = None  # the message being handled (to know what crashed us)

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

    def every(self, interval: float, method: str, *args: Any) -> None:
        """Call our own `method(*args)` as a message every `interval` seconds."""
        proxy_method = getattr(self.actor_ref.proxy(), method)
        ticker = Ticker(interval, lambda: proxy_method.defer(*args), f"{self.name}-{method}-timer")
        self._tickers.append(ticker.start())

    def _cancel_timers(self) -> None:
        for ticker in self._tickers:
            ticker.cancel()
        self._tickers.clear()

    # ---------------------------------------------------------- pykka hooks

    def _handle_receive(self, message: Any) -> Any:
        # Counted here so that proxy calls (our public protocol) count too.
        self._messages.inc()
        self._handling = message
        return super()._handle_receive(message)

    def on_stop(self) -> None:
        self._cancel_timers()
        self.release()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._cancel_timers()
        try:
            self.release()
        finally:
            self.ctx.metrics.actor_errors.labels(actor=self.name).inc()
            self.ctx.report_failure(self.name, exception_value, self._take_queued_tells())

    def _take_queued_tells(self) -> list[Any]:
        """The fire-and-forget calls still queued behind the one that crashed us.

        Pykka would drop them with the actor; the supervisor hands them to the
        restarted instance instead, so a crash costs only the message that caused
        it. The actor is already marked stopped, so nothing new can be queued.
        Asks (with a caller waiting) stay, and get ActorDeadError as usual.
        """
        tells: list[Any] = []
        others: list[Any] = []
        culprit = self._handling
        while not self.actor_inbox.empty():
            envelope = self.actor_inbox.get()
            if envelope.reply_to is None and _same_call(envelope.message, culprit):
                self.log.warning("dropped a queued copy of the call that crashed %s", self.name)
                continue  # the same poison would crash the new instance too
            if envelope.reply_to is None and isinstance(envelope.message, ProxyCall) and len(tells) < MAX_HANDOVER:
                tells.append(envelope.message)
            else:
                others.append(envelope)
        for envelope in others:
            self.actor_inbox.put(envelope)
        return tells

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Ping):
            return "pong"
        return super().on_receive(message)

    def release(self) -> None:
        """Free what the actor holds (sockets, processes, files). Must be idempotent."""


def _target_name(proxy: Any) -> str:
    """The asked actor's class name, for a log line."""
    try:
        return str(proxy.actor_ref.actor_class.__name__)
    except AttributeError:
        return "actor"


def _same_call(message: Any, culprit: Any) -> bool:
    """True when `message` is the same proxy call (method and arguments) as `culprit`."""
    if not isinstance(message, ProxyCall) or not isinstance(culprit, ProxyCall):
        return False
    try:
        return bool(message == culprit)
    except Exception:  # noqa: BLE001 - arguments whose comparison fails are not "the same"
        return False
