"""The unvalidated allowance: what a never-validating peer gets, and what a forged source can aim.

Run by hand:  python bench/bench_grace.py [--requests 20000] [--victims 8]

One in-process node per rule (no miners, no probes) holding a 300-block chain,
measured in the same run with the allowance (512 KB per IP per 10 minutes, 1 MB a
minute for all unvalidated IPs) and without it (the plain 3x rule, as before):

1. a requester that never validates (sim/reflect.py): each GET_BLOCK from a fresh
   socket on 127.0.0.4, 20 ms timeout, retried until answered: seconds and requests
   for the 300 blocks, and replies the node dropped;
2. forged-source amplification: STATS and GET_BLOCK "from" a victim at 127.0.0.2
   that never spoke to the node: bytes the victim received, against 3x the bytes
   sent in its name (plus the allowance);
3. the absolute cap: the same storm in the names of `--victims` victims at once
   (127.0.0.20..): bytes beyond 3x in all, against the 1 MB a minute.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import actors.network_io as network_io  # noqa: E402
from config import NodeConfig  # noqa: E402
from node import Node  # noqa: E402
from sim.chains import make_chain  # noqa: E402
from sim.reflect import never_validating_fetch  # noqa: E402

KB = 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dropped(node: Node, reason: str) -> int:
    value = node.ctx.metrics.registry.get_sample_value("node_datagrams_dropped_total", {"reason": reason})
    return int(value or 0)


def storm(port: int, victims: list[str], requests: int) -> tuple[int, int, int]:
    """`requests` forged STATS/GET_BLOCK in each victim's name (paced a little):
    (sent, received, received beyond 3x summed over the victims)."""
    socks = []
    for host in victims:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind((host, 0))
        socks.append(sock)
    received = [0] * len(socks)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set() or any(_readable(s) for s in socks):
            for i, sock in enumerate(socks):
                while _readable(sock):
                    received[i] += len(sock.recv(65536))
            time.sleep(0.005)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    sent = [0] * len(socks)
    for i in range(requests):
        for k, sock in enumerate(socks):
            data = b'{"type":"STATS"}' if i % 2 else json.dumps({"type": "GET_BLOCK", "height": i % 300}).encode()
            sock.sendto(data, ("127.0.0.1", port))
            sent[k] += len(data)
        if i % 250 == 249:
            time.sleep(0.02)
    time.sleep(1.0)  # the last replies in flight on loopback
    stop.set()
    reader.join()
    for sock in socks:
        sock.close()
    beyond = sum(max(0, got - 3 * out) for out, got in zip(sent, received))
    return sum(sent), sum(received), beyond


def _readable(sock: socket.socket) -> bool:
    import select
    return bool(select.select([sock], [], [], 0)[0])


def run(allowance: bool, requests: int, victims: int) -> None:
    saved = network_io.GRACE_PER_IP_BYTES
    if not allowance:
        network_io.GRACE_PER_IP_BYTES = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = NodeConfig(host="127.0.0.1", bind_host="127.0.0.1", port=free_port(), name="grace", difficulty=2,
                                data_dir=Path(tmp) / "node", probe_interval=0)
            node = Node(config).start()
            try:
                assert node.ctx.registry.proxy("ChainKeeper").apply_segment(0, make_chain(300, 2)).get(timeout=30)
                label = "with allowance" if allowance else "plain 3x     "
                result = never_validating_fetch(("127.0.0.1", config.port), range(300), "127.0.0.4", timeout=0.02, attempts=10_000)
                print(f"{label}: never-validating requester: {len(result.blocks)}/300 blocks in {result.seconds:6.2f} s, "
                      f"{result.requests} requests, {dropped(node, 'amplification_limit')} replies refused")
                started = time.monotonic()
                sent, got, beyond = storm(config.port, ["127.0.0.2"], requests)
                print(f"{label}: forged source, one victim: sent {sent} B in its name, victim got {got} B = {got / sent:.2f}x; "
                      f"beyond 3x: {beyond} B (allowance {512 * KB} B)")
                sent, got, beyond = storm(config.port, [f"127.0.0.{20 + i}" for i in range(victims)], requests)
                elapsed = time.monotonic() - started
                counted = node.ctx.registry.proxy("NetworkIO").health_details().get(timeout=5)["unvalidated_bytes_beyond_3x"]
                print(f"{label}: forged source, {victims} more victims: sent {sent} B, they got {got} B = {got / sent:.2f}x; "
                      f"beyond 3x summed over them: {beyond} B; the node's count beyond 3x for both storms "
                      f"({elapsed:.0f} s): {counted} B (cap {1024 * KB} B a minute for all unvalidated IPs)")
            finally:
                node.stop()
    finally:
        network_io.GRACE_PER_IP_BYTES = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="forged requests per victim")
    parser.add_argument("--victims", type=int, default=8)
    args = parser.parse_args()
    run(False, args.requests, args.victims)
    run(True, args.requests, args.victims)


if __name__ == "__main__":
    main()
