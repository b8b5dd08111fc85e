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
delivered to it, and the drops by reason; of itself, how late it sent each datagram
(from the kernel's arrival time, so time queued in its sockets counts), how long
datagrams sat in its sockets, and what the kernel dropped at them.
"""
from __future__ import annotations

import bisect
import heapq
import itertools
import json
import os
import random
import selectors
import socket
import struct
import sys
import time
from typing import Any

from sim.lab.model import LinkModel

MAX_DATAGRAM = 65536
# Big receive buffers: a relay held off the CPU for a moment must find its datagrams queued
# (and counted late), not dropped by the kernel where nothing counts them. Forced past
# net.core.rmem_max as root (the kernel doubles it for its bookkeeping).
SOCKET_BUFFER = 8 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux: the kernel's arrival time of each datagram
TIMESPEC = struct.Struct("@qq")
STAMP_SPACE = socket.CMSG_SPACE(TIMESPEC.size)
DRAIN = 16  # datagrams read from one ready socket before what is due is sent
# The network must not queue behind the nodes it connects: the relay runs real-time (lowest
# priority, SCHED_RR) when allowed, the kernel's RT throttling bounding it; else at nice -10.
RT_PRIORITY = 1
PRIORITY = -10
LATE_BUCKETS_MS = (1, 5, 20, 100, 500, 2000)
BUCKET_KEYS = tuple(f"<{b}" for b in LATE_BUCKETS_MS) + ("more",)


class Buckets:
    """A histogram of milliseconds (the keys of BUCKET_KEYS) and its maximum."""

    def __init__(self) -> None:
        self.counts = [0] * len(BUCKET_KEYS)
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        self.counts[bisect.bisect_right(LATE_BUCKETS_MS, ms)] += 1
        if ms > self.max_ms:
            self.max_ms = ms

    def table(self) -> dict[str, int]:
        return dict(zip(BUCKET_KEYS, self.counts))


class Relay:
    """The relay's state and loop; `stats` is what the lab reads.

    A datagram's delay is counted from the kernel's arrival time at the relay's socket
    (SO_TIMESTAMPNS), not from when the relay got round to reading it: it leaves at
    arrival + the link model's delay, and `late_ms` is how long after that it actually
    left. So time spent queued in the socket, waiting for a relay without the CPU, is
    part of the lateness it reports (`socket_wait_ms` says how much of it), and it is
    not added on top of the model's delay when the relay catches up in time.
    """

    def __init__(self, rtt_ms: list[list[float]], loss: float, jitter: float, uplink_bps: float, seed: int,
                 socket_buffer: int = SOCKET_BUFFER) -> None:
        self.socket_buffer = socket_buffer
        self.model = LinkModel(rtt_ms, loss=loss, jitter=jitter, uplink_bps=uplink_bps)
        self.rng = random.Random(seed)
        self.selector = selectors.DefaultSelector()
        self.by_bind: dict[tuple[str, int], int] = {}  # a node's bound address -> its index
        self.bind: dict[int, tuple[str, int]] = {}
        self.region: dict[int, int] = {}
        self.sockets: dict[int, socket.socket] = {}
        self.queue: list[tuple[float, int, int, bytes, int]] = []  # (due, seq, from node, data, to node)
        self.seq = itertools.count()
        self.sent: dict[int, list[int]] = {}  # node -> [datagrams, bytes] it sent (that reached the relay)
        self.received: dict[int, list[int]] = {}  # node -> [datagrams, bytes] delivered to it
        self.dropped: dict[str, int] = {}
        self.unknown_source = 0
        self.send_errors = 0
        self.late = Buckets()  # sent time - (kernel arrival + model delay)
        self.socket_wait = Buckets()  # read time - kernel arrival
        self.inodes: set[int] = set()  # the relay's sockets, as the host's socket table names them
        self._kernel_drops: int | None = 0
        self.closed = False
        self.scheduling = "unchanged"  # how main() placed the relay for the CPU (prioritise())
        self.running = True

    @property
    def stats(self) -> dict[str, Any]:
        """Counters since the start; `kernel_drops`: datagrams the kernel dropped at the relay's own sockets."""
        return {"sent": {str(k): list(v) for k, v in self.sent.items()},
                "received": {str(k): list(v) for k, v in self.received.items()},
                "dropped": dict(self.dropped), "unknown_source": self.unknown_source, "send_errors": self.send_errors,
                "late_ms": self.late.table(), "late_max_ms": round(self.late.max_ms, 1),
                "socket_wait_ms": self.socket_wait.table(), "socket_wait_max_ms": round(self.socket_wait.max_ms, 1),
                "kernel_drops": self.kernel_drops(), "scheduling": self.scheduling}

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped at the relay's sockets (full receive buffers); None if unknown.

        Read from the host's socket table while the sockets are open; the last reading after.
        """
        if not self.closed:
            table = udp_sockets()
            self._kernel_drops = sum(d for _, inode, d in table if inode in self.inodes) if table or not self.inodes else None
        return self._kernel_drops

    def add(self, node: dict[str, Any]) -> None:
        index = int(node["index"])
        relay = (node["relay"][0], int(node["relay"][1]))
        bind = (node["bind"][0], int(node["bind"][1]))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.socket_buffer)
        except OSError:  # not root: as much as net.core.rmem_max allows
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.socket_buffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:  # no kernel timestamps: a datagram's time starts when it is read
            pass
        sock.bind(relay)
        sock.setblocking(False)
        self.inodes.add(os.fstat(sock.fileno()).st_ino)
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

    def on_datagram(self, dest: int, sock: socket.socket) -> None:
        """Read what `sock` holds (at most DRAIN) and queue each datagram for when the model says it arrives."""
        now = time.monotonic()
        clock_offset = time.time() - now  # kernel stamps are CLOCK_REALTIME; the queue runs on the monotonic clock
        dest_region = self.region[dest]
        for _ in range(DRAIN):
            try:
                data, ancdata, _, source = sock.recvmsg(MAX_DATAGRAM, STAMP_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error from an earlier send (a node that is down): not ours to keep
                continue
            sender = self.by_bind.get(source)
            if sender is None:
                self.unknown_source += 1
                continue
            arrived = now
            for level, kind, raw in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= TIMESPEC.size:
                    sec, nsec = TIMESPEC.unpack_from(raw)
                    # never in the future, nor (a wall-clock step) more than a minute back
                    arrived = min(now, max(now - 60.0, sec + nsec * 1e-9 - clock_offset))
            self.socket_wait.add((now - arrived) * 1000.0)
            size = len(data)
            entry = self.sent.get(sender)
            if entry is None:
                entry = self.sent[sender] = [0, 0]
            entry[0] += 1
            entry[1] += size
            verdict, due = self.model.verdict(sender, self.region[sender], dest_region, size, arrived, self.rng)
            if verdict != "ok":
                self.dropped[verdict] = self.dropped.get(verdict, 0) + 1
                continue
            heapq.heappush(self.queue, (due, next(self.seq), sender, data, dest))

    def flush(self) -> None:
        """Send every datagram that is due, counting how late each leaves (the relay's own share of the delay)."""
        queue = self.queue
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            due, _, sender, data, dest = heapq.heappop(queue)
            self.late.add((now - due) * 1000.0)
            try:
                self.sockets[sender].sendto(data, self.bind[dest])
            except OSError:
                self.send_errors += 1
                continue
            entry = self.received.get(dest)
            if entry is None:
                entry = self.received[dest] = [0, 0]
            entry[0] += 1
            entry[1] += len(data)

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
        self.kernel_drops()  # the last reading, while the sockets are still there
        self.closed = True
        for sock in self.sockets.values():
            sock.close()


def prioritise(realtime: bool = True) -> str:
    """Put the relay ahead of the nodes for the CPU: "realtime" (SCHED_RR), "nice" or "none" (not permitted).

    Real-time first: a runnable real-time task runs before every ordinary one, so a hundred busy
    nodes cannot delay it. A nice value alone is weak here: with autogroup scheduling each
    session (the lab starts every node and the relay in its own) gets an equal share of the CPU
    whatever the nice values inside it, so the relay's session is niced too where allowed.
    """
    try:
        if realtime:
            os.sched_setscheduler(0, os.SCHED_RR | getattr(os, "SCHED_RESET_ON_FORK", 0), os.sched_param(RT_PRIORITY))
            return "realtime"
    except (OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)
    except OSError:  # not root: the relay runs at the nodes' priority (its lateness figures say what that cost)
        return "none"
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write(str(PRIORITY))
    except OSError:  # no autogroups (then the nice value is enough), or not allowed
        pass
    return "nice"


def udp_sockets(path: str = "/proc/net/udp") -> list[tuple[tuple[str, int], int, int]]:
    """Every IPv4 UDP socket on this host (this network namespace): (local address, inode, kernel drops).

    The drops column counts the datagrams the kernel threw away at that socket, mostly for a
    full receive buffer: the one place where a reader too slow for its socket shows. Empty if
    the table cannot be read (not Linux).
    """
    out = []
    try:
        with open(path) as table:
            next(table, None)  # the header
            for line in table:
                fields = line.split()
                if len(fields) < 13:
                    continue
                ip, _, port = fields[1].partition(":")
                address = (socket.inet_ntoa(int(ip, 16).to_bytes(4, sys.byteorder)), int(port, 16))
                out.append((address, int(fields[9]), int(fields[12])))
    except (OSError, ValueError):
        return []
    return out


def main() -> None:
    config = json.loads(sys.argv[1])
    scheduling = prioritise(config.get("realtime", True))  # false: a bench comparing the fallback
    relay = Relay(config["rtt_ms"], config["loss"], config["jitter"], config["uplink_bps"], config["seed"])
    relay.scheduling = scheduling
    for node in config.get("nodes", []):
        relay.add(node)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    relay.run(sys.stdin)


if __name__ == "__main__":
    main()
