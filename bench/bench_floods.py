"""The hostile-load measurements of issue 11, full length, on loopback only.

Run by hand:  python bench/bench_floods.py [--gossip-seconds 20] [--words 40000]

One in-process node (difficulty 2, no miners) with an honest well-known scripted
peer. Measured in the same run, each against the quiet baseline:

1. baseline: STATS answered within 1 s (share) and median round trip, no load;
2. forged GOSSIP at 1,000/s for 20 s (originators random 127.x.y.z): STATS
   share within 1 s, whether the honest peer is still tried and the node follows
   its chain, which grows during the flood;
3. 40,000 NEW_WORDs at 4,000/s from one source: STATS share within 1 s, words
   queued, data dir size;
4. amplification: forged-source STATS and GET_BLOCK "from" a victim at
   127.0.0.2: bytes the victim received per byte sent in its name (at most 3x
   plus the unvalidated allowance; bench/bench_grace.py measures past it);
5. a peer at 127.0.0.3 that introduced itself (GOSSIP, answered our probe)
   fetching 300 blocks: seconds.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import NodeConfig  # noqa: E402
from node import Node  # noqa: E402
from ops.health import render_health  # noqa: E402
from sim.chains import make_chain  # noqa: E402
from sim.flood import StatsProbe, gossip_flood, word_flood  # noqa: E402
from sim.peer import ScriptedPeer  # noqa: E402


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe_during(node: Node, load) -> StatsProbe:
    probe = StatsProbe(("127.0.0.1", node.config.port)).start()
    try:
        load()
    finally:
        probe.stop()
    return probe


def describe(probe: StatsProbe) -> str:
    answered = [x for x in probe.latencies if x is not None]
    median = statistics.median(answered) * 1000 if answered else float("nan")
    return f"{probe.answered_within(1.0):6.1%} of {len(probe.latencies)} STATS within 1 s, median {median:.1f} ms"


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def amplification(node: Node, requests: int = 4000) -> tuple[int, int]:
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    victim.bind(("127.0.0.2", 0))
    sent = received = 0
    for i in range(requests):
        data = b'{"type":"STATS"}' if i % 2 else json.dumps({"type": "GET_BLOCK", "height": i % 300}).encode()
        victim.sendto(data, ("127.0.0.1", node.config.port))
        sent += len(data)
    victim.settimeout(1.0)
    try:
        while True:
            received += len(victim.recvfrom(65536)[0])
    except socket.timeout:
        pass
    victim.close()
    return sent, received


def introduced_fetch(node: Node, count: int = 300) -> float:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.3", 0))
    host, port = peer.getsockname()
    target = ("127.0.0.1", node.config.port)
    peer.sendto(json.dumps({"type": "GOSSIP", "host": host, "port": port, "id": "bench-intro", "name": "p"}).encode(), target)
    peer.settimeout(5)
    while json.loads(peer.recvfrom(65536)[0])["type"] != "GOSSIP":
        pass
    peer.sendto(json.dumps({"type": "GOSSIP_REPLY", "host": host, "port": port, "name": "p"}).encode(), target)
    time.sleep(0.2)
    start = time.monotonic()
    got: set[int] = set()
    peer.settimeout(0.5)
    for window in range(0, count, 50):
        for height in range(window, window + 50):
            peer.sendto(json.dumps({"type": "GET_BLOCK", "height": height}).encode(), target)
        while len(got) < window + 50:
            try:
                message = json.loads(peer.recvfrom(65536)[0])
            except socket.timeout:
                break
            if message.get("type") == "GET_BLOCK_REPLY" and message.get("height") is not None:
                got.add(message["height"])
    elapsed = time.monotonic() - start
    peer.close()
    return elapsed if len(got) == count else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gossip-seconds", type=float, default=20.0)
    parser.add_argument("--gossip-rate", type=float, default=1000.0)
    parser.add_argument("--words", type=int, default=40_000)
    parser.add_argument("--word-rate", type=float, default=4000.0)
    args = parser.parse_args()

    chain = make_chain(600, 2)
    with ScriptedPeer(chain[:300], name="honest") as honest, tempfile.TemporaryDirectory() as tmp:
        config = NodeConfig(host="127.0.0.1", bind_host="127.0.0.1", port=free_port(), name="bench", difficulty=2,
                            data_dir=Path(tmp) / "node", peers=(honest.address,), consensus_interval=5.0)
        node = Node(config).start()
        try:
            keeper = node.ctx.registry.proxy("ChainKeeper")
            gossip = node.ctx.registry.proxy("GossipManager")
            wait(lambda: keeper.tip().get(timeout=5)[0] == 300, 60)
            print(f"baseline (quiet):        {describe(probe_during(node, lambda: time.sleep(5)))}")

            def flood() -> None:
                runner = threading.Thread(target=gossip_flood, args=(("127.0.0.1", config.port), args.gossip_rate, args.gossip_seconds))
                runner.start()
                time.sleep(args.gossip_seconds / 2)
                honest.blocks = list(chain)  # the honest chain grows mid-flood
                runner.join()

            probe = probe_during(node, flood)
            table = gossip.peer_table().get(timeout=5)
            state = next((p["table"] for p in table if (p["host"], p["port"]) == honest.address), "gone")
            followed = wait(lambda: keeper.tip().get(timeout=5)[0] == len(chain), 60)
            tried = sum(1 for p in table if p["table"] == "tried")
            print(f"forged GOSSIP {args.gossip_rate:.0f}/s x {args.gossip_seconds:.0f}s: {describe(probe)}; "
                  f"honest peer: {state}; tried peers: {tried}; new: {len(table) - tried}; follows its chain: {followed}")

            sent = [0]
            probe = probe_during(node, lambda: sent.__setitem__(0, word_flood(("127.0.0.1", config.port), args.word_rate, args.words / args.word_rate)))
            size = sum(p.stat().st_size for p in config.data_dir.rglob("*") if p.is_file())
            print(f"NEW_WORD {sent[0]} at {args.word_rate:.0f}/s: {describe(probe)}; queued {keeper.word_count().get(timeout=5)}; "
                  f"data dir {size / 2**20:.2f} MiB")

            out, back = amplification(node)
            print(f"forged STATS/GET_BLOCK at 127.0.0.2: sent {out} B, victim got {back} B: {back / out:.2f}x "
                  f"(limit 3x + the 512 KB unvalidated allowance: {3 * out + 512 * 1024} B; bench/bench_grace.py goes past it)")
            print(f"introduced peer fetches 300 blocks: {introduced_fetch(node):.2f} s (limit 3 s)")
            print(f"restarts: {sum(a['restarts'] for a in render_health(node.health_facts())['actors'])}")
        finally:
            node.stop()


if __name__ == "__main__":
    main()
