"""A lossy UDP proxy on loopback: drops, duplicates, delays and reorders datagrams.

Put one in front of a node: peers talk to the proxy's front port (the node
advertises it with `advertise_port`), the proxy forwards to the node through one
upstream socket per client, and carries the node's replies back through the
front port, so every datagram in both directions crosses the bad network.
Random per-datagram delays reorder traffic naturally.
"""
from __future__ import annotations

import heapq
import itertools
import random
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from net.address import Address

MAX_CLIENTS = 256


@dataclass(frozen=True)
class Impairment:
    drop: float = 0.0  # probability a datagram is lost
    duplicate: float = 0.0  # probability it is delivered twice
    delay: tuple[float, float] = (0.0, 0.0)  # uniform extra delay in seconds (reorders)


class LossyProxy:
    def __init__(self, target: Address, impairment: Impairment, seed: int = 0, host: str = "127.0.0.1") -> None:
        self.target = target
        self.impairment = impairment
        self.rng = random.Random(seed)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind((host, 0))
        self.front.setblocking(False)
        self.address: Address = self.front.getsockname()[:2]
        self._upstreams: dict[Address, socket.socket] = {}
        self._clients: dict[socket.socket, Address] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.front, selectors.EVENT_READ, None)
        self._queue: list[tuple[float, int, socket.socket, bytes, Address]] = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"lossy-proxy-{self.address[1]}")
        self.stats = {"forwarded": 0, "dropped": 0, "duplicated": 0}

    def start(self) -> "LossyProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for sock in [self.front, *self._upstreams.values()]:
            sock.close()

    def __enter__(self) -> "LossyProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------- internals

    def _schedule(self, sock: socket.socket, data: bytes, dest: Address, now: float) -> None:
        imp = self.impairment
        if self.rng.random() < imp.drop:
            self.stats["dropped"] += 1
            return
        copies = 2 if self.rng.random() < imp.duplicate else 1
        if copies == 2:
            self.stats["duplicated"] += 1
        for _ in range(copies):
            due = now + self.rng.uniform(*imp.delay)
            heapq.heappush(self._queue, (due, next(self._seq), sock, data, dest))

    def _upstream_for(self, client: Address) -> socket.socket | None:
        sock = self._upstreams.get(client)
        if sock is None:
            if len(self._upstreams) >= MAX_CLIENTS:
                return None
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.front.getsockname()[0], 0))
            sock.setblocking(False)
            self._upstreams[client] = sock
            self._clients[sock] = client
            self._selector.register(sock, selectors.EVENT_READ, client)
        return sock

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, sock, data, dest = heapq.heappop(self._queue)
                try:
                    sock.sendto(data, dest)
                    self.stats["forwarded"] += 1
                except OSError:
                    pass
            timeout = min(0.05, max(0.0, self._queue[0][0] - now)) if self._queue else 0.05
            for key, _ in self._selector.select(timeout):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                while True:
                    try:
                        data, source = sock.recvfrom(65536)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    now = time.monotonic()
                    if sock is self.front:  # client -> node
                        upstream = self._upstream_for(source[:2])
                        if upstream is not None:
                            self._schedule(upstream, data, self.target, now)
                    else:  # node -> client, back out through the front port
                        self._schedule(self.front, data, self._clients[sock], now)
