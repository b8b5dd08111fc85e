"""Hostile load on loopback for tests and benchmarks: forged GOSSIP and NEW_WORD floods,
and a STATS prober that measures how long the node takes to answer meanwhile.

Everything goes to and claims addresses in 127.0.0.0/8 only.
"""
from __future__ import annotations

import json
import random
import socket
import threading
import time
from dataclasses import dataclass, field

from net.address import Address



def _paced(rate: float, seconds: float, send_one) -> int:
    """Call `send_one(i)` `rate` times a second for `seconds`; returns how many were sent."""
    start = time.monotonic()
    sent = 0
    total = int(rate * seconds)
    while sent < total:
        due = start + sent / rate
        now = time.monotonic()
        if due > now:
            time.sleep(min(due - now, 0.01))
            continue
        send_one(sent)
        sent += 1
    return sent


def gossip_flood(target: Address, rate: float, seconds: float, seed: int = 1) -> int:
    """GOSSIP with fresh ids from forged originators (random 127.x.y.z:port)."""
    rng = random.Random(seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def one(i: int) -> None:
        host = f"127.{rng.randrange(1, 255)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        message = {"type": "GOSSIP", "host": host, "port": rng.randrange(1024, 65536), "id": f"flood-{seed}-{i}", "name": "sybil"}
        sock.sendto(json.dumps(message).encode(), target)

    try:
        return _paced(rate, seconds, one)
    finally:
        sock.close()


def word_flood(target: Address, rate: float, seconds: float, source_host: str = "127.0.0.1") -> int:
    """Distinct NEW_WORDs from one source."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source_host, 0))

    def one(i: int) -> None:
        sock.sendto(json.dumps({"type": "NEW_WORD", "word": f"flood{i}"}).encode(), target)

    try:
        return _paced(rate, seconds, one)
    finally:
        sock.close()


@dataclass
class StatsProbe:
    """Sends a (padded) STATS every `interval` seconds from its own socket; records round trips."""

    target: Address
    interval: float = 0.05
    latencies: list[float | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="stats-probe")
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._request = json.dumps({"type": "STATS", "pad": "-" * 1200}).encode()

    def start(self) -> "StatsProbe":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            self._sock.sendto(self._request, self.target)
            self._sock.settimeout(1.0)
            latency = None
            try:
                while True:
                    data, _ = self._sock.recvfrom(65536)
                    if json.loads(data).get("type") == "STATS_REPLY":
                        latency = time.monotonic() - sent
                        break
            except (socket.timeout, OSError, ValueError):
                pass
            self.latencies.append(latency)
            rest = self.interval - (time.monotonic() - sent)
            if rest > 0:
                self._stop.wait(rest)

    def answered_within(self, seconds: float) -> float:
        """The share of probes answered within `seconds` (0.0 with no probes)."""
        if not self.latencies:
            return 0.0
        return sum(1 for x in self.latencies if x is not None and x <= seconds) / len(self.latencies)
