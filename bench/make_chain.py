"""Write a valid chain of N blocks into a data dir, through the project's own store.

Run by hand:  python bench/make_chain.py --blocks 1000000 --difficulty 1 --data-dir /tmp/chain-1m
              [--stage-fork-at 200000 --stage-blocks 800001]

Blocks are mined here (each carries one message, `b<height>`), checked against the
chain rules, and written with `ChainStore.replace_from` in batches, so the data dir
is exactly what a node would have written (meta difficulty, hash index, WAL). About
a minute for a million blocks at difficulty 1. With `--stage-fork-at F`, a fork of
`--stage-blocks` blocks from height F (another miner) is also written to the staging
table, as a long sync would leave it, for measuring a switch (bench/bench_start.py).

Also importable: `write_chain(data_dir, blocks, difficulty)` and `stored_blocks(data_dir)`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chain.block import Block, check_block  # noqa: E402
from chain.datadir import DataDir  # noqa: E402
from chain.store import ChainStore  # noqa: E402
from sim.chains import mine_block  # noqa: E402

BATCH = 10_000
TIMESTAMP0 = 1_700_000_000


def mine(count: int, difficulty: int, *, prev: Block | None = None, tag: str = "bench") -> Iterator[Block]:
    """`count` blocks on top of `prev` (genesis first when None), one at a time, each checked."""
    for _ in range(count):
        height = 0 if prev is None else prev.height + 1
        block = mine_block(prev, difficulty, mined_by=tag, messages=(f"b{height}",), timestamp=TIMESTAMP0 + height)
        check_block(block, None if prev is None else prev.hash, difficulty)
        yield block
        prev = block


def write_chain(data_dir: str | Path, count: int, difficulty: int, *, progress: bool = False) -> Block | None:
    """A fresh chain of `count` blocks in `data_dir` (which must hold none); returns the top block."""
    DataDir.open(data_dir, difficulty).close()  # the data dir as a node checks it: meta difficulty recorded
    store = ChainStore(data_dir)
    try:
        if store.height():
            raise SystemExit(f"{data_dir} already holds {store.height()} blocks: pass an empty data dir")
        top = _write(store, mine(count, difficulty), progress, "blocks", lambda h, batch: store.replace_from(h, batch))
    finally:
        store.close()
    return top


def stage_fork(data_dir: str | Path, fork_at: int, count: int, difficulty: int, *, progress: bool = False) -> Block | None:
    """Write `count` blocks of a fork from height `fork_at` (on our block `fork_at - 1`) to the staging table."""
    store = ChainStore(data_dir)
    try:
        base = store.block_at(fork_at - 1) if fork_at > 0 else None
        if fork_at > 0 and base is None:
            raise SystemExit(f"{data_dir} has no block {fork_at - 1} to fork from")
        store.clear_staging()
        top = _write(store, mine(count, difficulty, prev=base, tag="fork"), progress, "staged",
                     lambda h, batch: store.stage(batch))
    finally:
        store.close()
    return top


def _write(store: ChainStore, blocks: Iterator[Block], progress: bool, what: str, put) -> Block | None:
    batch: list[Block] = []
    top = None
    started = time.perf_counter()
    for block in blocks:
        batch.append(block)
        top = block
        if len(batch) >= BATCH:
            put(batch[0].height, batch)
            batch = []
            if progress and (top.height + 1) % 100_000 == 0:
                print(f"  {what} {top.height + 1:,} ({time.perf_counter() - started:.0f} s)", flush=True)
    if batch:
        put(batch[0].height, batch)
    return top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, required=True)
    parser.add_argument("--difficulty", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--stage-fork-at", type=int, default=None, help="also stage a fork from this height")
    parser.add_argument("--stage-blocks", type=int, default=0, help="blocks of that fork")
    args = parser.parse_args()
    started = time.perf_counter()
    top = write_chain(args.data_dir, args.blocks, args.difficulty, progress=True)
    made = time.perf_counter() - started
    print(f"{args.blocks:,} blocks at difficulty {args.difficulty} in {made:.1f} s "
          f"({args.blocks / max(made, 1e-9):,.0f} blocks/s); top {top.hash if top else None}", flush=True)
    if args.stage_fork_at is not None and args.stage_blocks:
        started = time.perf_counter()
        fork_top = stage_fork(args.data_dir, args.stage_fork_at, args.stage_blocks, args.difficulty, progress=True)
        assert fork_top is not None
        print(f"staged a fork of {args.stage_blocks:,} blocks from {args.stage_fork_at} in {time.perf_counter() - started:.1f} s: "
              f"top {fork_top.height} {fork_top.hash}", flush=True)
    size = sum(p.stat().st_size for p in args.data_dir.iterdir() if p.is_file())
    print(f"data dir {args.data_dir}: {size / 2**20:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
