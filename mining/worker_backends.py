"""Where a MinerActor's hash loop runs: a local worker process, or a Ray actor on a cluster.

Both backends give the MinerActor the same thing: a local child process and two
pipes speaking mining/worker.py's protocol. For `process` that child *is* the
worker; for `ray` it is a bridge (mining/ray_backend.py) relaying to a Ray actor
that runs the same loop somewhere in the cluster. So death is detected the same
way for both (the pipe's EOF, the child's exit code, a report stall), and the
actor's code does not branch on the backend except for what /health shows.

Nothing here imports Ray; the bridge's module is only named, for `spawn` to import
in the child.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from typing import Any, Callable

STOP_TIMEOUT = 2.0  # terminate -> wait this long -> kill

_MP = multiprocessing.get_context("spawn")  # not fork: the node is full of threads (see actors/miner.py)


class WorkerBackend:
    """One started worker: a local child process plus its two pipe ends (ours)."""

    kind = "?"

    def __init__(self, index: int, target: Callable[..., None], args: tuple[Any, ...], name: str) -> None:
        work_r, work_w = _MP.Pipe(duplex=False)
        report_r, report_w = _MP.Pipe(duplex=False)
        self.process: Any = _MP.Process(target=target, args=(work_r, report_w, *args), name=name, daemon=True)
        self.process.start()
        # Our copies of the child's ends must go: the reader's EOF then means "worker gone".
        work_r.close()
        report_w.close()
        self.index = index
        self.to_worker: Connection | None = work_w
        self.from_worker: Connection | None = report_r

    def send(self, message: tuple[Any, ...]) -> bool:
        """Send the worker a message (mining/worker.py's protocol); False if its pipe is gone."""
        if self.to_worker is None:
            return False
        try:
            self.to_worker.send(message)
            return True
        except (OSError, ValueError):  # BrokenPipeError: the worker has exited
            return False

    @property
    def child_pid(self) -> int | None:
        """The local child process (the worker, or the Ray bridge)."""
        return self.process.pid

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    @property
    def ready(self) -> bool:
        """True once work sent now is searched (a Ray worker must be placed first)."""
        return True

    @property
    def pid(self) -> int | None:
        """The pid of the process that hashes (on its own machine)."""
        return self.process.pid

    @property
    def local_pid(self) -> int | None:
        """The hashing process's pid if it runs on this machine (for psutil), else None."""
        return self.pid

    def details(self) -> dict[str, Any]:
        """What /health shows about where the worker runs."""
        return {"backend": self.kind}

    def reap(self, timeout: float) -> int | None:
        self.process.join(timeout)
        return self.process.exitcode

    def kill(self) -> int | None:
        """SIGKILL the hashing process; its pid, or None if there is none (yet)."""
        pid = self.pid
        if pid is None:
            return None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return pid

    def hard_kill(self) -> None:
        """SIGKILL the local child (a stalled worker; works on a stopped process too)."""
        try:
            self.process.kill()
        except (OSError, ValueError):
            pass

    def stop(self) -> None:
        """Ask, terminate, wait, kill; close our pipe ends. Idempotent."""
        self.send(("stop",))
        process = self.process
        process.join(0.2)
        if process.is_alive():
            process.terminate()
            process.join(STOP_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join(STOP_TIMEOUT)
        for conn in (self.to_worker, self.from_worker):
            if conn is not None:
                try:
                    conn.close()
                except OSError:
                    pass
        self.to_worker = None


class ProcessWorker(WorkerBackend):
    """The hash loop in a local OS process (mining.worker.run_worker)."""

    kind = "process"

    def __init__(self, index: int) -> None:
        from mining.worker import run_worker

        super().__init__(index, run_worker, (), f"pow-miner-{index}")


class RayWorker(WorkerBackend):
    """The hash loop in a Ray actor, driven through a local bridge process."""

    kind = "ray"

    def __init__(self, index: int, address: str) -> None:
        from mining.ray_backend import run_bridge  # a plain module: Ray is imported by the bridge only

        super().__init__(index, run_bridge, (address, index), f"pow-ray-bridge-{index}")
        self.address = address
        self.ray_pid: int | None = None
        self.node_id: str | None = None
        self.node_ip: str | None = None
        self.same_node = False

    def started(self, pid: int, node_id: str, node_ip: str, same_node: bool) -> None:
        """The bridge reports the Ray actor placed and running."""
        self.ray_pid, self.node_id, self.node_ip, self.same_node = pid, node_id, node_ip, same_node

    @property
    def ready(self) -> bool:
        return self.ray_pid is not None

    @property
    def pid(self) -> int | None:
        return self.ray_pid

    @property
    def local_pid(self) -> int | None:
        return self.ray_pid if self.same_node else None

    def details(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "ray_node": self.node_ip,
            "ray_node_id": self.node_id,
            "ray_address": self.address,
            "bridge_pid": self.child_pid,
        }

    def kill(self) -> int | None:
        """SIGKILL the Ray worker when it is on this machine; elsewhere Ray force-kills it."""
        if self.ray_pid is None:
            return None
        if self.same_node:
            return super().kill()
        if self.to_worker is not None:
            try:
                self.to_worker.send(("ray_kill",))
            except (OSError, ValueError):
                pass
        return self.ray_pid
