"""The size of the Ray cluster the miners run on, kept current by a watcher process.

`--miners auto` with `--ray-address` means one miner per CPU of the cluster. The
node may not call `ray.init` itself (Ray ends a driver whose cluster is gone;
see mining/ray_backend.py), so a small child process connects and reports the
cluster's CPU count every few seconds; this module keeps the latest reading,
restarts the watcher with backoff when the cluster is unreachable, logs when
the count changes (nodes joined or left) and hands every reading to its
listeners (the node resizes its miner pool). Ray is imported only by the child.
"""
from __future__ import annotations

import logging
import multiprocessing
import threading
from dataclasses import dataclass
from typing import Callable

from runtime.threads import ThreadKeeper, checkpoint

log = logging.getLogger("node.ray")

RETRY_FIRST = 1.0
RETRY_MAX = 30.0

_MP = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class ClusterReading:
    cpus: int
    nodes: int


class RayClusterWatcher:
    """Latest CPU count of the cluster at `address`; every reading goes to the listeners."""

    def __init__(self, address: str, interval: float = 5.0) -> None:
        self.address = address
        self.interval = interval
        self._listeners: list[Callable[[ClusterReading], None]] = []
        self.reading: ClusterReading | None = None
        self.unavailable: str | None = None  # why the last connection attempt failed
        self._first = threading.Event()  # a reading or a failure has come in
        self._stop = threading.Event()
        self._process: multiprocessing.process.BaseProcess | None = None
        # Kept running: a watch loop that dies is logged, counted and restarted (runtime/threads.py).
        self.keeper = ThreadKeeper("ray", "cluster-watch", self._run, logger=log)

    def start(self) -> "RayClusterWatcher":
        self.keeper.start()
        return self

    def add_listener(self, listener: Callable[[ClusterReading], None]) -> None:
        """Call `listener(reading)` (on the watcher's thread) for each reading from now on."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[ClusterReading], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

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
        self.keeper.stop(timeout=3.0)

    def _run(self) -> None:
        from mining.ray_backend import run_cluster_watch

        delay = RETRY_FIRST
        while not self._stop.is_set():
            checkpoint()
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
                    self.update(ClusterReading(int(message[1]), int(message[2])))
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

    def update(self, reading: ClusterReading) -> None:
        """A new reading (from the watcher process; tests call it to simulate one)."""
        previous, self.reading = self.reading, reading
        self.unavailable = None
        self._first.set()
        if previous is None or previous.cpus != reading.cpus:
            log.info("Ray cluster at %s: %d CPUs on %d nodes%s", self.address, reading.cpus, reading.nodes,
                     "" if previous is None else f" (was {previous.cpus} CPUs on {previous.nodes} nodes)")
        for listener in list(self._listeners):
            try:
                listener(reading)
            except Exception:  # noqa: BLE001 - the watcher must outlive a failing listener
                log.exception("Ray cluster listener failed")


# ---------------------------------------------------------------- token authentication

AUTH_PROBE_TIMEOUT = 40.0  # seconds; Ray's client gives up on a GCS that refuses it after about 20 s

_auth_checks: set[str] = set()
_auth_lock = threading.Lock()


def check_token_auth(address: str) -> ThreadKeeper | None:
    """Warn in one line when the Ray cluster at `address` lets a client without a token in.

    A Ray cluster runs whatever code its clients send it, so one without token
    authentication (Ray's `RAY_AUTH_MODE=token`) is open to anyone who can reach its
    ports. The node's own Ray processes carry the token when there is one, so they
    can't tell; a separate short-lived probe process connects *without* any token
    (`RAY_AUTH_MODE=disabled`, no `RAY_AUTH_TOKEN`): if the cluster accepts it, the
    cluster has no token authentication and the node says so once. Ray's own output
    of the probe goes nowhere (it is not the node's log). Once per address per node
    process, on a thread of its own: the node does not wait for it.
    """
    with _auth_lock:
        if address in _auth_checks:
            return None
        _auth_checks.add(address)
    # A one-shot job: the thread ends when the verdict is logged (a keeper only restarts a death).
    return ThreadKeeper("ray", "auth-probe", _probe_auth, address, logger=log).start()


def _probe_auth(address: str) -> None:
    from mining.ray_backend import run_auth_probe

    reader, writer = _MP.Pipe(duplex=False)
    process = _MP.Process(target=run_auth_probe, args=(writer, address), name="pow-ray-auth-probe", daemon=True)
    process.start()
    writer.close()
    try:
        verdict = reader.recv() if reader.poll(AUTH_PROBE_TIMEOUT) else ("timeout", "")
    except (EOFError, OSError):
        verdict = ("failed", "the probe process died")
    finally:
        reader.close()
        if process.is_alive():
            process.kill()
        process.join(2.0)
    level = {"open": logging.WARNING, "refused": logging.INFO}.get(verdict[0], logging.DEBUG)
    log.log(level, auth_verdict_line(address, verdict))


def auth_verdict_line(address: str, verdict: tuple[str, str]) -> str:
    """The one line the node logs about the cluster's token authentication."""
    kind, detail = verdict
    if kind == "open":
        return (f"the Ray cluster at {address} has no token authentication: anyone who can reach its ports can run "
                "code on it (start every Ray node with RAY_AUTH_MODE=token and a token; see the README)")
    if kind == "refused":
        return f"the Ray cluster at {address} requires token authentication (a client without the token was refused)"
    return f"could not tell whether the Ray cluster at {address} requires a token: {kind} {detail}".rstrip()
