"""Consensus choices as pure functions: which chains to try, and in what order.

The protocol's rule: choose the longest chain; among chains of the same height, the
(height, hash) pair most peers agree on. Peers may report nonsense; anything
that isn't a plausible (length, hash) claim is ignored here, and a claim is only
a claim until its blocks, linked and with their proof of work, arrive (see
chain/sync.py). There is no fork search: the sync downloads downward from the
claimed top until a block is one we hold, so no answer is taken on trust.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from chain.block import HASH_RE
from net.address import Address



@dataclass(frozen=True)
class Candidate:
    """A chain some peers claim: its length, top hash and who claims it."""

    height: int
    hash: str
    peers: tuple[Address, ...]

    @property
    def votes(self) -> int:
        return len(self.peers)


def rank_candidates(claims: Iterable[tuple[Address, int, str | None]], our_height: int, difficulty: int = 0) -> list[Candidate]:
    """Chains longer than ours, best first: longest, then most agreeing peers.

    `claims` are (peer, height, hash) from STATS_REPLYs; one claim per peer counts
    (the last one), implausible ones are skipped: a top hash without the proof of
    work `difficulty` asks can't be the top of a valid chain. Heights are only
    compared, never used to size anything.
    """
    by_peer: dict[Address, tuple[int, str]] = {}
    for peer, height, block_hash in claims:
        if isinstance(height, bool) or not isinstance(height, int) or height <= 0:
            continue
        if not isinstance(block_hash, str) or not HASH_RE.match(block_hash):
            continue
        if difficulty > 0 and not block_hash.endswith("0" * difficulty):
            continue
        by_peer[peer] = (height, block_hash)
    groups: dict[tuple[int, str], list[Address]] = defaultdict(list)
    for peer, claim in by_peer.items():
        groups[claim].append(peer)
    candidates = [
        Candidate(height, block_hash, tuple(sorted(peers)))
        for (height, block_hash), peers in groups.items()
        # A peer that reports its top index instead of its length is one block
        # longer than it says: keep claims of our own height too, verified later.
        if height + 1 > our_height
    ]
    candidates.sort(key=lambda c: (-c.height, -c.votes, c.hash))
    return candidates
