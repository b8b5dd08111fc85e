"""The lab's processes: nodes (run_node.py), the relay, and the cgroup that caps the miners' CPU.

Each node is started in its own session (so a stop reaches its miner workers too)
with its data dir, JSON log and stderr under the run's directory; the lab records
every start and every kill with its time, which the analysis needs (was a node
up when a block was mined?).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
CFS_PERIOD_US = 100_000


@dataclass
class LabNode:
    index: int
    name: str
    region: int
    miner: bool
    bind_ip: str  # where its UDP socket and ops HTTP listen
    relay_ip: str  # the address it advertises (the relay's socket for it)
    port: int
    http_port: int
    directory: Path
    peer: str | None  # HOST:PORT it joins through
    difficulty: int
    popen: subprocess.Popen | None = None
    lives: list[list[float | None]] = field(default_factory=list)  # [spawned, ended]
    killed: bool = False  # the lab killed it (churn) and will restart it
    exit: dict[str, Any] | None = None

    @property
    def udp(self) -> str:
        return f"{self.relay_ip}:{self.port}"

    @property
    def http(self) -> str:
        return f"{self.bind_ip}:{self.http_port}"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "udp": self.udp, "http": self.http, "region": self.region,
                "miner": self.miner, "bind": f"{self.bind_ip}:{self.port}", "peer": self.peer}

    def relay_entry(self) -> dict[str, Any]:
        return {"index": self.index, "relay": [self.relay_ip, self.port], "bind": [self.bind_ip, self.port],
                "region": self.region}

    def command(self) -> list[str]:
        args = [sys.executable, str(ROOT / "run_node.py"), "--host", self.relay_ip, "--bind", self.bind_ip,
                "--port", str(self.port), "--http-host", self.bind_ip, "--http-port", str(self.http_port),
                "--name", self.name, "--difficulty", str(self.difficulty), "--miners", "1" if self.miner else "0",
                "--data-dir", str(self.directory / "data"), "--log-format", "json",
                "--log-file", str(self.directory / "node.log")]
        if self.peer:
            args += ["--peer", self.peer]
        return args

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def spawn(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("POW_NODE_") and k != "POW_KERNEL"}
        with open(self.directory / "stderr.log", "ab") as err:
            self.popen = subprocess.Popen(self.command(), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                          env=env, start_new_session=True)
        self.killed = False
        self.lives.append([time.time(), None])

    def sigkill(self) -> None:
        """Churn: SIGKILL the node (and anything in its session), as a crash or power loss would."""
        if self.popen is None:
            return
        self.killed = True
        _signal_group(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        self.lives[-1][1] = time.time()

    def terminate(self) -> None:
        if self.running and self.popen is not None:
            self.popen.send_signal(signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        """Wait for a terminated node until `deadline`, then SIGKILL its session."""
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        _signal_group(self.popen.pid, signal.SIGKILL)  # a worker left behind in its session
        if self.lives and self.lives[-1][1] is None:
            self.lives[-1][1] = time.time()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the node's own session: its pid is the group id
    except (ProcessLookupError, PermissionError):
        pass


class MinerCgroup:
    """A cgroup (v1 cpu controller) whose quota caps all miner workers together, or nothing if unavailable."""

    def __init__(self, name: str, cores: float) -> None:
        self.path = CGROUP_CPU / name
        self.assigned: set[int] = set()
        self.available = False
        try:
            self.path.mkdir()
            (self.path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(max(1000, int(cores * CFS_PERIOD_US))))
            self.available = True
        except OSError:
            self.available = False

    def set_quota(self, cores: float) -> None:
        if self.available:
            try:
                (self.path / "cpu.cfs_quota_us").write_text(str(max(1000, int(cores * CFS_PERIOD_US))))
            except OSError:
                pass

    def adopt_workers(self, nodes: list[LabNode]) -> int:
        """Move the miner nodes' child processes (their hash workers) into the cgroup; how many were new."""
        if not self.available:
            return 0
        moved = 0
        for node in nodes:
            if not node.miner or not node.running or node.popen is None:
                continue
            try:
                children = psutil.Process(node.popen.pid).children(recursive=True)
            except psutil.Error:
                continue
            for child in children:
                if child.pid in self.assigned:
                    continue
                try:
                    (self.path / "cgroup.procs").write_text(str(child.pid))
                    self.assigned.add(child.pid)
                    moved += 1
                except OSError:
                    pass
        return moved

    def remove(self, timeout: float = 10.0) -> None:
        """Remove the cgroup once its last worker is gone (a killed node's worker exits on its own, soon)."""
        if not self.available:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.2)


class RelayProcess:
    """The relay (sim/lab/relay.py) as a child process, driven by JSON lines on its stdin."""

    def __init__(self, config: dict[str, Any], log: Path) -> None:
        self.err = open(log, "ab")
        self.popen = subprocess.Popen([sys.executable, "-m", "sim.lab.relay", json.dumps(config)], cwd=ROOT,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                      start_new_session=True)
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the relay did not start (see {log})")

    def send(self, **command: Any) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(command) + "\n")
        self.popen.stdin.flush()

    def stats(self) -> dict[str, Any]:
        self.send(cmd="stats")
        assert self.popen.stdout is not None
        return json.loads(self.popen.stdout.readline())

    def stop(self) -> None:
        try:
            self.send(cmd="stop")
            self.popen.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.popen.kill()
            self.popen.wait()
        self.err.close()
