"""The size of the Ray cluster the miners run on, kept current by a watcher process.

`--miners auto` with `--ray-address` means one miner per CPU of the cluster. The
node may not call `ray.init` itself (Ray ends a driver whose cluster is gone;
see mining/ray_backend.py), so a small child process connects and reports the
cluster's CPU count every few seconds; this module keeps the latest reading,
restarts the watcher with backoff when the cluster is unreachable, and calls
back when the count changes (nodes joined or left). Ray is imported only by
the child.
"""
from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("node.ray")

RETRY_FIRST = 1.0
RETRY_MAX = 30.0

_MP = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class ClusterReading:
    cpus: int
    nodes: int


class RayClusterWatcher:
    """Latest CPU count of the cluster at `address`; `on_change(reading)` when it changes."""

    def __init__(self, address: str, interval: float = 5.0,
                 on_change: Callable[[ClusterReading], None] | None = None) -> None:
        self.address = address
        self.interval = interval
        self.on_change = on_change
        self.reading: ClusterReading | None = None
        self.unavailable: str | None = None  # why the last connection attempt failed
        self._first = threading.Event()  # a reading or a failure has come in
        self._stop = threading.Event()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._thread = threading.Thread(target=self._run, name="ray-cluster-watch", daemon=True)

    def start(self) -> "RayClusterWatcher":
        self._thread.start()
        return self

    def wait_first(self, timeout: float) -> ClusterReading | None:
        """Block until the first reading (or failure); the reading, or None."""
        self._first.wait(timeout)
        return self.reading

    def stop(self) -> None:
        self._stop.set()
        process = self._process
        if process is not None and process.is_alive():
            process.terminate()
            process.join(2.0)
            if process.is_alive():
                process.kill()
                process.join(2.0)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(3.0)

    def _run(self) -> None:
        from mining.ray_backend import run_cluster_watch

        delay = RETRY_FIRST
        while not self._stop.is_set():
            reader, writer = _MP.Pipe(duplex=False)
            process = _MP.Process(target=run_cluster_watch, args=(writer, self.address, self.interval),
                                  name="pow-ray-watch", daemon=True)
            process.start()
            writer.close()
            self._process = process
            while not self._stop.is_set():
                try:
                    message = reader.recv()
                except (EOFError, OSError):
                    break
                if message[0] == "cluster":
                    delay = RETRY_FIRST
                    self._update(ClusterReading(int(message[1]), int(message[2])))
                elif message[0] == "ray_unavailable":
                    self.unavailable = str(message[1])
                    log.warning("%s; retrying in %.0fs", self.unavailable, delay)
                    self._first.set()
            reader.close()
            process.join(2.0)
            if process.is_alive():
                process.kill()
                process.join(2.0)
            if self._stop.wait(delay):
                return
            delay = min(RETRY_MAX, delay * 2)

    def _update(self, reading: ClusterReading) -> None:
        previous, self.reading = self.reading, reading
        self.unavailable = None
        self._first.set()
        if previous is None or previous.cpus != reading.cpus:
            log.info("Ray cluster at %s: %d CPUs on %d nodes%s", self.address, reading.cpus, reading.nodes,
                     "" if previous is None else f" (was {previous.cpus} CPUs on {previous.nodes} nodes)")
            if previous is not None and self.on_change is not None:
                try:
                    self.on_change(reading)
                except Exception:  # noqa: BLE001 - the watcher must outlive a failing callback
                    log.exception("cluster size callback failed")
