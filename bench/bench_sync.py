"""Sync speed and memory, each against a baseline from the same run.

Run by hand:  python bench/bench_sync.py [--blocks 3000] [--loss 0.2] [--runs 3] [--big 100000]

Three scripted peers (separate processes, loopback only) serve the same chain.

1. Lossy link: the peers drop `--loss` of GET_BLOCK replies. Baseline: the seed's
   stop-and-wait (one GET_BLOCK at a time to a random peer, 20 ms timeout, validate
   each block). Ours: a fresh in-process node given the peers as --peer, from start
   until its chain holds every block. Prints the speed-up (baseline / ours); the
   issue asks >= 30x.
2. WAN-like link: each reply is delayed 40-60 ms (without slowing the others) and
   `--loss` of them are lost. Baseline: a greedy fetcher that sends every request
   at once, re-sends what is missing after 150 ms, and validates the chain at the
   end (the fastest a fetch can be, with no regard for the peers). Prints ours /
   greedy; the issue asks <= 3x (goal 2x).
3. A `--big`-block sync (difficulty 1, no loss) by a node in its own process
   (run_node.py): its time and peak RSS (sampled every 20 ms); goal < 250 MB.
   `--big 1000000 --big-from DIR` syncs a million blocks: the peers read the chain
   from a data dir written by bench/make_chain.py (mining it here would take longer
   than the sync).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import NodeConfig  # noqa: E402
from chain.block import check_block, check_chain  # noqa: E402
from messages.wire import GetBlock, GetBlockReply, decode, encode  # noqa: E402
from sim.chains import make_chain  # noqa: E402
from sim.peer import ScriptedPeer  # noqa: E402

DIFFICULTY = 2
ROOT = Path(__file__).resolve().parent.parent


def _peer_process(blocks, loss: float, seed: int, jitter, ready, stop) -> None:
    if isinstance(blocks, str):  # a data dir: the peer reads the chain itself
        from chain.store import ChainStore

        store = ChainStore(blocks)
        blocks = store.read_rows(0, None)[0]
        store.close()
    peer = ScriptedPeer(blocks, drop_rate=loss, seed=seed, jitter=jitter, name=f"bench-{seed}").start()
    ready.put(peer.address)
    stop.wait()
    peer.stop()


class Peers:
    """Three scripted peers in their own processes."""

    def __init__(self, blocks, loss: float, jitter=(0.0, 0.0)) -> None:
        ctx = mp.get_context("spawn")
        ready, self.stop = ctx.Queue(), ctx.Event()
        self.procs = [ctx.Process(target=_peer_process, args=(blocks, loss, i, jitter, ready, self.stop), daemon=True) for i in range(3)]
        for proc in self.procs:
            proc.start()
        self.addresses = [ready.get(timeout=600) for _ in self.procs]

    def close(self) -> None:
        self.stop.set()
        for proc in self.procs:
            proc.join(5)


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


def greedy(blocks_expected: int, peers: list[tuple[str, int]], resend_after: float = 0.15) -> tuple[float, int]:
    """The other baseline: every missing height asked at once (round robin), again after `resend_after`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    got: dict[int, object] = {}
    requests = 0
    start = time.perf_counter()
    while len(got) < blocks_expected:
        missing = [h for h in range(blocks_expected) if h not in got]
        for i, height in enumerate(missing):
            sock.sendto(encode(GetBlock(height)), peers[i % len(peers)])
        requests += len(missing)
        deadline = time.perf_counter() + resend_after
        while len(got) < blocks_expected:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                data, _ = sock.recvfrom(65536)
            except socket.timeout:
                break
            message = decode(data)
            if isinstance(message, GetBlockReply) and message.block is not None:
                got[message.block.height] = message.block
    check_chain([got[h] for h in range(blocks_expected)], DIFFICULTY)  # type: ignore[misc]
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


def big_sync(count: int, source: Path | None = None) -> None:
    """A node process syncs `count` blocks (made here, or read by the peers from `source`); its time and peak RSS."""
    if source is not None:
        print(f"peers read the chain from {source} ...", flush=True)
        blocks = str(source)
    else:
        print(f"making a {count}-block chain at difficulty 1 ...", flush=True)
        blocks = make_chain(count, 1)
    peers = Peers(blocks, 0.0)
    del blocks
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data_dir = Path(tempfile.mkdtemp(prefix="bench-big-"))
    args = [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--name", "big", "--difficulty", "1",
            "--miners", "0", "--data-dir", str(data_dir), "--http-port", "0"]
    for host, peer_port in peers.addresses:
        args += ["--peer", f"{host}:{peer_port}"]
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(0.02)
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    try:
        ps = psutil.Process(proc.pid)
        while True:
            peak = max(peak, ps.memory_info().rss)
            client.sendto(b'{"type":"STATS"}', ("127.0.0.1", port))
            try:
                data, _ = client.recvfrom(65536)
                message = decode(data)
                if type(message).__name__ == "Stats":  # the node checks our address before it answers in full
                    client.sendto(b'{"type":"STATS_REPLY","height":0,"hash":null}', ("127.0.0.1", port))
                if getattr(message, "height", 0) >= count:
                    break
            except (socket.timeout, ConnectionRefusedError):
                pass
            if time.perf_counter() - start > 1800:
                raise RuntimeError("no sync within 1800 s")
        elapsed = time.perf_counter() - start
        print(f"big: {count} blocks in {elapsed:.1f} s ({count / elapsed:,.0f} blocks/s), node peak RSS {peak / 2**20:.0f} MiB "
              f"(goal 250 MB = {250e6 / 2**20:.0f} MiB)", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        client.close()
        peers.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=3000)
    parser.add_argument("--loss", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big", type=int, default=100_000, help="blocks of the memory run (0: skip it)")
    parser.add_argument("--big-from", type=Path, default=None, help="data dir (make_chain.py) the big run's peers serve")
    parser.add_argument("--skip", choices=["loss", "wan"], action="append", default=[])
    args = parser.parse_args()

    print(f"making a {args.blocks}-block chain at difficulty {DIFFICULTY} ...", flush=True)
    blocks = make_chain(args.blocks, DIFFICULTY)
    print(f"cpus={os.cpu_count()}")
    if "loss" not in args.skip:
        peers = Peers(blocks, args.loss)
        print(f"1. lossy: 3 peers dropping {args.loss:.0%} of GET_BLOCK replies")
        try:
            for run in range(1, args.runs + 1):
                base_time, base_requests = stop_and_wait(args.blocks, peers.addresses)
                ours_time, ours_requests = our_node(args.blocks, peers.addresses)
                print(f"  run {run}: stop-and-wait {base_time:7.3f} s ({base_requests} requests) | "
                      f"our node {ours_time:6.3f} s ({ours_requests} requests) | speed-up {base_time / ours_time:5.1f}x", flush=True)
        finally:
            peers.close()
    if "wan" not in args.skip:
        peers = Peers(blocks, args.loss, jitter=(0.04, 0.06))
        print(f"2. WAN-like: replies delayed 40-60 ms, {args.loss:.0%} lost")
        try:
            for run in range(1, args.runs + 1):
                base_time, base_requests = greedy(args.blocks, peers.addresses)
                ours_time, ours_requests = our_node(args.blocks, peers.addresses)
                print(f"  run {run}: greedy {base_time:6.3f} s ({base_requests} requests) | "
                      f"our node {ours_time:6.3f} s ({ours_requests} requests) | ours/greedy {ours_time / base_time:4.2f}x", flush=True)
        finally:
            peers.close()
    if args.big:
        big_sync(args.big, args.big_from)


if __name__ == "__main__":
    main()
