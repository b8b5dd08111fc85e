"""What the supervisor can see of one actor instance without asking it anything.

A liveness ping waits in the same inbox as real work, so an actor with a long
backlog looks hung although it is only busy. Instead each instance stamps the
start and the end of every message it handles here (a counter and a timestamp),
and anyone may read the stamps from another thread at any time:

* *busy*: a message is running, or messages wait in the inbox; nothing is wrong;
* *hung*: the message running now has run longer than the actor's declared
  budget (`budget`): only then does the supervisor act.

The record also holds the instance's actor thread (so a successor of an actor
that owns a socket or the store starts only after that thread has ended) and its
owned threads (runtime/threads.py), by name.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Any, Callable

from runtime.threads import OwnedThread


class InstanceRecord:
    """Progress stamps and threads of one actor instance (one URN); thread-safe to read."""

    def __init__(self, name: str, urn: str, budget: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.urn = urn
        self.budget = budget
        self.clock = clock
        self.actor_thread: threading.Thread | None = None
        self.started: float | None = None  # when the running message started (monotonic)
        self.current: str | None = None  # what it is, for the log and /health
        self.handled = 0
        self.abandoned = False
        self.retired = False  # detached by the supervisor (crashed, stopping): its timers are void
        self._threads: dict[str, OwnedThread] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------- the instance's side

    def begin(self, what: str) -> None:
        if self.actor_thread is None:
            self.actor_thread = threading.current_thread()
        self.current = what
        self.started = self.clock()

    def end(self) -> None:
        self.started = None
        self.current = None
        self.handled += 1

    def add_thread(self, thread: OwnedThread) -> None:
        with self._lock:
            self._threads[thread.name] = thread

    def drop_thread(self, name: str) -> None:
        with self._lock:
            self._threads.pop(name, None)

    # ---------------------------------------------------------- readers

    def threads(self) -> list[OwnedThread]:
        """Owned threads that run, or that died with an error (one that ended cleanly is forgotten)."""
        with self._lock:
            for name in [n for n, t in self._threads.items() if t.ident is not None and not t.is_alive() and t.error is None]:
                del self._threads[name]
            return list(self._threads.values())

    def thread(self, name: str) -> OwnedThread | None:
        with self._lock:
            return self._threads.get(name)

    def busy_for(self, now: float | None = None) -> float | None:
        """Seconds the running message has run, or None when idle."""
        started = self.started
        if started is None:
            return None
        return max(0.0, (self.clock() if now is None else now) - started)

    def hung(self, now: float | None = None) -> bool:
        busy = self.busy_for(now)
        return busy is not None and busy > self.budget

    def thread_alive(self) -> bool:
        """The actor's own thread is still running (True until its first message is seen)."""
        thread = self.actor_thread
        return thread is None or thread.is_alive()

    def stack(self) -> str:
        """Where the actor's thread is now, as a traceback (for the log of a hang)."""
        thread = self.actor_thread
        if thread is None or thread.ident is None:
            return "(thread not known)"
        frame = sys._current_frames().get(thread.ident)
        if frame is None:
            return "(thread has ended)"
        return "".join(traceback.format_stack(frame))

    def describe(self, now: float | None = None) -> dict[str, Any]:
        busy = self.busy_for(now)
        return {
            "busy_for": None if busy is None else round(busy, 3),
            "current": self.current,
            "handled": self.handled,
            "budget": self.budget,
            "threads": [thread.describe() for thread in self.threads()],
        }
