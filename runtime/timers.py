"""One scheduler thread for every timer of a node, instead of a thread per timer.

Pykka has no timers. Each actor's periodic work (keep-alive, expiry, a miner's
worker check, a sync round's tick) is a callback that only *sends* a message to the
actor, so all of them can share one thread: it sleeps until the earliest due
timer, runs the callbacks that are due (each must not block) and sleeps again.
A callback that raises `pykka.ActorDeadError` (its actor is gone) cancels its
timer; any other error is logged and the timer keeps running.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Any, Callable

import pykka

log = logging.getLogger("node.timers")


class TimerHandle:
    """A scheduled repeating callback; `cancel()` is idempotent and thread-safe."""

    def __init__(self, interval: float, callback: Callable[[], Any], once: bool = False) -> None:
        self.interval = interval
        self.callback = callback
        self.once = once
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class TimerService:
    """Runs every timer of one node on one daemon thread (started on first use)."""

    def __init__(self, name: str = "timers", clock: Callable[[], float] = time.monotonic, *, thread: bool = True) -> None:
        """`thread=False` (tests): no thread is started; the test calls `run_due(now)` itself."""
        self._name = name
        self._use_thread = thread
        self._clock = clock
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def every(self, interval: float, callback: Callable[[], Any]) -> TimerHandle:
        """Call `callback()` every `interval` seconds (first call after one interval)."""
        if interval <= 0:
            raise ValueError(f"timer interval must be positive, got {interval}")
        return self._schedule(TimerHandle(interval, callback))

    def after(self, delay: float, callback: Callable[[], Any]) -> TimerHandle:
        """Call `callback()` once, `delay` seconds from now."""
        return self._schedule(TimerHandle(max(0.0, delay), callback, once=True))

    def _schedule(self, handle: TimerHandle) -> TimerHandle:
        interval = handle.interval
        with self._cond:
            if self._closed:
                handle.cancel()
                return handle
            heapq.heappush(self._heap, (self._clock() + interval, next(self._seq), handle))
            if self._thread is None and self._use_thread:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return handle

    def pending(self) -> int:
        """Timers not cancelled (for tests and /health)."""
        with self._cond:
            return sum(1 for _, _, h in self._heap if not h.cancelled)

    def close(self) -> None:
        """Cancel everything and end the thread."""
        with self._cond:
            self._closed = True
            for _, _, handle in self._heap:
                handle.cancel()
            self._heap.clear()
            self._cond.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)

    def run_due(self, now: float) -> int:
        """Run the callbacks due at `now` (the thread's step; tests call it with a fake clock)."""
        due: list[TimerHandle] = []
        with self._cond:
            while self._heap and self._heap[0][0] <= now:
                when, _, handle = heapq.heappop(self._heap)
                if handle.cancelled:
                    continue
                due.append(handle)
                if handle.once:
                    continue
                # Next due time from the schedule, not from now: no drift; but never
                # a burst of catch-up calls after a stall.
                next_due = when + handle.interval
                if next_due <= now:
                    next_due = now + handle.interval
                heapq.heappush(self._heap, (next_due, next(self._seq), handle))
        for handle in due:
            if handle.cancelled:
                continue
            if handle.once:
                handle.cancel()  # done: pending() no longer counts it
            try:
                handle.callback()
            except pykka.ActorDeadError:
                handle.cancel()
            except Exception:  # noqa: BLE001 - one bad callback must not stop every timer
                log.exception("timer callback failed")
        return len(due)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    while self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - self._clock()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)
                if self._closed:
                    return
            self.run_due(self._clock())
