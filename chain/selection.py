"""Consensus choices as pure functions: which chains to try, and in what order.

PROTOCOL.md: choose the longest chain; among chains of the same height, the
(height, hash) pair most peers agree on. Peers may report nonsense; anything
that isn't a plausible (length, hash) claim is ignored here, and claims are
checked against real blocks before a download starts (see ConsensusRunner).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

Address = tuple[str, int]
_HASH = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Candidate:
    """A chain some peers claim: its length, top hash and who claims it."""

    height: int
    hash: str
    peers: tuple[Address, ...]

    @property
    def votes(self) -> int:
        return len(self.peers)


def rank_candidates(claims: Iterable[tuple[Address, int, str | None]], our_height: int) -> list[Candidate]:
    """Chains longer than ours, best first: longest, then most agreeing peers.

    `claims` are (peer, height, hash) from STATS_REPLYs; one claim per peer counts
    (the last one), implausible ones are skipped.
    """
    by_peer: dict[Address, tuple[int, str]] = {}
    for peer, height, block_hash in claims:
        if isinstance(height, bool) or not isinstance(height, int) or height <= 0:
            continue
        if not isinstance(block_hash, str) or not _HASH.match(block_hash):
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


def next_probe_heights(low: int, high: int, fanout: int) -> list[int]:
    """Up to `fanout` heights spread over [low, high) to narrow a fork search.

    The fork point f is the first height where the two chains differ; we know
    blocks below `low` match and block `high` differs (or is past the end). Probing
    several heights per round trip cuts the search to log_fanout(range) round trips.
    """
    span = high - low
    if span <= 0:
        return []
    if span <= fanout:
        return list(range(low, high))
    step = span / (fanout + 1)
    return sorted({low + int(step * (i + 1)) for i in range(fanout)})


def gallop_heights(low: int, high: int, count: int) -> list[int]:
    """Heights 1, 2, 4, ... below `high` (and `low` itself): finds a recent fork in few probes."""
    heights = {high - (1 << i) for i in range(count - 1) if high - (1 << i) >= low}
    heights.add(low)
    return sorted(h for h in heights if low <= h < high)


def narrow_fork(low: int, high: int, matches: Sequence[tuple[int, bool]]) -> tuple[int, int]:
    """New (low, high) after learning, for some heights, whether the chains match there."""
    for height, same in sorted(matches):
        if low <= height < high:
            if same:
                low = max(low, height + 1)
            else:
                high = min(high, height)
    return low, high
