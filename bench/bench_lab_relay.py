"""The lab's UDP relay under node-shaped traffic: its CPU, its kernel drops, the delay it adds.

Run by hand:  python bench/bench_lab_relay.py [--rates 1500,3000,6000] [--seconds 8] [--burners 2]
              [--baseline-file OLD_RELAY.py] [--no-realtime]

The relay starts exactly as a lab run starts it (`sim.lab.processes.RelayProcess`, the
lab's addresses and port pick, the lab's 5-region RTT table) for 110 nodes. The nodes
are 110 plain UDP sockets bound to the nodes' addresses, in two processes sharing
them: this one sends, a forked child receives. Jitter, loss and uplink are off, so
every datagram's model delay is exactly RTT/2 of its two regions and what it took
beyond that is the relay's own doing (plus the loopback, a few microseconds).

Traffic comes in floods shaped like a node relaying a block or a gossip round: one
random node sends one ~150 B datagram to `--fanout` other nodes back to back (so one
datagram lands at that many relay sockets within a millisecond), floods spaced so the
total is the asked rate (`achieved` says what the sender managed on a busy machine).
Per rate it prints:

- the relay's CPU (psutil, % of one core) and CPU microseconds per datagram forwarded;
- kernel drops at the relay's sockets and at the stand-in nodes' sockets (/proc/net/udp);
- the true extra delay: kernel arrival time at the destination socket (SO_TIMESTAMPNS)
  minus the send time minus the model's delay, p50 / p99 / max, and the share over 100 ms
  (a send that itself took over 1 ms, the sender preempted, is left out: `stalled`);
- what the relay says of itself (`late_ms`: share over 100 ms, max; kernel drops), to compare.

`--burners N` runs N busy loops (`python -c 'while True: pass'`) beside it, each in its
own session as the lab starts each node (with autogroup scheduling that is what makes
them compete with the relay as the nodes do); they are killed by pid at the end.
`--baseline-file` also runs another relay file first (e.g. the committed one, from
`git show HEAD:sim/lab/relay.py > /tmp/relay_before.py`) in the same run and prints
each figure of the current relay as a ratio of it. `--no-realtime` runs the current
relay on its fallback scheduling (nice -10 for itself and its session).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.lab.model import rtt_matrix  # noqa: E402
from sim.lab.processes import ROOT, RelayProcess  # noqa: E402
from sim.lab.relay import udp_sockets  # noqa: E402
from sim.lab.run import Lab, _free_port_pair  # noqa: E402

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
HEADER = struct.Struct("!dIIII")  # sent (CLOCK_REALTIME), phase, from node, to node, sequence number
STALLED_S = 0.001  # a send that took longer than this (the sender preempted) is left out of the delays
SIZE = 150
REGIONS = 5
QUIET_S = 1.0  # a phase is over when nothing arrived for this long after the last send


class FileRelay(RelayProcess):
    """The baseline: another relay file, started the way RelayProcess starts the lab's."""

    def __init__(self, path: Path, config: dict[str, Any], log: Path) -> None:  # noqa: D401 - same protocol, other file
        self.err = open(log, "ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.popen = subprocess.Popen([sys.executable, str(path), __import__("json").dumps(config)], cwd=ROOT, env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                      start_new_session=True)
        assert self.popen.stdout is not None
        if self.popen.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{path} did not start (see {log})")


def receiver(socks: list[socket.socket], rtt: list[list[float]], regions: list[int], conn: Any) -> None:
    """The stand-in nodes' receiving side (a forked child): extra delay of every datagram, per phase."""
    sel = selectors.DefaultSelector()
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ)
    sel.register(conn, selectors.EVENT_READ)
    extra: dict[int, dict[int, float]] = {}  # phase -> sequence number -> extra delay (ms)
    last = time.monotonic()
    space = socket.CMSG_SPACE(16)
    while True:
        for key, _ in sel.select(0.2):
            if key.fileobj is conn:
                message = conn.recv()
                if message is None:
                    return
                phase, stalled = message
                # the sender is done with `phase`: answer once nothing has arrived for QUIET_S
                while time.monotonic() - last < QUIET_S:
                    for k, _ in sel.select(0.05):
                        if k.fileobj is not conn:
                            last = _drain(k.fileobj, space, rtt, regions, extra) or last
                got = extra.pop(phase, {})
                conn.send((len(got), sorted(ms for seq, ms in got.items() if seq not in stalled)))
                continue
            last = _drain(key.fileobj, space, rtt, regions, extra) or last


def _drain(sock: Any, space: int, rtt: list[list[float]], regions: list[int], extra: dict[int, dict[int, float]]) -> float | None:
    got = None
    while True:
        try:
            data, ancdata, _, _ = sock.recvmsg(2048, space)
        except BlockingIOError:
            return got
        got = time.monotonic()
        arrived = next((sec + ns / 1e9 for level, kind, raw in ancdata if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS
                        for sec, ns in [struct.unpack("qq", raw[:16])]), time.time())
        sent, phase, src, dst, seq = HEADER.unpack_from(data)
        extra.setdefault(phase, {})[seq] = (arrived - sent - rtt[regions[src]][regions[dst]] / 2000.0) * 1000.0


def drops(addresses: set[tuple[str, int]]) -> int:
    return sum(d for address, _, d in udp_sockets() if address in addresses)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def late_share(stats: dict[str, Any], before: dict[str, Any]) -> tuple[float, int]:
    now, was = stats.get("late_ms", {}), before.get("late_ms", {})
    diff = {k: now.get(k, 0) - was.get(k, 0) for k in now}
    total = sum(diff.values())
    over = sum(diff.get(k, 0) for k in ("<500", "<2000", "more"))
    return (over / total if total else float("nan")), total


def run_relay(label: str, start: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    places = random.Random(os.getpid() ^ time.time_ns())
    base = places.randrange(20, 240, 2)
    port = _free_port_pair(Lab._ip(base, 0), places)
    n = args.nodes
    regions = [i % REGIONS for i in range(n)]
    rtt = rtt_matrix(REGIONS)
    binds = [(Lab._ip(base, i), port) for i in range(n)]
    relays = [(Lab._ip(base + 1, i), port) for i in range(n)]
    config = {"rtt_ms": rtt, "loss": 0.0, "jitter": 0.0, "uplink_bps": 0.0, "seed": 1, "realtime": not args.no_realtime,
              "nodes": [{"index": i, "relay": list(relays[i]), "bind": list(binds[i]), "region": regions[i]} for i in range(n)]}
    socks = []
    for address in binds:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)  # the stand-ins must not be what drops
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind(address)
        sock.setblocking(False)
        socks.append(sock)
    parent, child = multiprocessing.get_context("fork").Pipe()
    proc = multiprocessing.get_context("fork").Process(target=receiver, args=(socks, rtt, regions, child), daemon=True)
    proc.start()
    relay = start(config)
    rows = []
    try:
        ps = psutil.Process(relay.popen.pid)
        rng = random.Random(args.seed)
        payload = b"\0" * (SIZE - HEADER.size)
        for phase, rate in enumerate(args.rates):
            before = relay.stats()
            relay_drops0, node_drops0 = drops(set(relays)), drops(set(binds))
            interval = args.fanout / rate
            floods = int(args.seconds / interval)
            sent = 0
            stalled: set[int] = set()
            t0 = time.monotonic()
            cpu0 = sum(ps.cpu_times()[:2])
            for k in range(floods):
                wait = t0 + k * interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                src = rng.randrange(n)
                for other in rng.sample(range(n - 1), args.fanout):  # fanout distinct nodes, not the sender
                    dst = other + (other >= src)
                    stamp = time.time()
                    socks[src].sendto(HEADER.pack(stamp, phase, src, dst, sent) + payload, relays[dst])
                    if time.time() - stamp > STALLED_S:  # the stamp is not when it left: not the relay's delay
                        stalled.add(sent)
                    sent += 1
            sending_s = time.monotonic() - t0
            parent.send((phase, stalled))
            delivered, extra = parent.recv()
            cpu1 = sum(ps.cpu_times()[:2])
            after = relay.stats()
            self_late, self_total = late_share(after, before)
            per_dgram = 1e6 * (cpu1 - cpu0) / max(1, delivered)
            row = {"relay": label, "rate": rate, "achieved": sent / sending_s, "sent": sent, "delivered": delivered,
                   "stalled": len(stalled),
                   "relay_cpu_pct": 100.0 * (cpu1 - cpu0) / (sending_s + 0.125),  # % of one core (+ the longest model delay)
                   "cpu_us_per_dgram": per_dgram,
                   "relay_sock_drops": drops(set(relays)) - relay_drops0, "node_sock_drops": drops(set(binds)) - node_drops0,
                   "p50_ms": pct(extra, 0.5), "p99_ms": pct(extra, 0.99), "max_ms": extra[-1] if extra else float("nan"),
                   "over_100ms": sum(1 for x in extra if x > 100) / max(1, len(extra)),
                   "self_over_100ms": self_late, "self_max_ms": after.get("late_max_ms"), "self_counted": self_total,
                   "self_drops": None if after.get("kernel_drops") is None
                   else after["kernel_drops"] - (before.get("kernel_drops") or 0)}
            rows.append(row)
            print_row(row)
    finally:
        relay.stop()
        parent.send(None)
        proc.join(10)
        for sock in socks:
            sock.close()
    return rows


COLUMNS = (("relay", "relay", "{:>9}"), ("rate", "rate/s", "{:>6}"), ("achieved", "achieved", "{:>8.0f}"), ("sent", "sent", "{:>6}"),
           ("delivered", "delivered", "{:>9}"), ("stalled", "stalled", "{:>7}"),
           ("relay_sock_drops", "relay drops", "{:>11}"), ("node_sock_drops", "node drops", "{:>10}"),
           ("relay_cpu_pct", "CPU %", "{:>6.1f}"), ("cpu_us_per_dgram", "us/dgram", "{:>8.1f}"),
           ("p50_ms", "p50 ms", "{:>7.2f}"), ("p99_ms", "p99 ms", "{:>7.2f}"), ("max_ms", "max ms", "{:>7.1f}"),
           ("over_100ms", ">100 ms", "{:>7.2%}"), ("self_over_100ms", "self >100", "{:>9.2%}"),
           ("self_max_ms", "self max", "{!s:>8}"), ("self_drops", "self drops", "{!s:>10}"))


def print_header() -> None:
    print(" ".join(f"{title:>{len(fmt.format(0) if 's' not in fmt else fmt.format(''))}}" for _, title, fmt in COLUMNS))


def print_row(row: dict[str, Any]) -> None:
    print(" ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="1500,3000,6000", help="datagrams per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="per rate")
    parser.add_argument("--nodes", type=int, default=110)
    parser.add_argument("--fanout", type=int, default=50, help="datagrams per flood, one sender to this many nodes")
    parser.add_argument("--burners", type=int, default=0, help="busy loops running beside the relay")
    parser.add_argument("--baseline-file", type=Path, help="another relay file to run first, as the baseline")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-realtime", action="store_true", help="the current relay without real-time scheduling "
                        "(its fallback: nice -10 for the process and its session)")
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    # Each in its own session, as the lab starts every node: with autogroup scheduling (Linux's default
    # on desktops and here) every session is a group with the same share of the CPU, whatever the nice
    # value of a task inside it; burners in this process's session would only compete with the bench.
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
               for _ in range(args.burners)]
    print(f"{args.nodes} nodes, floods of {args.fanout}, {args.seconds:.0f} s per rate, {args.burners} CPU burners beside; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print_header()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            baseline = []
            if args.baseline_file:
                baseline = run_relay("baseline", lambda c: FileRelay(args.baseline_file, c, Path(tmp) / "base.log"), args)
            current = run_relay("current" if not args.no_realtime else "no-rt", lambda c: RelayProcess(c, Path(tmp) / "relay.log"), args)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    if baseline:
        print("\ncurrent / baseline:")
        for old, new in zip(baseline, current):
            parts = []
            for key in ("relay_cpu_pct", "cpu_us_per_dgram", "p50_ms", "p99_ms", "max_ms"):
                parts.append(f"{key} {new[key] / old[key]:.2f}x" if old[key] else f"{key} -")
            parts.append(f"relay drops {new['relay_sock_drops']} vs {old['relay_sock_drops']}")
            print(f"  {new['rate']:>6}/s: " + ", ".join(parts))


if __name__ == "__main__":
    main()
