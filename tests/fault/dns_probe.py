"""Run inside a private network namespace (see test_no_dns.py): count DNS queries while a
node is fed gossip naming hosts by name. Prints one JSON line with the counts.

The namespace has only loopback and /etc/resolv.conf points at 127.0.0.1, where a
counting DNS server listens, so any lookup the node made would be seen here and
could not leave the machine.
"""
from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from node import Node
from tests.conftest import FAST_POLICY
from tests.helpers import health, node_config


class CountingDns:
    """Counts queries on 127.0.0.1:53 (UDP) and answers none (a lookup then fails)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        self.sock.settimeout(0.1)
        self.queries = 0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            self.queries += 1

    def close(self) -> None:
        self._stop.set()


def main() -> None:
    dns = CountingDns()
    result: dict[str, int] = {}
    # Control: a lookup in this namespace does reach the counter.
    try:
        socket.getaddrinfo("control.invalid-name.test", 9, socket.AF_INET)
    except OSError:
        pass
    time.sleep(0.2)
    result["control_queries"] = dns.queries
    dns.queries = 0
    config = node_config(Path(tempfile.mkdtemp()), gossip_interval=0.3)
    node = Node(config, FAST_POLICY).start()
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        names = ["evil.example.test", "attacker-chosen.test", "xn--e1afmkfd.test", "a" * 60 + ".test"]
        for round_ in range(20):
            for i, name in enumerate(names):
                for kind in ("GOSSIP", "GOSSIP_REPLY"):
                    message = {"type": kind, "host": name, "port": 9000 + i, "name": "x"}
                    if kind == "GOSSIP":
                        message["id"] = f"dns-{round_}-{i}"
                    sender.sendto(json.dumps(message).encode(), ("127.0.0.1", config.port))
            time.sleep(0.05)
        time.sleep(1.5)  # several keep-alives to whatever the table holds
        result["wire_queries"] = dns.queries
        result["restarts"] = sum(a["restarts"] for a in health(node)["actors"])
    finally:
        node.stop()
        dns.close()
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
