"""The emulated network: regions, per-link delay and jitter, loss, uplink bandwidth, partitions.

Pure: the caller passes the RNG and the time. The relay asks `LinkModel.verdict`
for every datagram it forwards.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

# Round-trip times in ms between five regions, roughly what the public internet shows
# (US east, US west, Europe, Asia, South America); inside a region a few ms.
REGION_NAMES = ("us-east", "us-west", "europe", "asia", "s-america")
NAMED_RTT_MS = (
    (4, 70, 90, 200, 120),
    (70, 4, 150, 120, 170),
    (90, 150, 4, 240, 200),
    (200, 120, 240, 4, 250),
    (120, 170, 200, 250, 4),
)
INSIDE_RTT_MS = 4.0
MIN_RTT_MS, MAX_RTT_MS = 20.0, 250.0


def region_names(count: int) -> list[str]:
    return [REGION_NAMES[i] if i < len(REGION_NAMES) else f"region-{i}" for i in range(count)]


def rtt_matrix(regions: int) -> list[list[float]]:
    """RTT in ms for each pair of regions: the named table up to five, else regions on a ring.

    Beyond five, region i sits at angle 2*pi*i/R; the RTT grows with the arc between two
    regions from MIN_RTT_MS (neighbours) to MAX_RTT_MS (opposite sides).
    """
    if regions < 1:
        raise ValueError("at least one region")
    if regions <= len(NAMED_RTT_MS):
        return [[float(NAMED_RTT_MS[i][j]) for j in range(regions)] for i in range(regions)]
    matrix = []
    for i in range(regions):
        row = []
        for j in range(regions):
            if i == j:
                row.append(INSIDE_RTT_MS)
                continue
            steps = min(abs(i - j), regions - abs(i - j))  # 1 .. regions // 2
            row.append(MIN_RTT_MS + (MAX_RTT_MS - MIN_RTT_MS) * (steps - 1) / max(1, regions // 2 - 1))
        matrix.append(row)
    return matrix


@dataclass
class LinkModel:
    """What happens to one datagram from region a to region b.

    One-way delay = RTT/2 times (1 + U(0, jitter)); `loss` is the chance it is
    lost; with `uplink_bps` each sender's datagrams queue behind each other at that
    rate (a sender's uplink is its bottleneck); a cut between two region groups
    drops everything across it.
    """

    rtt_ms: list[list[float]]
    loss: float = 0.0
    jitter: float = 0.1
    uplink_bps: float = 0.0  # 0: unlimited
    cut: tuple[frozenset[int], ...] = ()  # the groups currently cut from each other; () = healed
    _uplink_free: dict[int, float] = field(default_factory=dict)

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        self.cut = tuple(frozenset(g) for g in groups)

    def heal(self) -> None:
        self.cut = ()

    def separated(self, a: int, b: int) -> bool:
        """True while regions a and b are on different sides of the current cut."""
        if not self.cut or a == b:
            return False
        side_a = next((i for i, g in enumerate(self.cut) if a in g), None)
        side_b = next((i for i, g in enumerate(self.cut) if b in g), None)
        return side_a != side_b

    def one_way_s(self, a: int, b: int, rng: random.Random) -> float:
        base = self.rtt_ms[a][b] / 2000.0
        return base * (1.0 + rng.uniform(0.0, self.jitter))

    def verdict(self, sender: int, a: int, b: int, size: int, now: float, rng: random.Random) -> tuple[str, float]:
        """("partition"|"loss", 0) for a dropped datagram, else ("ok", when to deliver it)."""
        if self.separated(a, b):
            return "partition", 0.0
        if self.loss > 0 and rng.random() < self.loss:
            return "loss", 0.0
        leave = now
        if self.uplink_bps > 0:
            leave = max(now, self._uplink_free.get(sender, now)) + size * 8 / self.uplink_bps
            self._uplink_free[sender] = leave
        return "ok", leave + self.one_way_s(a, b, rng)


def split_regions(regions: int, rng: random.Random) -> list[list[int]]:
    """Two groups of regions for a partition: a random floor(R/2) on one side, the rest on the other."""
    if regions < 2:
        raise ValueError("a partition needs at least two regions")
    order = list(range(regions))
    rng.shuffle(order)
    half = regions // 2
    return [sorted(order[:half]), sorted(order[half:])]
