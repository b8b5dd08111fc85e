"""Token buckets per destination address, so forged sources can't aim our replies.

UDP source addresses can be forged: a 30-byte GET_BLOCK with a victim's address
as its source would make us send the victim a 300-byte block. Every reply we are
asked to send is charged, *before any work is done*, to a bucket keyed by the
address it would go to (the datagram's source for STATS and GET_BLOCK, the
claimed originator for GOSSIP). An empty bucket means the request is dropped
and counted. The table of buckets is bounded (least recently used first out),
so a flood of distinct forged addresses can't grow memory.

Pure: time is passed in.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable


class TokenBuckets:
    """One bucket of `burst` bytes per key, refilled at `rate` bytes per second."""

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # key -> (tokens, updated)

    def allow(self, key: Hashable, cost: float, now: float) -> bool:
        """Take `cost` tokens from `key`'s bucket if it has them."""
        tokens, updated = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
