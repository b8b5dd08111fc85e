"""How calls reach a supervised actor, so that a crash costs only the message that caused it.

Pykka drops the messages still queued for an actor that failed. A supervised
actor is therefore reached through its `Mailbox` (one per child name, kept by the
registry across restarts), and only with Pykka's public API:

* a fire-and-forget call (`proxy.method.defer(...)`) is written to the mailbox's
  journal, then told to the current instance as a plain `Deferred(seq, ...)`
  message; the instance calls `begin(seq)` when it starts handling it, which drops
  that entry and every earlier one from the journal;
* so when an instance dies, the journal holds exactly the calls it had queued but
  not started (never the one that crashed it); the supervisor `attach`es the new
  instance, which re-tells them, in order, before any new call;
* an ask (`proxy.method(...)`) is a plain `Call` asked of the instance: the caller
  waits on it, so it is never replayed (a dead instance answers ActorDeadError).

`SupervisedProxy` gives callers the same shape as a Pykka proxy (`p.m(...)` is a
future, `p.m.defer(...)` is fire-and-forget).
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import pykka

log = logging.getLogger("node.mailbox")

MAX_JOURNAL = 5000  # unstarted fire-and-forget calls kept per actor, at most


@dataclass(frozen=True, slots=True)
class Deferred:
    """A fire-and-forget call of `method(*args, **kwargs)`, number `seq` in its mailbox."""

    seq: int
    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Call:
    """An ask: the caller waits for `method(*args, **kwargs)`'s result."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Tick:
    """A timer firing: `method(*args)` on the actor that set the timer (never replayed)."""

    method: str
    args: tuple[Any, ...] = ()


class Mailbox:
    """The current instance of one supervised actor and its unstarted fire-and-forget calls."""

    def __init__(self, name: str, limit: int = MAX_JOURNAL) -> None:
        self.name = name
        self._limit = limit
        self._lock = threading.Lock()
        self._ref: pykka.ActorRef[Any] | None = None
        self._journal: OrderedDict[int, Deferred] = OrderedDict()
        self._next_seq = 0
        self._dropped = 0
        self._releases: dict[str, Callable[[], None]] = {}

    # ---------------------------------------------------------- senders

    @property
    def ref(self) -> pykka.ActorRef[Any] | None:
        return self._ref

    def defer(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Journal and tell; raises ActorDeadError when no instance is up (nothing kept then)."""
        with self._lock:
            ref = self._ref
            if ref is None:
                raise pykka.ActorDeadError(f"{self.name} is not running")
            seq = self._next_seq
            self._next_seq += 1
            message = Deferred(seq, method, args, kwargs)
            self._journal[seq] = message
            if len(self._journal) > self._limit:
                self._journal.popitem(last=False)  # bounded: the oldest unstarted call is lost
                self._dropped += 1
            try:
                # Under the lock: journal order is inbox order, also across sender threads.
                ref.tell(message)
            except pykka.ActorDeadError:
                self._journal.pop(seq, None)
                raise

    def ask(self, method: str, *args: Any, **kwargs: Any) -> pykka.Future[Any]:
        ref = self._ref
        if ref is None:
            raise pykka.ActorDeadError(f"{self.name} is not running")
        return ref.ask(Call(method, args, kwargs), block=False)

    # ---------------------------------------------------------- the actor

    def begin(self, seq: int, urn: str) -> bool:
        """The instance `urn` starts handling call `seq`: forget it and everything before.

        False for an instance that is no longer the current one (a hung instance that
        was replaced and woke up): it must not run calls handed to its successor.
        """
        with self._lock:
            ref = self._ref
            if ref is None or ref.actor_urn != urn:
                return False
            while self._journal:
                first = next(iter(self._journal))
                if first > seq:
                    break
                self._journal.popitem(last=False)
            return True

    def drop_copies(self, culprit: Deferred) -> int:
        """Forget queued calls identical to `culprit` (same method and arguments): the
        poison that crashed an instance must not crash its successor. How many were dropped."""
        with self._lock:
            copies = [seq for seq, call in self._journal.items() if _same_call(call, culprit)]
            for seq in copies:
                del self._journal[seq]
            return len(copies)

    def is_current(self, urn: str) -> bool:
        ref = self._ref
        return ref is None or ref.actor_urn == urn

    def on_release(self, urn: str, release: Callable[[], None]) -> None:
        """An instance tells how to free what it holds, in case it hangs and must be abandoned."""
        with self._lock:
            self._releases[urn] = release

    # ---------------------------------------------------------- the supervisor

    def attach(self, ref: pykka.ActorRef[Any]) -> int:
        """Make `ref` the current instance and hand it every unstarted call, in order."""
        with self._lock:
            self._ref = ref
            handed = 0
            for message in list(self._journal.values()):
                try:
                    ref.tell(message)
                    handed += 1
                except pykka.ActorDeadError:
                    break  # died already: the journal stays for the next instance
            return handed

    def detach(self, urn: str | None = None) -> None:
        """No current instance (it died or is being stopped); the journal is kept."""
        with self._lock:
            if urn is None or (self._ref is not None and self._ref.actor_urn == urn):
                self._ref = None

    def take_release(self, urn: str) -> Callable[[], None] | None:
        with self._lock:
            return self._releases.pop(urn, None)

    def forget(self, urn: str) -> None:
        with self._lock:
            self._releases.pop(urn, None)

    def clear(self) -> None:
        """Shutdown: nothing will be handed over any more."""
        with self._lock:
            self._ref = None
            self._journal.clear()
            self._releases.clear()

    def pending(self) -> int:
        with self._lock:
            return len(self._journal)

    @property
    def dropped(self) -> int:
        return self._dropped


def _same_call(call: Deferred, culprit: Deferred) -> bool:
    if call.method != culprit.method:
        return False
    try:
        return bool(call.args == culprit.args and call.kwargs == culprit.kwargs)
    except Exception:  # noqa: BLE001 - arguments whose comparison fails are not "the same"
        return False


class _Method:
    __slots__ = ("_mailbox", "_name")

    def __init__(self, mailbox: Mailbox, name: str) -> None:
        self._mailbox = mailbox
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> pykka.Future[Any]:
        return self._mailbox.ask(self._name, *args, **kwargs)

    def defer(self, *args: Any, **kwargs: Any) -> None:
        self._mailbox.defer(self._name, *args, **kwargs)


class SupervisedProxy:
    """A Pykka-proxy look-alike over a Mailbox: `p.m(...)` asks, `p.m.defer(...)` tells.

    Unknown or private methods fail at once with AttributeError, as a Pykka proxy's do.
    """

    def __init__(self, mailbox: Mailbox, ref: pykka.ActorRef[Any]) -> None:
        self._mailbox = mailbox
        self._actor_class = ref.actor_class
        self.actor_ref = ref  # the instance this proxy was made for (calls go to the current one)

    @property
    def actor_class(self) -> type:
        return self._actor_class

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_") or not callable(getattr(self._actor_class, name, None)):
            raise AttributeError(f"{self._actor_class.__name__} has no method {name!r}")
        return _Method(self._mailbox, name)

    def __repr__(self) -> str:
        return f"<SupervisedProxy {self._mailbox.name}>"
