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

Calls carry the interface function itself (e.g. `ChainApi.tip`), never a method
name: `SupervisedProxy` gives callers the same shape as a Pykka proxy (`p.m(...)`
is a future, `p.m.defer(...)` is fire-and-forget) but only for the methods the
actor's interfaces declare (runtime/interfaces.py), so a misspelt or undeclared
name (`proxy.stop`, `proxy.release`) raises AttributeError where it is written.

The mailbox also keeps the record of each instance (runtime/instances.py):
progress stamps and threads, which the supervisor reads without asking.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import pykka

from runtime.instances import InstanceRecord
from runtime.interfaces import declared_methods

log = logging.getLogger("node.mailbox")

MAX_JOURNAL = 5000  # unstarted fire-and-forget calls kept per actor, at most


@dataclass(frozen=True, slots=True)
class Deferred:
    """A fire-and-forget call of `method(*args, **kwargs)`, number `seq` in its mailbox.

    `method` is the declared interface function (e.g. `ChainApi.on_announce`)."""

    seq: int
    method: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Call:
    """An ask: the caller waits for `method(*args, **kwargs)`'s result (`method`: an interface function)."""

    method: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Tick:
    """A timer firing (or a message to itself): `method(actor, *args)` on the actor that
    sent it, `method` being one of that actor's own public functions (never replayed)."""

    method: Callable[..., Any]
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
        self._instances: dict[str, InstanceRecord] = {}

    # ---------------------------------------------------------- senders

    @property
    def ref(self) -> pykka.ActorRef[Any] | None:
        return self._ref

    def defer(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
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

    def ask(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> pykka.Future[Any]:
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
        """`urn` may run its own timers and messages to itself: it is the attached instance,
        or, while none is attached, a new one not attached yet (its on_start runs before
        the supervisor attaches it). Never an instance that was detached or abandoned:
        a hung instance that wakes up after it was replaced runs nothing."""
        with self._lock:
            ref = self._ref
            if ref is not None:
                return ref.actor_urn == urn
            record = self._instances.get(urn)
            return record is not None and not record.abandoned and not record.retired

    # ---------------------------------------------------------- instance records

    def register(self, record: InstanceRecord) -> None:
        """A new instance of this actor exists (called from its constructor)."""
        with self._lock:
            self._prune_locked()
            self._instances[record.urn] = record

    def record(self, urn: str) -> InstanceRecord | None:
        with self._lock:
            return self._instances.get(urn)

    def current_record(self) -> InstanceRecord | None:
        with self._lock:
            ref = self._ref
            return self._instances.get(ref.actor_urn) if ref is not None else None

    def live_records(self) -> list[InstanceRecord]:
        """Instances whose thread still runs and that were not abandoned (never more than one
        for an actor that owns shared state)."""
        with self._lock:
            self._prune_locked()
            return [r for r in self._instances.values() if not r.abandoned and r.thread_alive()]

    def abandoned_records(self) -> list[InstanceRecord]:
        """Hung instances given up on whose thread has not ended yet."""
        with self._lock:
            self._prune_locked()
            return [r for r in self._instances.values() if r.abandoned and r.thread_alive()]

    def _prune_locked(self) -> None:
        for urn in [urn for urn, r in self._instances.items() if r.actor_thread is not None and not r.actor_thread.is_alive()]:
            del self._instances[urn]

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
            if urn is not None and urn in self._instances:
                self._instances[urn].retired = True

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
    if call.method is not culprit.method:
        return False
    try:
        return bool(call.args == culprit.args and call.kwargs == culprit.kwargs)
    except Exception:  # noqa: BLE001 - arguments whose comparison fails are not "the same"
        return False


class _Method:
    __slots__ = ("_mailbox", "_function")

    def __init__(self, mailbox: Mailbox, function: Callable[..., Any]) -> None:
        self._mailbox = mailbox
        self._function = function

    def __call__(self, *args: Any, **kwargs: Any) -> pykka.Future[Any]:
        return self._mailbox.ask(self._function, *args, **kwargs)

    def defer(self, *args: Any, **kwargs: Any) -> None:
        self._mailbox.defer(self._function, *args, **kwargs)


class SupervisedProxy:
    """A Pykka-proxy look-alike over a Mailbox: `p.m(...)` asks, `p.m.defer(...)` tells.

    Only the methods declared by the actor's interfaces exist: any other name
    (private, misspelt, or an actor method that is not part of its protocol, such
    as `stop` or `release`) raises AttributeError at once, where it is called.
    """

    def __init__(self, mailbox: Mailbox, ref: pykka.ActorRef[Any]) -> None:
        self._mailbox = mailbox
        self._actor_class = ref.actor_class
        self._methods = declared_methods(ref.actor_class)
        self.actor_ref = ref  # the instance this proxy was made for (calls go to the current one)

    @property
    def actor_class(self) -> type:
        return self._actor_class

    def __getattr__(self, name: str) -> _Method:
        function = self._methods.get(name)
        if function is None:
            raise AttributeError(f"{self._actor_class.__name__} declares no method {name!r} in its interfaces")
        return _Method(self._mailbox, function)

    def __dir__(self) -> list[str]:
        return sorted(self._methods)

    def __repr__(self) -> str:
        return f"<SupervisedProxy {self._mailbox.name}>"
