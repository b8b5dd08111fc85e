"""One authenticated external miner flooding `hashes` lines at a node's miner gateway, on loopback only.

Run by hand:  python bench/bench_gateway_flood.py [--seconds 30] [--rate 93000] [--root DIR]

The node runs as its own process (`run_node.py` from --root, this tree by
default: point it at a checkout of older code to compare), with its ops HTTP on.
A flooder process authenticates and writes `{"type":"hashes","count":1}` lines
at --rate lines/s (as fast as it can when that is more than the kernel takes),
reconnecting whenever it is dropped, as an attacker would. Measured in the same
run, each against the quiet baseline before it:

* the node's CPU share of one core (its process's user+system time over wall time);
* its RSS: baseline, peak during the flood, and 10 s after;
* the gateway actor's inbox (queue depth from /health, sampled each second) and
  the gateway's own count of line batches waiting (when the node reports it);
* STATS round trips (a padded STATS every 50 ms from another socket): p95 and
  the share answered within 1 s.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.flood import StatsProbe  # noqa: E402

TOKEN = "bench-token"
LINE = b'{"type":"hashes","count":1}\n'


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flood(port: int, rate: float, seconds: float, counters: Any) -> None:
    """The flooder process: `rate` lines/s attempted for `seconds`, reconnecting when dropped."""
    end = time.monotonic() + seconds
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    chunk = LINE * per_tick
    while time.monotonic() < end:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.sendall(json.dumps({"type": "auth", "token": TOKEN}).encode() + b"\n")
            counters[2] += 1  # connections
            next_tick = time.monotonic()
            while time.monotonic() < end:
                counters[0] += per_tick  # attempted
                sock.settimeout(max(0.01, end - time.monotonic()))
                try:
                    sock.sendall(chunk)
                except socket.timeout:
                    break
                counters[1] += per_tick  # taken by the kernel
                next_tick += tick
                delay = next_tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            sock.close()
        except OSError:
            time.sleep(0.05)  # dropped: come back


def health(http_port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=5) as response:
        return json.load(response)


def gateway_entry(http_port: int) -> dict[str, Any]:
    try:
        return next(a for a in health(http_port)["actors"] if a["name"] == "MinerGateway")
    except (OSError, ValueError, StopIteration):
        return {}


def p95(latencies: list[float | None]) -> float:
    values = sorted(x if x is not None else 1.0 for x in latencies)
    return values[int(0.95 * (len(values) - 1))] * 1000 if values else float("nan")


def phase(node: psutil.Process, udp_port: int, http_port: int, seconds: float) -> dict[str, Any]:
    """Watch the node for `seconds`: CPU share, RSS samples, gateway inbox, STATS round trips."""
    probe = StatsProbe(("127.0.0.1", udp_port)).start()
    cpu0 = node.cpu_times()
    start = time.monotonic()
    rss, inbox, batches = [], [], []
    while time.monotonic() - start < seconds:
        rss.append(node.memory_info().rss)
        entry = gateway_entry(http_port)
        inbox.append(entry.get("queue_depth") or 0)
        if "inbox_batches" in entry:
            batches.append(entry["inbox_batches"])
        time.sleep(max(0.0, 1.0 - (time.monotonic() - start) % 1.0))
    wall = time.monotonic() - start
    cpu1 = node.cpu_times()
    probe.stop()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    answered = [x for x in probe.latencies if x is not None]
    return {"cpu": cpu / wall, "rss_peak": max(rss), "rss_last": rss[-1], "inbox_max": max(inbox),
            "batches_max": max(batches) if batches else None, "p95_ms": p95(probe.latencies),
            "median_ms": statistics.median(answered) * 1000 if answered else float("nan"),
            "within_1s": probe.answered_within(1.0), "stats": len(probe.latencies),
            "gateway": gateway_entry(http_port)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=93_000.0)
    parser.add_argument("--quiet-seconds", type=float, default=10.0)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()

    udp, http, gateway = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(udp), "--name", "bench",
                   "--difficulty", "8", "--data-dir", str(Path(tmp) / "node"), "--http-port", str(http),
                   "--miner-listen", str(gateway), "--miner-token", TOKEN, "--log-file", str(Path(tmp) / "node.log")]
        proc = subprocess.Popen(command, cwd=args.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not gateway_entry(http) and time.monotonic() < deadline:
                time.sleep(0.2)
            node = psutil.Process(proc.pid)
            time.sleep(2)  # settle
            quiet = phase(node, udp, http, args.quiet_seconds)
            counters = multiprocessing.Array("q", 3, lock=False)
            flooder = multiprocessing.Process(target=flood, args=(gateway, args.rate, args.seconds, counters))
            flooder.start()
            loud = phase(node, udp, http, args.seconds)
            flooder.join(10)
            after = phase(node, udp, http, args.quiet_seconds)
        finally:
            proc.terminate()
            proc.wait(10)

    attempted, taken, connections = counters[0], counters[1], counters[2]
    g = loud["gateway"]
    print(f"root: {args.root}")
    print(f"flooder: aiming at {args.rate:,.0f} lines/s, reached its send() at {attempted / args.seconds:,.0f} lines/s, "
          f"the kernels took {taken / args.seconds:,.0f} lines/s (mostly into the flooder's own send buffer; the rest held back by TCP flow control), "
          f"{connections} connection(s); gateway handled {g.get('lines', 'n/a')} lines, "
          f"{g.get('budget_drops', 'n/a')} budget drop(s)")
    print(f"node CPU (share of a core): quiet {quiet['cpu']:.1%}, flood {loud['cpu']:.1%}, after {after['cpu']:.1%} "
          f"(flood/quiet {loud['cpu'] / max(quiet['cpu'], 1e-9):.2f}x; goal <= 10% during the flood)")
    mib = 2**20
    print(f"RSS: quiet {quiet['rss_last'] / mib:.1f} MiB, flood peak {loud['rss_peak'] / mib:.1f} MiB "
          f"({loud['rss_peak'] / quiet['rss_last']:.2f}x), 10 s after {after['rss_last'] / mib:.1f} MiB "
          f"({after['rss_last'] / quiet['rss_last']:.2f}x)")
    print(f"gateway inbox (queue depth, max of 1 s samples): quiet {quiet['inbox_max']}, flood {loud['inbox_max']}, "
          f"after {after['inbox_max']}; line batches waiting, max: {loud['batches_max']} "
          f"(peak seen by the gateway: {g.get('inbox_batches_peak', 'n/a')})")
    print(f"STATS p95: quiet {quiet['p95_ms']:.1f} ms, flood {loud['p95_ms']:.1f} ms "
          f"({loud['p95_ms'] / quiet['p95_ms']:.2f}x; goal < 5 ms), after {after['p95_ms']:.1f} ms; "
          f"median quiet {quiet['median_ms']:.2f} / flood {loud['median_ms']:.2f} ms; "
          f"within 1 s: {quiet['within_1s']:.1%} / {loud['within_1s']:.1%} of {quiet['stats']} / {loud['stats']}")


if __name__ == "__main__":
    main()
