"""Miner workers on a Ray cluster: the Ray actor that hashes, and the bridge process that drives it.

Imported only with `--ray-address` (nothing here imports Ray at module level, and
nothing else of the node imports this module without that option).

Why a bridge process: a Ray *driver* (the process that called `ray.init`) is
terminated by Ray itself when the cluster's GCS stays unreachable for a while
("Failed to connect to GCS ... The program will terminate"). The node must
survive its cluster going away, so the node process never calls `ray.init`.
Each MinerActor starts a small local bridge process instead, with the same two
pipes and the same line of tuples as a local worker process (mining/worker.py).
The bridge connects to the cluster, creates one Ray actor (`num_cpus=1`, placed
by Ray on any node) and relays: work from the pipe to the actor, reports from the
actor (a streaming generator) to the pipe. The MinerActor therefore treats both
backends alike: the bridge's EOF or exit is the worker's death, whatever killed
it (the Ray worker SIGKILLed, its machine gone, the whole cluster gone). The Ray
actor is owned by the bridge, so Ray kills it when the bridge dies: no orphans.

The Ray actor runs `mining.worker.run_worker` itself, over queue-backed
stand-ins for the two pipe ends, so it searches exactly as a local worker does
(including the native kernel wherever the worker picks it up).

Bridge -> MinerActor messages beyond the worker's own reports:
    ("ray_started", pid, node_id, node_ip, same_node)   the Ray actor is up (its pid on its node)
    ("ray_pending", reason)                              waiting for Ray to place the actor (no free CPU)
    ("ray_unavailable", reason)                          can't reach the cluster; the bridge exits
    ("ray_died", reason)                                 the Ray actor died; the bridge exits
MinerActor -> bridge beyond the worker's protocol:
    ("ray_kill",)                                        force-kill the Ray actor (fault injection)
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterator

from mining.worker import ignore_group_signals

log = logging.getLogger("node.ray")

PROBE_TIMEOUT = 5.0  # seconds a TCP connect to the cluster's GCS may take
PLACEMENT_WAIT = 10.0  # seconds before an unplaced actor is reported as pending
RAY_REPORT_INTERVAL = 0.25  # hash-count reports: each is a Ray RPC, so fewer than a local worker's 0.1 s (finds go at once)
REPORT_POLL = 0.5  # how often the actor's report stream checks that its worker thread still runs
MINING_DIR = Path(__file__).resolve().parent

# Never let Ray phone home (usage stats); set before Ray is imported in this process.
QUIET_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


class QueueInbox:
    """The worker's inbox (`poll`, `recv`) fed by `push` calls instead of a pipe."""

    _CLOSED = ("__closed__",)

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def put(self, message: tuple[Any, ...]) -> None:
        self._queue.put(message)

    def close(self) -> None:
        self._queue.put(self._CLOSED)

    def poll(self) -> bool:
        return not self._queue.empty()

    def recv(self) -> tuple[Any, ...]:
        message = self._queue.get()
        if message is self._CLOSED:
            raise EOFError("inbox closed")
        return message


class QueueOutbox:
    """The worker's outbox (`send`) collected for the report stream instead of a pipe."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def send(self, message: tuple[Any, ...]) -> None:
        self.queue.put(message)


class MinerWorker:
    """The Ray actor: one hash loop (mining.worker.run_worker) fed through push() and read through run().

    Plain class; the bridge wraps it with `ray.remote` (so importing this module
    does not import Ray). Threaded (max_concurrency=2): `run` streams reports
    while `push` delivers work.
    """

    def __init__(self) -> None:
        self._inbox = QueueInbox()
        self._outbox = QueueOutbox()
        self._thread: threading.Thread | None = None

    def info(self) -> tuple[int, str, str]:
        """Where the actor runs: its pid, Ray node id and node address."""
        import ray

        context = ray.get_runtime_context()
        return os.getpid(), context.get_node_id(), ray.util.get_node_ip_address()

    def push(self, message: tuple[Any, ...]) -> None:
        self._inbox.put(message)

    def run(self) -> Iterator[tuple[Any, ...]]:
        """Run the hash loop; yield each of its reports as it is made (a Ray streaming generator)."""
        from mining.worker import run_worker

        thread = threading.Thread(target=run_worker, args=(self._inbox, self._outbox, RAY_REPORT_INTERVAL),
                                  name="hash-loop", daemon=True)
        self._thread = thread
        thread.start()
        reports = self._outbox.queue
        while True:
            try:
                yield reports.get(timeout=REPORT_POLL)
            except queue.Empty:
                if not thread.is_alive() and reports.empty():
                    return


def check_reachable(address: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Fail fast (OSError) when a HOST:PORT address refuses connections.

    `ray.init` keeps retrying a dead GCS for about a minute; a plain TCP connect
    says "nobody listens there" at once, so a cluster that went away is reported
    (and retried) in seconds. Other address forms are left to Ray.
    """
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
        pass


def ray_init(address: str) -> None:
    """Connect this process to the cluster at `address` (Ray's forms: auto, HOST:PORT)."""
    check_reachable(address)
    for key, value in QUIET_RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    # ray.init puts in its own SIGTERM handlers (Python's, which exits, and a native one that
    # prints a "*** SIGTERM received" stack dump): a node stopped cleanly by a signal to its
    # whole process group then dumped stacks from every Ray process. Ours are put back after.
    main = threading.current_thread() is threading.main_thread()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        ray.init(
            address=address,
            log_to_driver=False,
            logging_level=logging.WARNING,
            namespace="pow-node",
            # Ray workers on other machines import the worker code from here (the
            # native kernel too, if it was built into mining/ for their platform).
            runtime_env={"py_modules": [str(MINING_DIR)]},
        )
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def run_bridge(inbox: Connection, outbox: Connection, address: str, index: int) -> None:
    """The bridge process's main: connect, start the Ray actor, relay until told to stop or it dies."""
    ignore_group_signals()  # the node decides when miners stop
    try:
        ray_init(address)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, auth errors, bad address: all mean "no cluster"
        _send(outbox, ("ray_unavailable", f"can't connect to the Ray cluster at {address}: {_oneline(exc)}"))
        return
    import ray

    remote_class = ray.remote(num_cpus=1, max_concurrency=2, max_restarts=0)(MinerWorker)
    actor = remote_class.options(name=None).remote()
    stop = threading.Event()
    try:
        info_ref = actor.info.remote()
        deadline = time.monotonic() + PLACEMENT_WAIT
        info = None
        while info is None:
            ready, _ = ray.wait([info_ref], timeout=0.5)
            if ready:
                info = ray.get(info_ref)
            elif deadline is not None and time.monotonic() > deadline:
                _send(outbox, ("ray_pending", "waiting for Ray to place the worker (no free CPU in the cluster?)"))
                deadline = None
        pid, node_id, node_ip = info
        same_node = node_id == ray.get_runtime_context().get_node_id()
        _send(outbox, ("ray_started", int(pid), str(node_id), str(node_ip), bool(same_node)))
        relay = threading.Thread(target=_relay_work, args=(inbox, actor, stop), name=f"ray-relay-{index}", daemon=True)
        relay.start()
        for ref in actor.run.remote():
            if not _send(outbox, ray.get(ref)):
                break
        reason = "its report stream ended"
    except Exception as exc:  # noqa: BLE001 - RayActorError, ActorUnavailableError, GCS gone...
        reason = _oneline(exc)
    if not stop.is_set():
        _send(outbox, ("ray_died", f"Ray worker lost: {reason}"))
    _force_exit(actor, 0 if stop.is_set() else 1)


def _relay_work(inbox: Connection, actor: Any, stop: threading.Event) -> None:
    """Bridge thread: pipe -> actor; on stop (or the node gone) kill the actor and exit.

    The thread's owner is this process: if the relay dies of an unexpected error,
    the process exits 1 with it, so the MinerActor sees its worker die and is
    restarted, rather than a worker that looks alive and never gets new work.
    """
    import ray

    try:
        while True:
            try:
                message = inbox.recv()
            except (EOFError, OSError):
                break
            kind = message[0] if isinstance(message, tuple) and message else None
            if kind == "stop":
                break
            if kind == "ray_kill":
                ray.kill(actor, no_restart=True)
                continue
            actor.push.remote(message)
    except BaseException as exc:  # noqa: BLE001 - the owner (this process) dies with its thread
        sys.stderr.write(f"ray relay thread died: {type(exc).__name__}: {exc}\n")
        _force_exit(actor, 1)
    stop.set()
    _force_exit(actor, 0)


def _force_exit(actor: Any, code: int) -> None:
    """Kill the Ray actor and leave at once (ray.shutdown can block on a broken cluster)."""
    try:
        import ray

        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - best effort; Ray also kills an owner's actors when it dies
        pass
    os._exit(code)


def _send(outbox: Connection, message: tuple[Any, ...]) -> bool:
    try:
        outbox.send(message)
        return True
    except (OSError, ValueError):
        return False


def _oneline(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300]


# ---------------------------------------------------------------- cluster size

WATCH_INTERVAL = 5.0  # seconds between readings of the cluster's CPUs


def run_cluster_watch(outbox: Connection, address: str, interval: float = WATCH_INTERVAL) -> None:
    """A watcher process's main: report the cluster's CPU count and alive nodes every `interval` s.

    Sends ("cluster", cpus, nodes) readings, or ("ray_unavailable", reason) and
    exits. Like the bridges it is a process of its own, so a cluster that goes
    away can end it (Ray ends drivers whose GCS is gone) but never the node.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ray_init(address)
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no cluster"
        _send(outbox, ("ray_unavailable", f"can't connect to the Ray cluster at {address}: {_oneline(exc)}"))
        return
    import ray

    while True:
        try:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        except Exception as exc:  # noqa: BLE001
            _send(outbox, ("ray_unavailable", f"lost the Ray cluster at {address}: {_oneline(exc)}"))
            os._exit(1)
        if not _send(outbox, ("cluster", cpus, nodes)):
            os._exit(0)  # the node is gone
        time.sleep(interval)


# ---------------------------------------------------------------- token authentication probe


def run_auth_probe(outbox: Connection, address: str) -> None:
    """An auth probe process's main: connect to the cluster WITHOUT a token; report what happened.

    Sends ("open", "") when the cluster let us in (it has no token authentication),
    ("refused", reason) when it turned us away, ("unreachable", reason) when nothing
    listens there. Ray's output (its retries print a line a second) goes to
    /dev/null: it is not the node's log. See mining/ray_cluster.py, check_token_auth.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.environ["RAY_AUTH_MODE"] = "disabled"  # an explicit mode: Ray then ignores any token it could find
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        os.environ.pop(key, None)
    try:
        check_reachable(address)
    except OSError as exc:
        _send(outbox, ("unreachable", _oneline(exc)))
        os._exit(0)
    try:
        ray_init(address)
    except Exception as exc:  # noqa: BLE001 - Ray says ConnectionError after its GCS refused us for ~20 s
        _send(outbox, ("refused", _oneline(exc)))
        os._exit(0)
    _send(outbox, ("open", ""))
    os._exit(0)  # no ray.shutdown: leaving at once is the quickest way out of the cluster
