"""Scripted parties for the reflection and allowance measurements, on loopback only.

* `PeerSwarm`: N third-party peers, each on its own 127.0.0.x address, served by ONE
  thread (select over their sockets, so 64 peers cost one thread). They answer STATS
  and GOSSIP as a node would (so the node tracks them) and count every byte the node
  sends them: what a reflection attack costs third parties.
* `consensus_flood`: CONSENSUS datagrams at a given rate, from one or several source IPs.
* `never_validating_fetch`: a requester that never validates: each GET_BLOCK from a
  fresh socket (a fresh source port), closed after a short timeout; it has no
  listening socket, so nothing the node sends it later (a probe) is ever answered.
"""
from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from chain.block import Block
from messages.wire import DecodeError, Gossip, GossipReply, Stats, StatsReply, decode, encode
from net.address import Address
from sim.flood import _paced

CONSENSUS = b'{"type":"CONSENSUS"}'


class PeerSwarm:
    """`count` peers on 127.0.0.`first_octet`.. (one port each), answering STATS with
    `chain`'s length and top and GOSSIP with a GOSSIP_REPLY; counting what they receive."""

    def __init__(self, count: int, chain: Sequence[Block], first_octet: int = 10, host_prefix: str = "127.0.0.") -> None:
        if not (0 < first_octet and first_octet + count <= 255):
            raise ValueError("the swarm must fit in 127.0.0.1-254")
        self.chain = list(chain)
        self.socks: list[socket.socket] = []
        for i in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((f"{host_prefix}{first_octet + i}", 0))
            sock.setblocking(False)
            self.socks.append(sock)
        self.addresses: list[Address] = [s.getsockname()[:2] for s in self.socks]
        self.bytes_in = 0
        self.datagrams_in: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="peer-swarm")

    def __enter__(self) -> "PeerSwarm":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        for sock in self.socks:
            sock.close()

    def counts(self) -> tuple[int, Counter[str]]:
        """(bytes received in all, datagrams by type) so far."""
        with self._lock:
            return self.bytes_in, Counter(self.datagrams_in)

    def _serve(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select(self.socks, [], [], 0.1)
            for sock in readable:
                while True:
                    try:
                        data, addr = sock.recvfrom(65536)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    except OSError:
                        return
                    self._handle(sock, data, addr)

    def _handle(self, sock: socket.socket, data: bytes, addr: Address) -> None:
        try:
            message = decode(data)
        except DecodeError:
            kind = "malformed"
            message = None
        else:
            kind = type(message).__name__
        with self._lock:
            self.bytes_in += len(data)
            self.datagrams_in[kind] += 1
        try:
            if isinstance(message, Stats):
                top = self.chain[-1].hash if self.chain else None
                sock.sendto(encode(StatsReply(len(self.chain), top)), addr)
            elif isinstance(message, Gossip):
                host, port = sock.getsockname()[:2]
                sock.sendto(encode(GossipReply(host, port, f"swarm-{host}")), (message.host, message.port))
        except OSError:
            pass

    def introduce(self, target: Address, via: socket.socket, only: Sequence[Address] | None = None) -> None:
        """A GOSSIP naming each peer (or those in `only`), sent to the node from `via` (the
        node greets them; they answer). The node greets at most 20 new addresses a second
        (burst 40), the rest only at its next keep-alive: introduce a large swarm in parts."""
        for i, (host, port) in enumerate(self.addresses):
            if only is not None and (host, port) not in only:
                continue
            via.sendto(json.dumps({"type": "GOSSIP", "host": host, "port": port, "id": f"swarm-intro-{host}-{port}",
                                   "name": f"swarm-{i}"}).encode(), target)


def consensus_flood(target: Address, rate: float, seconds: float, sources: Sequence[str] = ("127.0.0.200",)) -> int:
    """CONSENSUS at `rate` per second for `seconds`, cycling through the source IPs; bytes sent."""
    socks = []
    for host in sources:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        socks.append(sock)

    def one(i: int) -> None:
        socks[i % len(socks)].sendto(CONSENSUS, target)

    try:
        return len(CONSENSUS) * _paced(rate, seconds, one)
    finally:
        for sock in socks:
            sock.close()


@dataclass
class FetchResult:
    blocks: dict[int, dict] = field(default_factory=dict)  # height -> the reply as received
    requests: int = 0
    seconds: float = 0.0
    gave_up: list[int] = field(default_factory=list)


def never_validating_fetch(target: Address, heights: Sequence[int], host: str = "127.0.0.4",
                           timeout: float = 0.02, attempts: int = 50) -> FetchResult:
    """Fetch `heights` one by one, each request from a fresh socket on `host`, waiting
    `timeout` for its reply, up to `attempts` times per height."""
    result = FetchResult()
    start = time.monotonic()
    for height in heights:
        for _ in range(attempts):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((host, 0))
                sock.settimeout(timeout)
                sock.sendto(json.dumps({"type": "GET_BLOCK", "height": height}).encode(), target)
                result.requests += 1
                reply = _reply_for(sock, height)
            finally:
                sock.close()
            if reply is not None:
                result.blocks[height] = reply
                break
        else:
            result.gave_up.append(height)
    result.seconds = time.monotonic() - start
    return result


def _reply_for(sock: socket.socket, height: int) -> dict | None:
    """The GET_BLOCK_REPLY for `height` read from `sock` before its timeout, else None."""
    deadline = time.monotonic() + (sock.gettimeout() or 0.0)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except (socket.timeout, ConnectionRefusedError):
            return None
        try:
            message = json.loads(data)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("type") == "GET_BLOCK_REPLY" and message.get("height") == height:
            return message
