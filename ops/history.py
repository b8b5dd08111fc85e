"""The last hour of a node's figures, for the dashboard's charts, and rates from successive readings.

A daemon thread samples the node every `interval` seconds (total hash rate, peer
count, chain height) into a bounded ring: an hour at 10 s is 360 samples, a few
kilobytes. It ends by itself once the node's supervisor has stopped, so nothing
has to remember to stop it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from runtime.threads import ThreadKeeper, checkpoint

log = logging.getLogger("node.ops.history")

SAMPLE_SECONDS = 10.0
WINDOW_SECONDS = 3600.0


@dataclass(frozen=True)
class Sample:
    at: float  # wall-clock seconds
    hashrate: float
    peers: int | None
    height: int | None


class History:
    """A ring of Samples covering `window` seconds."""

    def __init__(self, interval: float = SAMPLE_SECONDS, window: float = WINDOW_SECONDS) -> None:
        self.interval = interval
        self.window = window
        self._samples: deque[Sample] = deque(maxlen=max(2, int(window / interval) + 2))
        self._lock = threading.Lock()

    def add(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)

    def samples(self, now: float) -> list[Sample]:
        with self._lock:
            return [s for s in self._samples if now - s.at <= self.window]

    def series(self, now: float) -> dict[str, list[list[float]]]:
        """`{"hashrate": [[t, v], ...], "peers": [...]}` for the charts (t in epoch seconds)."""
        samples = self.samples(now)
        return {
            "hashrate": [[s.at, s.hashrate] for s in samples],
            "peers": [[s.at, s.peers] for s in samples if s.peers is not None],
        }

    def mean_hashrate(self, now: float, window: float, live: float) -> tuple[float, float]:
        """(mean hash rate, seconds it covers) over the samples of the last `window` seconds.

        The dashboard shows this one figure on the card and on the chart, so the two
        never disagree; before the first sample it is the `live` reading (window 0).
        """
        recent = [s for s in self.samples(now) if now - s.at <= window]
        if not recent:
            return live, 0.0
        covered = min(window, max(self.interval, now - recent[0].at))
        return sum(s.hashrate for s in recent) / len(recent), round(covered)

    def run_sampler(self, take: Callable[[], Sample], should_stop: Callable[[], bool],
                    clock: Callable[[], float] = time.monotonic) -> ThreadKeeper:
        """Start a thread (`ops.history`, kept running: restarted if it dies) calling `take()`
        every `interval` s until `should_stop()`."""

        def loop() -> None:
            next_at = clock()
            while not should_stop():
                checkpoint()
                if clock() >= next_at:
                    next_at = clock() + self.interval
                    try:
                        self.add(take())
                    except Exception as exc:  # noqa: BLE001 - a missed sample is a gap in a chart, nothing more
                        log.debug("history sample failed: %s", exc)
                time.sleep(min(1.0, self.interval))

        return ThreadKeeper("ops", "history", loop, logger=log).start()


class RateMeter:
    """Units per second of a growing count, over the readings of the last `window` seconds.

    Fed by every reading (each dashboard poll and each sample); a count that goes
    down (a new sync round) starts over.
    """

    def __init__(self, window: float = 30.0) -> None:
        self.window = window
        self._readings: deque[tuple[float, float]] = deque(maxlen=256)
        self._lock = threading.Lock()

    def observe(self, now: float, count: float) -> float | None:
        with self._lock:
            if self._readings and count < self._readings[-1][1]:
                self._readings.clear()
            self._readings.append((now, count))
            while len(self._readings) > 2 and now - self._readings[0][0] > self.window:
                self._readings.popleft()
            first_at, first = self._readings[0]
            if now - first_at < 1.0:
                return None
            return (count - first) / (now - first_at)

    def reset(self) -> None:
        with self._lock:
            self._readings.clear()
