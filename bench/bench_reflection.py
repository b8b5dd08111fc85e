"""CONSENSUS reflection: bytes the node sends third parties per byte an attacker sends.

Run by hand:  python bench/bench_reflection.py [--seconds 30] [--peers 8 64] [--rates 10 100 1000]

For each swarm size, one in-process node (no miners, keep-alive and periodic rounds
slowed to 10 minutes so the window holds only what the attack causes) tracks N
scripted peers, each on its own 127.0.0.x address (sim/reflect.py `PeerSwarm`). An
attacker sends CONSENSUS at 10, 100 and 1,000 a second for `--seconds`, from 16
forged source IPs (127.0.0.200-215, so the per-IP limit alone does not stop it).
Counted: every byte the peers receive from the node from the start of the flood
until the node is idle again, one round gap after it (the round the flood left
waiting is counted in). Printed against two baselines from the same run:

* quiet: the same window with no attack (what the peers receive anyway);
* unlimited: the same attack against a node whose CONSENSUS limits are turned off
  (no per-IP or overall limit, no round gap): the behaviour before the limits.
"""
from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import actors.consensus_runner as consensus_runner  # noqa: E402
import actors.network_io as network_io  # noqa: E402
from config import NodeConfig  # noqa: E402
from node import Node  # noqa: E402
from sim.reflect import PeerSwarm, consensus_flood  # noqa: E402

ATTACKERS = [f"127.0.0.{200 + i}" for i in range(16)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def unlimited() -> dict[tuple[object, str], object]:
    """Turn the CONSENSUS limits off (module constants read when the actors start); returns the old values."""
    saved = {}
    for module, name, value in ((consensus_runner, "CONSENSUS_ROUND_GAP", 0.0),
                                (network_io, "CONSENSUS_PER_SOURCE_RATE", 1e9), (network_io, "CONSENSUS_PER_SOURCE_BURST", 1e9),
                                (network_io, "CONSENSUS_TOTAL_RATE", 1e9), (network_io, "CONSENSUS_TOTAL_BURST", 1e9)):
        saved[(module, name)] = getattr(module, name)
        setattr(module, name, value)
    return saved


def restore(saved: dict[tuple[object, str], object]) -> None:
    for (module, name), value in saved.items():
        setattr(module, name, value)


def measure(peers: int, rates: list[float], seconds: float, limited: bool) -> dict[float | None, tuple[int, int, int]]:
    """{rate (None: quiet): (attacker bytes, bytes to peers, STATS to peers)} for one node."""
    saved = None if limited else unlimited()
    results: dict[float | None, tuple[int, int, int]] = {}
    try:
        with PeerSwarm(peers, [], first_octet=10) as swarm, tempfile.TemporaryDirectory() as tmp:
            config = NodeConfig(host="127.0.0.1", bind_host="127.0.0.1", port=free_port(), name="reflect", difficulty=2,
                                data_dir=Path(tmp) / "node", gossip_interval=600.0, consensus_interval=600.0,
                                peer_timeout=1200.0, probe_interval=0)
            node = Node(config).start()
            try:
                target = ("127.0.0.1", config.port)
                gossip = node.ctx.registry.proxy("GossipManager")
                runner = node.ctx.registry.proxy("ConsensusRunner")
                intro = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                intro.bind(("127.0.0.1", 0))

                def tracked() -> set[tuple[str, int]]:
                    return {(p["host"], p["port"]) for p in gossip.peer_table().get(timeout=5) if p["table"] == "tried"}

                for first in range(0, peers, 16):  # greetings are rate-limited (20/s): in parts
                    part = swarm.addresses[first:first + 16]
                    swarm.introduce(target, intro, only=part)
                    if not wait(lambda: tracked() >= set(part), 30):
                        raise SystemExit(f"the swarm was not tracked: {len(tracked())} of {peers}")
                    time.sleep(1.0)  # the greeting budget refills (an address greeted late waits for a keep-alive)
                intro.close()
                gap = consensus_runner.CONSENSUS_ROUND_GAP
                for rate in [None, *rates]:
                    wait(lambda: not runner.status().get(timeout=5)["running"], 30)
                    time.sleep(gap + 0.5)  # nothing left waiting from the previous step
                    before, kinds_before = swarm.counts()
                    if rate is None:
                        time.sleep(seconds)
                        sent = 0
                    else:
                        sent = consensus_flood(target, rate, seconds, ATTACKERS)
                    time.sleep(gap + 2.0)  # the round the flood left waiting, if any
                    wait(lambda: not runner.status().get(timeout=5)["running"], 30)
                    after, kinds = swarm.counts()
                    results[rate] = (sent, after - before, kinds["Stats"] - kinds_before["Stats"])
            finally:
                node.stop()
    finally:
        if saved is not None:
            restore(saved)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--peers", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 100.0, 1000.0])
    args = parser.parse_args()
    gap = consensus_runner.CONSENSUS_ROUND_GAP
    print(f"CONSENSUS for {args.seconds:.0f} s from {len(ATTACKERS)} source IPs; window = flood + {gap + 2.0:.1f} s "
          f"(unlimited: flood + 2 s)")
    for peers in args.peers:
        for limited in (False, True):
            results = measure(peers, args.rates, args.seconds, limited)
            _, quiet, quiet_stats = results[None]
            label = "limited  " if limited else "unlimited"
            print(f"{peers:3d} peers, {label}: quiet window {quiet} B to peers ({quiet_stats} STATS)")
            for rate in args.rates:
                sent, got, stats = results[rate]
                extra = got - quiet
                print(f"    {rate:6.0f} CONSENSUS/s: attacker {sent:7d} B -> peers {got:8d} B ({stats:6d} STATS): "
                      f"{got / sent:6.2f}x raw, {extra / sent:6.2f}x over quiet")


if __name__ == "__main__":
    main()
