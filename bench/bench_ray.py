"""Hash rate through Ray against local worker processes, on this machine's cores, in one run.

Run by hand (as root: it needs a private network namespace):
    python bench/bench_ray.py [--seconds 8] [--rounds 4] [--workers N]

It re-runs itself inside `unshare --net --pid` with only loopback up, so Ray's
processes can reach nothing but 127.0.0.1 and die with the namespace. There it
starts a Ray head (usage stats and dashboard off, token authentication on) with
one CPU per worker, then alternates, round by round:

(a) baseline: N local worker processes (mining/worker_backends.py ProcessWorker,
    what `--miners N` runs), hashing work at a difficulty nothing reaches;
(r) N Ray workers (RayWorker: a local bridge process each, relaying to a Ray
    actor that runs the same hash loop), the very code path `--ray-address` runs.

Both sets are started once, before the rounds, and idle between their turns, so
a round measures only hashing (the sum of the workers' own hash reports over
`--seconds`, after a 1 s warm-up), and also per CPU-second used by the processes
doing the work (for Ray: its workers and their bridges), which load from other
programs hardly moves. Each round prints (r)/(a); the median is the figure. The
machine is shared, so each round's pair ran back to back and the ratio is what to
read, not the absolute rates.

Then, for each backend, the round trip from sending work at difficulty 1 to its
"found" report (the way there is the way a tip change travels to a worker).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INSIDE = "POW_BENCH_RAY_INSIDE"
WARMUP = 1.0
DIFFICULTY = 64  # nothing reaches it: the workers just hash
PREFIX = b"f" * 64 + b"bench" + b"bench message" + (1_700_000_000).to_bytes(8, "big")


class Tally:
    """Hash reports of one worker, read by a thread: (time, count) samples."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.samples: list[tuple[float, int]] = []
        self.events: list[tuple[Any, ...]] = []
        self.found: dict[int, float] = {}  # work id -> when its "found" report arrived
        self.started = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        conn = self.worker.from_worker
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message[0] == "hashes":
                self.samples.append((time.monotonic(), int(message[1])))
            elif message[0] == "found":
                self.found[int(message[1])] = time.monotonic()
            else:
                self.events.append(message)
                if message[0] == "ray_started":
                    self.worker.started(*message[1:])
                    self.started.set()
                elif message[0] in ("ray_unavailable", "ray_died"):
                    self.started.set()

    def hashes_between(self, start: float, end: float) -> int:
        return sum(count for t, count in self.samples if start < t <= end)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def measure(tallies: list[Tally], seconds: float, tag: str) -> tuple[float, float]:
    """Give every worker work, hash for WARMUP + seconds, idle them.

    Hashes/s in the window, and hashes per CPU-second of the processes that did
    the work (for Ray: the Ray workers *and* their bridges), which load from other
    programs on the machine hardly moves.
    """
    processes = []
    for tally in tallies:
        for pid in {tally.worker.pid, tally.worker.child_pid}:
            processes.append(psutil.Process(pid))
    for i, tally in enumerate(tallies):
        tally.worker.to_worker.send(("work", 1, PREFIX, DIFFICULTY, f"{i:x}-{tag}"))
    time.sleep(WARMUP)
    start, cpu_start = time.monotonic(), cpu_seconds(processes)
    time.sleep(seconds)
    end, cpu_end = time.monotonic(), cpu_seconds(processes)
    for tally in tallies:
        tally.worker.to_worker.send(("idle",))
    time.sleep(0.3)  # the last reports of the window arrive
    hashes = sum(t.hashes_between(start, end) for t in tallies)
    return hashes / (end - start), hashes / max(cpu_end - cpu_start, 1e-9)


def work_latency(tally: Tally, tries: int) -> list[float]:
    """Seconds from sending work (difficulty 1: the first batch finds a nonce) to its "found"
    report: the way there (as a tip change travels) and back, plus one short batch."""
    delays = []
    for n in range(tries):
        work_id = 1000 + n
        sent = time.monotonic()
        tally.worker.to_worker.send(("work", work_id, PREFIX + secrets.token_bytes(4), 1, f"l{n:x}-"))
        deadline = sent + 5.0
        while work_id not in tally.found and time.monotonic() < deadline:
            time.sleep(0.0005)
        if work_id in tally.found:
            delays.append(tally.found[work_id] - sent)
        time.sleep(0.02)
    return delays


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(seconds: float, rounds: int, workers: int) -> None:
    from mining.kernel import select_kernel
    from mining.worker_backends import ProcessWorker, RayWorker

    work = Path(tempfile.mkdtemp(prefix="rayb", dir="/tmp"))
    os.environ.update(HOME=str(work), RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
                      RAY_AUTH_TOKEN=secrets.token_hex(32))
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    started: list[Any] = []
    try:
        subprocess.run([ray_bin, "start", "--head", f"--num-cpus={workers}", "--node-ip-address=127.0.0.1",
                        f"--port={port}", "--include-dashboard=false", "--disable-usage-stats",
                        f"--temp-dir={work / 'ray'}"], check=True, capture_output=True, timeout=180)
        local = [Tally(ProcessWorker(i)) for i in range(workers)]
        remote = [Tally(RayWorker(i, f"127.0.0.1:{port}")) for i in range(workers)]
        started = [t.worker for t in local + remote]
        for tally in remote:
            if not tally.started.wait(120) or tally.worker.ray_pid is None:
                raise SystemExit(f"Ray worker did not start: {tally.events}")
        kernels = {e[1] for t in local + remote for e in t.events if e[0] == "kernel"}
        print(f"{workers} workers each way, kernel {select_kernel().name} (reported: {', '.join(sorted(kernels))}), "
              f"{seconds:g} s per measure after a {WARMUP:g} s warm-up, {rounds} rounds", flush=True)
        measure(local, 2.0, "w0")  # warm-up, not counted (first work, caches, Ray's first calls)
        measure(remote, 2.0, "w1")
        ratios, cpu_ratios = [], []
        for n in range(1, rounds + 1):
            # Alternate which goes first, so a trend in the machine's load favours neither.
            order = [("local", local), ("ray", remote)] if n % 2 else [("ray", remote), ("local", local)]
            rates = {name: measure(tallies, seconds, f"{n:02x}{name[0]}") for name, tallies in order}
            ratio = rates["ray"][0] / rates["local"][0]
            cpu_ratio = rates["ray"][1] / rates["local"][1]
            ratios.append(ratio)
            cpu_ratios.append(cpu_ratio)
            print(f"round {n}: (a) local processes {rates['local'][0] / 1e6:6.2f} MH/s "
                  f"({rates['local'][1] / 1e6:5.2f} MH/CPU-s)   (r) Ray workers {rates['ray'][0] / 1e6:6.2f} MH/s "
                  f"({rates['ray'][1] / 1e6:5.2f} MH/CPU-s)   (r)/(a) {ratio:.3f} (per CPU-s {cpu_ratio:.3f})", flush=True)
        latency = {}
        for name, tallies in (("local", local), ("ray", remote)):
            delays = sorted(d for tally in tallies for d in work_latency(tally, 20))
            latency[name] = {"median_ms": round(1000 * statistics.median(delays), 1),
                             "p90_ms": round(1000 * delays[int(0.9 * (len(delays) - 1))], 1), "n": len(delays)}
            print(f"work -> found round trip, {name}: median {latency[name]['median_ms']} ms, "
                  f"90th percentile {latency[name]['p90_ms']} ms ({len(delays)} tries)", flush=True)
        print(json.dumps({"median_ratio": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
                          "median_ratio_per_cpu_second": round(statistics.median(cpu_ratios), 3),
                          "latency": latency}))
    finally:
        for worker in started:
            worker.stop()
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0, help="workers each way (default: one per usable CPU)")
    args = parser.parse_args()
    workers = args.workers or len(os.sched_getaffinity(0))
    if os.environ.get(INSIDE):
        if os.getpid() == 1:  # pid 1 of the namespace: reap Ray's orphans while a child runs the bench
            child = subprocess.Popen([sys.executable, *sys.argv])
            while True:
                pid, status = os.wait()
                if pid == child.pid:
                    sys.exit(os.waitstatus_to_exitcode(status))
        run(args.seconds, args.rounds, workers)
        return
    if shutil.which("unshare") is None:
        sys.exit("needs unshare (util-linux) to keep Ray on a loopback-only network namespace")
    inner = f'ip link set lo up && exec "{sys.executable}" "{Path(__file__).resolve()}" ' + " ".join(
        f'"{a}"' for a in sys.argv[1:])
    code = subprocess.call(["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c", inner],
                           env=dict(os.environ, **{INSIDE: "1"}))
    if code:
        sys.exit(f"bench failed (exit {code}); it needs root for `unshare --net`")


if __name__ == "__main__":
    main()
