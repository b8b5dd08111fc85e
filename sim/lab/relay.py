"""The lab's wide-area network: a user-space UDP relay, one process (`python -m sim.lab.relay`).

Node i binds `bind[i]` and advertises `relay[i]`, a socket of this relay. A datagram
that node s sends to `relay[d]` arrives here from `bind[s]`: it is for node d, from
node s. It leaves (after the link model's delay, unless lost or cut) from
`relay[s]` to `bind[d]`, so node d sees it come from s's advertised address, as
it would through a real network. Replies work the same way back.

Commands, one JSON object per line on stdin: `{"cmd": "add", "node": {...}}`,
`{"cmd": "partition", "groups": [[...], [...]]}`, `{"cmd": "heal"}`,
`{"cmd": "stats"}` (answered with one JSON line on stdout), `{"cmd": "stop"}`.
Per node it counts the datagrams and bytes that node sent and that were
delivered to it, and the drops by reason.
"""
from __future__ import annotations

import heapq
import itertools
import json
import os
import random
import selectors
import socket
import sys
import time
from typing import Any

from sim.lab.model import LinkModel

MAX_DATAGRAM = 65536
SOCKET_BUFFER = 1 << 20
PRIORITY = -10  # the network must not queue behind the nodes it connects: a starved relay would add its own delay
LATE_BUCKETS_MS = (1, 5, 20, 100, 500, 2000)  # how late the relay sent a datagram after its due time


class Relay:
    def __init__(self, rtt_ms: list[list[float]], loss: float, jitter: float, uplink_bps: float, seed: int) -> None:
        self.model = LinkModel(rtt_ms, loss=loss, jitter=jitter, uplink_bps=uplink_bps)
        self.rng = random.Random(seed)
        self.selector = selectors.DefaultSelector()
        self.by_bind: dict[tuple[str, int], int] = {}  # a node's bound address -> its index
        self.bind: dict[int, tuple[str, int]] = {}
        self.region: dict[int, int] = {}
        self.sockets: dict[int, socket.socket] = {}
        self.queue: list[tuple[float, int, int, bytes, int]] = []  # (due, seq, from node, data, to node)
        self.seq = itertools.count()
        self.stats: dict[str, Any] = {"sent": {}, "received": {}, "dropped": {}, "unknown_source": 0, "send_errors": 0,
                                      "late_ms": {f"<{b}": 0 for b in LATE_BUCKETS_MS} | {"more": 0}, "late_max_ms": 0.0}
        self.running = True

    def add(self, node: dict[str, Any]) -> None:
        index = int(node["index"])
        relay = (node["relay"][0], int(node["relay"][1]))
        bind = (node["bind"][0], int(node["bind"][1]))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.bind(relay)
        sock.setblocking(False)
        self.sockets[index] = sock
        self.bind[index] = bind
        self.by_bind[bind] = index
        self.region[index] = int(node["region"])
        self.selector.register(sock, selectors.EVENT_READ, index)

    def command(self, line: str) -> None:
        try:
            doc = json.loads(line)
        except ValueError:
            return
        cmd = doc.get("cmd")
        if cmd == "add":
            self.add(doc["node"])
        elif cmd == "partition":
            self.model.partition(doc["groups"])
        elif cmd == "heal":
            self.model.heal()
        elif cmd == "stats":
            sys.stdout.write(json.dumps(self.stats) + "\n")
            sys.stdout.flush()
        elif cmd == "stop":
            self.running = False

    def _count(self, table: str, node: int, size: int) -> None:
        entry = self.stats[table].setdefault(str(node), [0, 0])
        entry[0] += 1
        entry[1] += size

    def on_datagram(self, dest: int, sock: socket.socket) -> None:
        for _ in range(16):  # drain what is there, bounded so the queue's sends keep their time
            try:
                data, source = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error from an earlier send (a node that is down): not ours to keep
                continue
            sender = self.by_bind.get(source[:2])
            if sender is None:
                self.stats["unknown_source"] += 1
                continue
            self._count("sent", sender, len(data))
            now = time.monotonic()
            verdict, due = self.model.verdict(sender, self.region[sender], self.region[dest], len(data), now, self.rng)
            if verdict != "ok":
                self.stats["dropped"][verdict] = self.stats["dropped"].get(verdict, 0) + 1
                continue
            heapq.heappush(self.queue, (due, next(self.seq), sender, data, dest))

    def flush(self) -> None:
        now = time.monotonic()
        while self.queue and self.queue[0][0] <= now:
            due, _, sender, data, dest = heapq.heappop(self.queue)
            self._late((now - due) * 1000.0)
            try:
                self.sockets[sender].sendto(data, self.bind[dest])
                self._count("received", dest, len(data))
            except OSError:
                self.stats["send_errors"] += 1

    def _late(self, ms: float) -> None:
        """Count how late a datagram leaves: the relay's own share of the delay (it should stay near 0)."""
        late = self.stats["late_ms"]
        key = next((f"<{b}" for b in LATE_BUCKETS_MS if ms < b), "more")
        late[key] += 1
        self.stats["late_max_ms"] = max(self.stats["late_max_ms"], round(ms, 1))

    def run(self, commands: Any) -> None:
        os.set_blocking(commands.fileno(), False)
        self.selector.register(commands, selectors.EVENT_READ, None)
        pending = ""
        while self.running:
            timeout = max(0.0, self.queue[0][0] - time.monotonic()) if self.queue else 0.5
            for key, _ in self.selector.select(timeout):
                if key.data is None:
                    chunk = os.read(commands.fileno(), 65536).decode()
                    if not chunk:  # the lab is gone: so are we
                        self.running = False
                        break
                    pending += chunk
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        self.command(line)
                else:
                    self.on_datagram(key.data, key.fileobj)  # type: ignore[arg-type]
                    self.flush()  # what is due leaves between sockets, not after every ready one is drained
            self.flush()
        for sock in self.sockets.values():
            sock.close()


def main() -> None:
    config = json.loads(sys.argv[1])
    try:
        os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)
    except OSError:  # not root: the relay runs at the nodes' priority (its lateness figures say what that cost)
        pass
    relay = Relay(config["rtt_ms"], config["loss"], config["jitter"], config["uplink_bps"], config["seed"])
    for node in config.get("nodes", []):
        relay.add(node)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    relay.run(sys.stdin)


if __name__ == "__main__":
    main()
