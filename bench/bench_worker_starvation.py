"""Miner workers starved of CPU by a cgroup quota: restarts as "stalled", old rule vs new.

Run by hand, as root, with the cgroup v1 cpu controller mounted:

    python bench/bench_worker_starvation.py [--seconds 120] [--miners 10] [--cores 0.01]

It starts `run_node.py --miners N` (loopback, its own data dir, no peers, a
difficulty nothing reaches) and, as the network lab does, moves the node's child
processes (its hash workers) into one cgroup capped at `--cores` (period 100 ms)
every 0.1 s, so a worker started by a restart is capped within 0.1 s too. Two runs
of `--seconds` each:

* old: the node judges a silent worker by wall-clock silence alone (10 s without a
  report and it is killed), and workers size their batches as before (no hold at the
  minimum after being throttled): the rule replaced, patched in for this run only;
* new: the node as it is.

For each: MinerActor restarts (from /health), "stalled" / "kept" / "replaced" log
lines, hashes done by all workers together (from /metrics). Then, on the new node,
the cap is lifted and one worker that is reporting is SIGSTOPped: seconds until it
is killed and its MinerActor restarted.
Prints one line per figure and the old/new ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.lab.processes import MinerCgroup  # noqa: E402

DIFFICULTY = 20  # nothing is found: the workers just hash and report

# The old judgement, for the baseline run only: killed after STALL_TIMEOUT of silence, whatever the process is doing.
OLD_NODE = """\
import runpy, sys
sys.path.insert(0, {root!r})
import actors.miner as miner
from mining.stall import ALIVE, HUNG, Verdict

def wall_clock_only(silent, timeout, status, cpu_used, *rest):
    return Verdict(HUNG, f"no report for {{silent:.1f}}s") if silent > timeout else Verdict(ALIVE, "")

miner.judge_silence = wall_clock_only
sys.argv = [{run_node!r}, *sys.argv[1:]]
runpy.run_path({run_node!r}, run_name="__main__")
"""
# ...and the workers' old batch sizing (every process of that run imports this first).
OLD_WORKER = """\
import sys
sys.path.insert(0, {root!r})
import mining.worker
mining.worker.STARVED_HOLD = 0.0
"""


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.read()
    except OSError:
        return None


class StarvedNode:
    """A node whose hash workers live in a CPU-capped cgroup."""

    def __init__(self, work: Path, label: str, miners: int, cores: float, old: bool) -> None:
        self.dir = work / label
        self.dir.mkdir()
        self.http = f"http://127.0.0.1:{free_port(socket.SOCK_STREAM)}"
        args = ["--host", "127.0.0.1", "--port", str(free_port(socket.SOCK_DGRAM)), "--http-host", "127.0.0.1",
                "--http-port", self.http.rsplit(":", 1)[1], "--name", f"starve-{label}", "--miners", str(miners),
                "--difficulty", str(DIFFICULTY), "--data-dir", str(self.dir / "data"),
                "--log-file", str(self.dir / "node.log")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("POW_NODE_")}
        if old:
            site = self.dir / "site"
            site.mkdir()
            (site / "sitecustomize.py").write_text(OLD_WORKER.format(root=str(ROOT)))
            (self.dir / "old_node.py").write_text(OLD_NODE.format(root=str(ROOT), run_node=str(ROOT / "run_node.py")))
            env["PYTHONPATH"] = str(site)
            command = [sys.executable, str(self.dir / "old_node.py"), *args]
        else:
            command = [sys.executable, str(ROOT / "run_node.py"), *args]
        self.cgroup = MinerCgroup(f"bench-starve-{os.getpid()}-{label}", cores)
        if not self.cgroup.available:
            raise SystemExit("needs root and the cgroup v1 cpu controller at /sys/fs/cgroup/cpu")
        self.adopted: set[int] = set()
        self.err = open(self.dir / "stderr.log", "wb")
        self.popen = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err,
                                      env=env, start_new_session=True)

    def adopt(self) -> None:
        """Move the node's new child processes into the cgroup (the lab does this every 0.1 s)."""
        try:
            children = psutil.Process(self.popen.pid).children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            if child.pid not in self.adopted:
                try:
                    (self.cgroup.path / "cgroup.procs").write_text(str(child.pid))
                    self.adopted.add(child.pid)
                except OSError:
                    pass

    def health(self) -> dict[str, Any] | None:
        body = get(self.http + "/health")
        return json.loads(body) if body else None

    def restarts(self) -> int:
        doc = self.health() or {}
        return sum(a.get("restarts", 0) for a in doc.get("actors", []) if a.get("name", "").startswith("MinerActor"))

    def hashes(self) -> float:
        body = (get(self.http + "/metrics") or b"").decode()
        return sum(float(m.group(1)) for m in re.finditer(r"^node_miner_hashes_total\{[^}]*\} (\S+)$", body, re.M))

    def log_count(self, text: str) -> int:
        try:
            return (self.dir / "node.log").read_text(errors="replace").count(text)
        except OSError:
            return 0

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.adopt()
            time.sleep(0.1)

    def stop(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()
        self.err.close()
        self.cgroup.remove()


def run(work: Path, label: str, args: argparse.Namespace, old: bool, sigstop: bool) -> dict[str, Any]:
    node = StarvedNode(work, label, args.miners, args.cores, old)
    try:
        started = time.monotonic()
        while node.health() is None:
            if node.popen.poll() is not None or time.monotonic() - started > 120:
                raise SystemExit(f"{label}: the node did not start (see {node.dir})")
            node.adopt()
            time.sleep(0.1)
        node.run_for(args.seconds)
        result = {"restarts": node.restarts(), "stalled": node.log_count(" stalled: "),
                  "kept": node.log_count(" kept: "), "replaced": node.log_count("replaced although not seen hung"),
                  "hashes": node.hashes()}
        if sigstop:
            result.update(sigstop_check(node))
        return result
    finally:
        node.stop()


def miners(node: StarvedNode) -> dict[str, dict[str, Any]]:
    doc = node.health() or {}
    return {a["name"]: a for a in doc.get("actors", []) if a.get("name", "").startswith("MinerActor")}


def sigstop_check(node: StarvedNode) -> dict[str, Any]:
    """With the cap lifted to one core, SIGSTOP a worker that is reporting: seconds until it is
    killed and until its MinerActor is restarted (the stall timeout is 10 s)."""
    node.cgroup.set_quota(1.0)
    before = miners(node)
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        node.adopt()
        time.sleep(0.5)
        now = miners(node)
        for name, entry in now.items():
            if name in before and entry.get("pid") == before[name].get("pid") and \
                    (entry.get("hashes_total") or 0) > (before[name].get("hashes_total") or 0):
                victim = (name, entry["pid"], entry["restarts"])
                break
        before = now
    if victim is None:
        return {"sigstop_killed_s": None, "sigstop_restarted_s": None}
    name, pid, restarts = victim
    stopped_at = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    gone = restarted = None
    while time.monotonic() - stopped_at < 120 and (gone is None or restarted is None):
        node.adopt()
        elapsed = time.monotonic() - stopped_at
        try:
            dead = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            dead = True
        if gone is None and dead:
            gone = elapsed
        if restarted is None and miners(node).get(name, {}).get("restarts", restarts) > restarts:
            restarted = elapsed
        time.sleep(0.05)
    return {"sigstop_killed_s": None if gone is None else round(gone, 2),
            "sigstop_restarted_s": None if restarted is None else round(restarted, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--miners", type=int, default=10)
    parser.add_argument("--cores", type=float, default=0.01, help="the cgroup's quota, in cores (at least 0.01)")
    args = parser.parse_args()
    print(f"# {args.miners} workers capped together at {args.cores} cores (period 100 ms), {args.seconds:.0f} s a run, "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-starve-") as tmp:
        work = Path(tmp)
        old = run(work, "old", args, old=True, sigstop=False)
        print("old (wall-clock silence only):", json.dumps(old))
        new = run(work, "new", args, old=False, sigstop=True)
        print("new (evidence of a hang):     ", json.dumps(new))
    per_min = 60.0 / args.seconds
    print(f"stall restarts per minute: old {old['restarts'] * per_min:.1f}, new {new['restarts'] * per_min:.1f}"
          f" (new/old = {new['restarts'] / old['restarts'] if old['restarts'] else float('nan'):.3f})")
    print(f"hashes done: new/old = {new['hashes'] / old['hashes'] if old['hashes'] else float('nan'):.2f}")
    print(f"SIGSTOPped worker killed after {new['sigstop_killed_s']}s, MinerActor restarted after "
          f"{new['sigstop_restarted_s']}s (stall timeout 10 s)")


if __name__ == "__main__":
    main()
