"""kill -9 the whole node at random moments while it applies reorgs; the chain survives whole.

Each reorg is one transaction, so after any kill the stored chain must be exactly
one of the chains the node was ever on (never a mix), at least as long as what it
had served before the kill, and valid.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from chain.block import check_chain
from chain.store import ChainStore
from sim.chains import make_chain
from sim.peer import ScriptedPeer
from tests.helpers import UdpClient, free_udp_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def start_node(data_dir: Path, port: int, peers: list[tuple[str, int]]) -> subprocess.Popen:
    args = [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--name", "victim",
            "--difficulty", "2", "--miners", "0", "--data-dir", str(data_dir), "--http-port", "0"]
    for host, p in peers:
        args += ["--peer", f"{host}:{p}"]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_kill_minus_nine_during_reorgs(tmp_path):
    rng = random.Random(2024)
    data_dir = tmp_path / "node"
    versions = [make_chain(150, 2, tag="v0")]
    peers = [ScriptedPeer(versions[0], seed=i, drop_rate=0.1).start() for i in range(2)]
    port = free_udp_port()
    client = UdpClient()
    served_height = 0
    proc = None
    try:
        for round_no in range(1, 11):
            proc = start_node(data_dir, port, [p.address for p in peers])
            stats = wait_for(lambda: client.ask(port, {"type": "STATS"}, timeout=0.3), timeout=15)
            served_height = max(served_height, stats["height"])
            # Wait for the node to be on the current version, recording what it serves.
            current = versions[-1]
            wait_for(lambda: (client.ask(port, {"type": "STATS"}, timeout=0.3) or {}).get("hash") == current[-1].hash, timeout=15)
            served_height = max(served_height, len(current))
            # A longer fork from a random point below the top, then kill mid-sync.
            base = current[: len(current) - rng.randint(3, 60)]
            fork = make_chain(len(current) + rng.randint(5, 40), 2, base=base, tag=f"v{round_no}")
            versions.append(fork)
            for p in peers:
                p.blocks = fork
            client.send(port, {"type": "CONSENSUS"})
            time.sleep(rng.uniform(0.0, 0.4))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
            stored = ChainStore(data_dir).load_chain()
            check_chain(stored, 2)
            assert len(stored) >= served_height
            assert any(stored == v for v in versions), "the stored chain is not one whole version: a torn reorg"
            print("round", round_no, "stored version", [i for i, v in enumerate(versions) if v == stored])
    finally:
        client.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
        for p in peers:
            p.stop()


def test_kill_minus_nine_while_mining_keeps_every_announced_block(tmp_path):
    """The miner announces each block after storing it: every announced block survives."""
    rng = random.Random(7)
    data_dir = tmp_path / "miner"
    watcher = ScriptedPeer([], name="watcher").start()  # a peer that records ANNOUNCEs
    port = free_udp_port()
    client = UdpClient()
    proc = None
    try:
        for _ in range(5):
            args = [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--name", "digger",
                    "--difficulty", "3", "--miners", "1", "--data-dir", str(data_dir), "--http-port", "0",
                    "--peer", f"{watcher.address[0]}:{watcher.address[1]}"]
            proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(lambda: client.ask(port, {"type": "STATS"}, timeout=0.3), timeout=15)
            announced_before = len(watcher.announced)
            wait_for(lambda: len(watcher.announced) >= announced_before + 3, timeout=30)
            time.sleep(rng.uniform(0.0, 0.5))
            served = client.ask(port, {"type": "STATS"}, timeout=0.5)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
            time.sleep(0.2)  # let in-flight ANNOUNCEs land
            stored = ChainStore(data_dir).load_chain()
            check_chain(stored, 3)
            for block in list(watcher.announced):
                assert block.height < len(stored) and stored[block.height] == block, f"announced block {block.height} lost"
            if served is not None:
                assert len(stored) >= served["height"]
                assert stored[served["height"] - 1].hash == served["hash"]
            assert all(b.mined_by == "digger" and b.messages for b in stored)
        assert len(watcher.announced) >= 15
    finally:
        client.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
        watcher.stop()
