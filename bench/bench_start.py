"""Start time, memory and STATS latency of a node on a big data dir, each against a baseline from the same run.

Run by hand (data dirs from bench/make_chain.py):
    python bench/bench_start.py --data-dir /tmp/chain-1m [--lookups 20]
    python bench/bench_start.py --switch-dir /tmp/chain-1m-fork   # a data dir with a staged fork

1. start: `run_node.py` on a copy-free data dir (its own process, no miners, no peers): the
   time to the first STATS answer, the time until STATS says the full height, and the
   process's peak RSS (sampled every 20 ms).
2. with `--lookups S`: STATS p95 / median over S seconds while idle (the baseline), then
   while 4 clients look up random unknown hashes in the explorer (GET /block/<hash>);
   prints both and the ratio.
3. with `--switch-dir`: an in-process node on a data dir whose staging table holds a
   long fork (make_chain.py --stage-fork-at): ChainKeeper is told to switch to it, as a
   sync does, while a client sends STATS every 2 ms; prints the switch's time and the
   longest STATS stall, against the longest stall while idle.
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
DEBUG = False  # True: on a slow STATS, print which actors were busy (set it from a wrapper)
STATS = b'{"type":"STATS"}'


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StatsClient:
    """One UDP socket asking STATS; `ask` returns (height, seconds) or None on a timeout."""

    def __init__(self, port: int, timeout: float = 0.5) -> None:
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(timeout)
        self.probes = 0  # address checks the node sent us (answered)

    def ask(self) -> tuple[int, float] | None:
        started = time.perf_counter()
        self.sock.sendto(STATS, self.addr)
        while True:
            try:
                data, _ = self.sock.recvfrom(65536)
            except (socket.timeout, ConnectionRefusedError):
                return None
            message = json.loads(data)
            if message.get("type") == "STATS":
                # The node checks our address (its probe) instead of answering: answer it and ask again.
                self.sock.sendto(b'{"type":"STATS_REPLY","height":0,"hash":null}', self.addr)
                self.sock.sendto(STATS, self.addr)
                self.probes += 1
            if message.get("type") == "STATS_REPLY":
                return int(message.get("height") or 0), time.perf_counter() - started

    def close(self) -> None:
        self.sock.close()


def p95(samples: list[float]) -> float:
    return sorted(samples)[max(0, int(len(samples) * 0.95) - 1)]


def start_phase(data_dir: Path, difficulty: int, lookups: float) -> None:
    from chain.store import ChainStore

    store = ChainStore(data_dir)
    full = store.height()
    store.close()
    port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    args = [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--name", "bench-start",
            "--difficulty", str(difficulty), "--miners", "0", "--data-dir", str(data_dir), "--http-port", str(http_port)]
    client = StatsClient(port, timeout=0.02)
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    peak = 0
    first = full_at = None
    try:
        while full_at is None:
            peak = max(peak, ps.memory_info().rss)
            answer = client.ask()
            now = time.perf_counter() - started
            if answer is not None:
                if first is None:
                    first = (now, answer[0])
                if answer[0] >= full:
                    full_at = now
            if proc.poll() is not None:
                raise RuntimeError(f"node exited with {proc.returncode}")
            if now > 300:
                raise RuntimeError("not at full height within 300 s")
            time.sleep(0.02)
        assert first is not None
        print(f"start on {full:,} blocks: first STATS answer after {first[0]:.2f} s (height {first[1]:,}), "
              f"full height after {full_at:.1f} s, peak RSS so far {peak / 2**20:.0f} MiB", flush=True)
        if lookups:
            lookup_phase(client, http_port, lookups, ps)
        peak = max(peak, ps.memory_info().rss)
        print(f"peak RSS {peak / 2**20:.0f} MiB (goal < 250 MB = {250e6 / 2**20:.0f} MiB)", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        client.close()


def lookup_phase(client: StatsClient, http_port: int, seconds: float, ps: psutil.Process) -> None:
    client.sock.settimeout(1.0)

    def measure() -> list[float]:
        times: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            answer = client.ask()
            times.append(answer[1] if answer is not None else 1.0)
            time.sleep(0.005)
        return times

    quiet = measure()
    stop = threading.Event()
    counts = [0] * 4

    def explorer(i: int) -> None:
        rng = random.Random(i)
        while not stop.is_set():
            wanted = "%064x" % rng.getrandbits(256)
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/block/{wanted}", timeout=5).read()
            except Exception:  # noqa: BLE001 - a 404 is the expected answer for an unknown hash
                pass
            counts[i] += 1

    threads = [threading.Thread(target=explorer, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        busy = measure()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    q95, b95 = p95(quiet) * 1e3, p95(busy) * 1e3
    print(f"STATS quiet: median {statistics.median(quiet) * 1e3:.2f} ms, p95 {q95:.2f} ms ({len(quiet)} asks) | "
          f"4 explorer clients ({sum(counts) / seconds:.0f} unknown-hash lookups/s): median {statistics.median(busy) * 1e3:.2f} ms, "
          f"p95 {b95:.2f} ms | p95 ratio {b95 / q95:.2f}x (goal p95 < 5 ms)", flush=True)


def switch_phase(data_dir: Path, difficulty: int) -> None:
    from chain.store import ChainStore
    from config import NodeConfig
    from node import Node

    store = ChainStore(data_dir)
    run = store.staged_run()
    height = store.height()
    store.close()
    if run is None:
        raise SystemExit(f"{data_dir} has no staged run (make_chain.py --stage-fork-at)")
    low, high = run
    port = free_port(socket.SOCK_DGRAM)
    config = NodeConfig(host="127.0.0.1", bind_host="127.0.0.1", port=port, name="bench-switch", difficulty=difficulty,
                        data_dir=data_dir, http_port=0, miners=0)
    node = Node(config).start()
    client = StatsClient(port, timeout=5.0)
    try:
        while (client.ask() or (0, 0))[0] < height:
            time.sleep(0.05)

        slow: list[tuple[float, float]] = []

        def longest_stall(until) -> tuple[float, int]:
            worst, asks = 0.0, 0
            while not until():
                at = time.perf_counter()
                answer = client.ask()
                took = answer[1] if answer is not None else 5.0
                if took > 0.05:
                    slow.append((at, took))
                    if DEBUG:
                        busy = [(a["name"], a.get("current"), a.get("busy_for")) for a in node.health_facts()["actors"]
                                if a.get("activity") in ("busy", "hung")]
                        print("   slow STATS:", round(took, 3), busy, flush=True)
                worst = max(worst, took)
                asks += 1
                time.sleep(0.002)
            return worst, asks

        idle_end = time.perf_counter() + 3
        idle, _ = longest_stall(lambda: time.perf_counter() > idle_end)
        chain = node.chain()
        started = time.perf_counter()
        chain.switch_to_staged_and_reply(999_999_999, low.height, high.height, high.hash)
        worst, asks = longest_stall(lambda: (client.ask() or (0, 0))[0] == high.height + 1)
        took = time.perf_counter() - started
        print(f"switch of {height - low.height:,} blocks for {high.height + 1 - low.height:,} staged: {took:.1f} s; "
              f"longest STATS stall meanwhile {worst * 1e3:.1f} ms over {asks} asks (idle baseline {idle * 1e3:.1f} ms; "
              f"ratio {worst / idle:.1f}x; goal < 50 ms)", flush=True)
        if slow:
            print("  asks over 50 ms (seconds after the switch was told: ms): "
                  + ", ".join(f"{at - started:.1f}: {took * 1e3:.0f}" for at, took in slow[:20]), flush=True)
    finally:
        client.close()
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--switch-dir", type=Path)
    parser.add_argument("--difficulty", type=int, default=1)
    parser.add_argument("--inline-switch", action="store_true",
                        help="baseline: the switch inside ChainKeeper's message (as before the switch thread)")
    parser.add_argument("--lookups", type=float, default=0.0, help="seconds of STATS timing, idle then under explorer lookups")
    args = parser.parse_args()
    if args.data_dir:
        start_phase(args.data_dir, args.difficulty, args.lookups)
    if args.switch_dir:
        if args.inline_switch:
            import actors.chain_keeper

            actors.chain_keeper.INLINE_SWITCH_ROWS = 10**12
        switch_phase(args.switch_dir, args.difficulty)
    if not args.data_dir and not args.switch_dir:
        parser.error("pass --data-dir and/or --switch-dir")


if __name__ == "__main__":
    main()
