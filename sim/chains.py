"""Make valid chains at low difficulty, fast enough for tests and benchmarks."""
from __future__ import annotations

import hashlib
import itertools

from chain.block import Block, hash_prefix, meets_difficulty


def mine_block(prev: Block | None, difficulty: int, mined_by: str = "sim", messages: tuple[str, ...] = ("sim",), timestamp: int = 1_700_000_000) -> Block:
    """The next block on top of `prev` (genesis when None), by brute force."""
    prev_hash = prev.hash if prev is not None else None
    height = prev.height + 1 if prev is not None else 0
    base = hashlib.sha256(hash_prefix(prev_hash, mined_by, messages, timestamp))
    for n in itertools.count():
        nonce = str(n)
        digest = base.copy()
        digest.update(nonce.encode())
        block_hash = digest.hexdigest()
        if meets_difficulty(block_hash, difficulty):
            return Block(height, mined_by, tuple(messages), nonce, timestamp, block_hash)
    raise AssertionError("unreachable")


def make_chain(length: int, difficulty: int, *, base: list[Block] | None = None, tag: str = "sim") -> list[Block]:
    """`base` extended to `length` blocks; `tag` goes into minedBy so forks differ."""
    blocks = list(base or [])
    while len(blocks) < length:
        prev = blocks[-1] if blocks else None
        blocks.append(mine_block(prev, difficulty, mined_by=tag, messages=(f"b{len(blocks)}",), timestamp=1_700_000_000 + len(blocks)))
    return blocks
