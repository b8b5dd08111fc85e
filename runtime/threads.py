"""Threads that belong to an actor: a thread that dies takes its owner down with it.

An actor that needs a blocking loop (NetworkIO's UDP reader, MinerGateway's accept
and client loops) runs it in an `OwnedThread` rather than a bare `threading.Thread`,
because a bare thread that raises simply ends: the socket stops being read while
the actor, and `/health`, look fine. An owned thread instead

* is named `<actor>.<role>` (`NetworkIO.reader`, `MinerGateway.accept`): the name
  `/health` lists and `POST /admin/kill-thread/{thread}` takes;
* reports an uncaught exception to its owner (`on_death`), which crashes the
  owning actor so that the supervisor restarts it, counted and visible;
* can be made to fail on purpose (`inject`): the loop calls `checkpoint()` once per
  turn, and a pending fault raises there, inside the thread, as a real bug would.

Transient OS errors (out of file descriptors, buffers, a connection aborted before
it was accepted) are not a reason for a loop to end: `is_transient` tells them
apart, `Backoff` spaces the retries, and `RepeatLog` keeps a storm of them down to
one log line per interval with a count.
"""
from __future__ import annotations

import errno
import logging
import threading
import time
from typing import Any, Callable

TRANSIENT_ERRNOS = frozenset({
    errno.EMFILE,  # this process is out of file descriptors
    errno.ENFILE,  # the system is
    errno.ENOBUFS,  # no buffer space (a send or receive under memory pressure)
    errno.ENOMEM,
    errno.EAGAIN,
    errno.EINTR,
    errno.ECONNABORTED,  # a connection that was reset before accept() took it
    errno.EPROTO,
})

REPEAT_LOG_INTERVAL = 10.0
STABLE_AFTER = 60.0  # a kept thread that ran this long since its last death restarts from the base delay


def is_transient(exc: BaseException) -> bool:
    """True for an OS error that goes away by itself (retry later), False for a real fault."""
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


class InjectedFault(RuntimeError):
    """Raised inside an owned thread by fault injection (`OwnedThread.inject`)."""


class ThreadDied(RuntimeError):
    """An actor's owned thread ended with an exception: the actor fails with this."""

    def __init__(self, thread: str, error: str) -> None:
        super().__init__(f"thread {thread} died: {error}")
        self.thread = thread
        self.error = error


class Backoff:
    """Exponential delays for retrying a transient error: base, 2*base, ... up to cap; `reset` on success."""

    def __init__(self, base: float = 0.01, cap: float = 1.0) -> None:
        self.base = base
        self.cap = cap
        self._next = base

    def next(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.base


class RepeatLog:
    """Log a repeated condition at most once per `interval` per key, with how often it happened.

    The first occurrence is logged at once; later ones within the interval are only
    counted, and the next line that is logged says how many there were.
    """

    def __init__(self, logger: logging.Logger, interval: float = REPEAT_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.total: dict[str, int] = {}

    def report(self, key: str, level: int, message: str, *args: Any) -> bool:
        """Count one occurrence of `key`; log it if the interval has passed. True if logged."""
        now = self.clock()
        with self._lock:
            self.total[key] = self.total.get(key, 0) + 1
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            self.logger.log(level, message + " (%d more since the last report)", *args, suppressed)
        else:
            self.logger.log(level, message, *args)
        return True


_current = threading.local()


def current_thread() -> "OwnedThread | None":
    """The OwnedThread running this code, if any."""
    return getattr(_current, "owned", None)


def checkpoint() -> None:
    """Raise a fault injected into the calling owned thread (a no-op anywhere else)."""
    owned = current_thread()
    if owned is not None:
        owned.checkpoint()


class OwnedThread:
    """A daemon thread named `<owner>.<role>` whose death is reported to its owner.

    `target(*args)` returning normally is a clean end (the owner is stopping);
    raising anything is a death: `on_death(name, exception)` is called from the
    dying thread, once. Transient errors are the loop's to retry, not to raise.
    """

    def __init__(self, owner: str, role: str, target: Callable[..., None], *args: Any,
                 on_death: Callable[[str, BaseException], None]) -> None:
        self.name = f"{owner}.{role}"
        self._target = target
        self._args = args
        self._on_death = on_death
        self._fault: BaseException | None = None
        self._fault_lock = threading.Lock()
        self.error: str | None = None
        self.transient_errors = 0
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> "OwnedThread":
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not threading.current_thread() and self._thread.ident is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def inject(self, fault: BaseException | None = None) -> None:
        """Make the thread raise `fault` (an InjectedFault by default) at its next checkpoint."""
        with self._fault_lock:
            self._fault = fault or InjectedFault(f"fault injected into {self.name}")

    def checkpoint(self) -> None:
        with self._fault_lock:
            fault, self._fault = self._fault, None
        if fault is not None:
            raise fault

    def count_transient(self) -> None:
        self.transient_errors += 1

    def describe(self) -> dict[str, Any]:
        """This thread's /health entry."""
        return {"name": self.name, "alive": self.is_alive(), "error": self.error,
                "transient_errors": self.transient_errors}

    def _run(self) -> None:
        _current.owned = self
        try:
            self._target(*self._args)
        except BaseException as exc:  # noqa: BLE001 - every death is reported to the owner
            self.error = f"{type(exc).__name__}: {exc}"
            try:
                self._on_death(self.name, exc)
            except Exception:  # noqa: BLE001 - the owner is gone already: nothing to tell
                logging.getLogger("node.threads").debug("owner of %s gone", self.name)
        finally:
            _current.owned = None


class ThreadKeeper:
    """Keeps one owned thread running for an owner that is not an actor (the node's prober,
    the ops pages' sampler and progress log, the Ray cluster watcher).

    Such an owner can't be restarted by a supervisor, so it restarts its thread
    itself: a death is logged with the thread's name and error, counted
    (`restarts`, `last_error`, shown in /health) and followed by a new thread after
    a backoff that doubles while deaths follow each other (capped), so a loop that
    dies at once can't spin.
    """

    def __init__(self, owner: str, role: str, target: Callable[..., None], *args: Any,
                 logger: logging.Logger | None = None, backoff: Backoff | None = None) -> None:
        self.owner = owner
        self.role = role
        self.name = f"{owner}.{role}"
        self._target = target
        self._args = args
        self._log = logger or logging.getLogger("node.threads")
        self._backoff = backoff or Backoff(base=0.1, cap=30.0)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.thread: OwnedThread | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self.last_death: float | None = None

    def start(self) -> "ThreadKeeper":
        with self._lock:
            self._spawn_locked()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """No more restarts; the target must notice its own stop signal and return. Waits `timeout`."""
        self._stopped.set()
        with self._lock:
            thread = self.thread
        if thread is not None:
            thread.join(timeout)

    def is_alive(self) -> bool:
        thread = self.thread
        return thread is not None and thread.is_alive()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "alive": self.is_alive(), "restarts": self.restarts, "error": self.last_error,
                "last_death_age": None if self.last_death is None else round(time.monotonic() - self.last_death, 1)}

    def _spawn_locked(self) -> None:
        if self._stopped.is_set():
            return
        self.thread = OwnedThread(self.owner, self.role, self._target, *self._args, on_death=self._died).start()

    def _died(self, name: str, exc: BaseException) -> None:
        now = time.monotonic()
        if self.last_death is not None and now - self.last_death > STABLE_AFTER:
            self._backoff.reset()  # the last death was long ago: not a crash loop
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_death = now
        if self._stopped.is_set():
            return
        delay = self._backoff.next()
        self._log.error("thread %s died (%s); restarting it in %.1fs", name, self.last_error, delay)
        if self._stopped.wait(delay):  # the dying thread waits, then hands over to its successor
            return
        with self._lock:
            self.restarts += 1
            self._spawn_locked()
