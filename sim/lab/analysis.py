"""The lab's figures, computed from what the nodes said (their logs, /health samples, /chain). Pure.

Every function takes the nodes' histories and the lab's own record of what it
did (when each process was started and killed, when the network was cut), never
the relay's view: when a block reached a node is when that node logged taking it.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from sim.lab.logs import ChainEvent


@dataclass
class NodeRecord:
    name: str
    region: int
    events: list[ChainEvent]  # time order
    lives: list[tuple[float, float | None]] = field(default_factory=list)  # (spawned, ended or None)
    final_tip: tuple[int, str | None] | None = None  # (height, hash) from /health at the end
    miner: bool = False

    def alive_over(self, start: float, end: float) -> bool:
        """True if one life of the process covers [start, end] (no kill or restart in between)."""
        return any(s <= start and (e is None or e >= end) for s, e in self.lives)

    def alive_at(self, t: float) -> bool:
        return self.alive_over(t, t)

    def life_end(self, spawned: float) -> float | None:
        """When the life begun at `spawned` ended (None: it had not, or there is no such life)."""
        return next((e for s, e in self.lives if s == spawned), None)

    def life_s(self, spawned: float, until: float) -> float:
        """How long the life begun at `spawned` lasted (up to `until` if it had not ended by then)."""
        ended = self.life_end(spawned)
        return max(0.0, min(until, ended if ended is not None else until) - spawned)

    def spawned_at(self, t: float) -> float | None:
        """When the life that covers `t` began."""
        for s, e in self.lives:
            if s <= t and (e is None or e >= t):
                return s
        return None


@dataclass(frozen=True)
class Cut:
    start: float
    end: float
    groups: tuple[tuple[int, ...], ...]

    def separates(self, a: int, b: int) -> bool:
        side = {region: i for i, group in enumerate(self.groups) for region in group}
        return side.get(a) != side.get(b)

    def overlaps(self, start: float, end: float) -> bool:
        return start < self.end and end > self.start


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float], keys: Iterable[int | str] = (50, 90, 99, "max"), digits: int = 1) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in keys:
        value = (max(values) if values else None) if key == "max" else percentile(values, float(key))
        out["max" if key == "max" else f"p{key}"] = None if value is None else round(value, digits)
    return out


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50)


# ------------------------------------------------------------------ chain histories


def height_at(events: Sequence[ChainEvent], t: float) -> int:
    """The node's chain length just after time t (0 before its first event)."""
    height = 0
    for event in events:
        if event.t > t:
            break
        if event.writes or event.kind == "loaded":
            height = event.hi
    return height


def last_writes(events: Sequence[ChainEvent]) -> dict[int, float]:
    """For each height, when it was last written: the arrival of the block that is there now."""
    written: dict[int, float] = {}
    for event in events:
        if event.writes:
            for height in range(event.lo, event.hi):
                written[height] = event.t
    return written


def on_final_chain(tip: tuple[int, str | None] | None, final_hashes: Sequence[str]) -> bool:
    """True if a node's tip (height, hash) is a block of the final chain."""
    if tip is None or not tip[0] or tip[0] > len(final_hashes):
        return False
    return final_hashes[tip[0] - 1] == tip[1]


def mined_blocks(nodes: Sequence[NodeRecord]) -> dict[tuple[int, str], tuple[float, str]]:
    """(height, hash16) -> (when, by whom) for every block a node logged mining (first report wins)."""
    mined: dict[tuple[int, str], tuple[float, str]] = {}
    for node in nodes:
        for event in node.events:
            if event.kind == "mined" and event.hash16 is not None:
                key = (event.lo, event.hash16)
                if key not in mined or event.t < mined[key][0]:
                    mined[key] = (event.t, node.name)
    return mined


def stale_rate(nodes: Sequence[NodeRecord], final_hashes: Sequence[str], since: float = 0.0,
               exclude: Sequence[tuple[float, float]] = ()) -> tuple[float | None, int, int]:
    """(stale fraction, mined, stale): blocks mined since `since` that are not on the final chain.

    Blocks mined inside an `exclude` window (start, end) are left out: a cut network's
    smaller side mines blocks that must end off the final chain, however the nodes behave.
    """
    mined = [key for key, (t, _) in mined_blocks(nodes).items()
             if t >= since and not any(start <= t <= end for start, end in exclude)]
    stale = [(h, h16) for h, h16 in mined if h >= len(final_hashes) or not final_hashes[h].startswith(h16)]
    return (len(stale) / len(mined) if mined else None), len(mined), len(stale)


def propagation_ms(nodes: Sequence[NodeRecord], final_hashes: Sequence[str], cuts: Sequence[Cut],
                   since: float = 0.0, exclude: Sequence[tuple[float, float]] = ()) -> tuple[list[float], dict[str, int]]:
    """Delay (ms) from a final-chain block's mining to its arrival at each other node.

    A pair counts only if the node ends on the final chain, stayed up from the
    mining to the arrival, and no cut separated it from the miner in between (the
    partition's own delay is partition_heal_s's business). Returns the delays and
    how many pairs each rule left out. Blocks mined inside an `exclude` window
    (start, end) are left out whole (the steady-state figure leaves out a cut and
    its heal).
    """
    mined = mined_blocks(nodes)
    by_name = {n.name: n for n in nodes}
    written = {n.name: last_writes(n.events) for n in nodes}
    delays: list[float] = []
    skipped = {"not_on_final_chain": 0, "restarted_or_down": 0, "across_cut": 0, "never_arrived": 0}
    for height, block_hash in enumerate(final_hashes):
        origin = mined.get((height, block_hash[:16]))
        if origin is None or origin[0] < since:
            continue
        t0, miner_name = origin
        if any(start <= t0 <= end for start, end in exclude):
            continue
        miner = by_name[miner_name]
        for node in nodes:
            if node is miner:
                continue
            if not on_final_chain(node.final_tip, final_hashes) or node.final_tip is None or node.final_tip[0] <= height:
                skipped["not_on_final_chain"] += 1
                continue
            arrival = written[node.name].get(height)
            if arrival is None:
                skipped["never_arrived"] += 1
                continue
            arrival = max(arrival, t0)
            if not node.alive_over(t0, arrival):
                skipped["restarted_or_down"] += 1
                continue
            if any(c.overlaps(t0, arrival) and c.separates(miner.region, node.region) for c in cuts):
                skipped["across_cut"] += 1
                continue
            delays.append((arrival - t0) * 1000.0)
    return delays, skipped


class Timeline:
    """A node's chain length over time and, per length, since when its whole chain is the final one."""

    def __init__(self, node: NodeRecord, final_hashes: Sequence[str]) -> None:
        self.times: list[float] = []
        self.heights: list[int] = []
        for event in node.events:
            if event.writes or event.kind == "loaded":
                self.times.append(event.t)
                self.heights.append(event.hi)
        ends_final = on_final_chain(node.final_tip, final_hashes)
        top = node.final_tip[0] if ends_final and node.final_tip else 0
        written = last_writes(node.events)
        # final_since[H]: from when blocks 0..H-1 are all the final chain's (inf: never known to be)
        self.final_since = [0.0]
        for h in range(top):
            self.final_since.append(max(self.final_since[-1], written.get(h, math.inf)))

    def height(self, t: float) -> int:
        i = bisect.bisect_right(self.times, t)
        return self.heights[i - 1] if i else 0

    def on_final(self, t: float) -> tuple[int, bool]:
        height = self.height(t)
        ok = height < len(self.final_since) and self.final_since[height] <= t
        return height, ok


def agreement_after(nodes: Sequence[NodeRecord], final_hashes: Sequence[str], start: float, until: float,
                    up_since: float | None = None) -> float | None:
    """Seconds from `start` until every node up since `up_since` (default `start`) is on one tip of the final chain.

    A node killed or restarted in between is left out (churn is churn_catchup_s's
    business); None if the nodes never agree by `until`.
    """
    timelines = {n.name: Timeline(n, final_hashes) for n in nodes}
    since = start if up_since is None else up_since
    candidates = sorted({start, *(t for tl in timelines.values() for t in tl.times if start <= t <= until)})
    for t in candidates:
        tips = set()
        agree = True
        for node in nodes:
            if not node.alive_over(since, t):
                continue
            height, ok = timelines[node.name].on_final(t)
            if not ok:
                agree = False
                break
            tips.add(height)
        if agree and len(tips) == 1:
            return round(t - start, 3)
    return None


def catchup_s(node: NodeRecord, spawned: float, others: Sequence[NodeRecord], cuts: Sequence[Cut],
              until: float) -> float | None:
    """Seconds from a (re)start until the node's chain is as long as the longest it can reach had then.

    The target is the longest chain among the other nodes up at the restart and not
    cut off from it; None if the node did not get there before it ended (or `until`).
    """
    target = 0
    for other in others:
        if other is node or not other.alive_at(spawned):
            continue
        if any(c.start <= spawned < c.end and c.separates(node.region, other.region) for c in cuts):
            continue
        target = max(target, height_at(other.events, spawned))
    life_end = node.life_end(spawned) or until
    for event in node.events:
        if event.t < spawned or event.t > life_end:
            continue
        if (event.writes or event.kind == "loaded") and event.hi >= target:
            return round(max(0.0, event.t - spawned), 3)
    return None


def judged(outcomes: Sequence[tuple[float | None, float]], window: float) -> tuple[list[float], int, list[float]]:
    """Split per-life outcomes (seconds to reach something, or None; the life's length) by whether they
    can be judged against a goal of `window` seconds: (the times reached, how many lives never reached it
    though they lasted the window, the lengths of the lives cut short first). A life killed after 0.1 s
    that had not caught up is no evidence of a slow node, only of a short life; it is counted apart."""
    reached = [t for t, _ in outcomes if t is not None]
    missed = sum(1 for t, life in outcomes if t is None and life >= window)
    cut_short = sorted(round(life, 1) for t, life in outcomes if t is None and life < window)
    return reached, missed, cut_short


# ------------------------------------------------------------------ samples (/health sweeps)


def tip_agreement(samples: Sequence[dict[str, Any]]) -> list[tuple[float, float, int]]:
    """Per sweep: (time, share of nodes on the most common tip, number of tips)."""
    out = []
    for sweep in samples:
        tips = [(r["height"], r["hash"]) for r in sweep["nodes"].values() if r.get("height") is not None]
        if not tips:
            continue
        counts: dict[Any, int] = {}
        for tip in tips:
            counts[tip] = counts.get(tip, 0) + 1
        out.append((sweep["t"], max(counts.values()) / len(tips), len(counts)))
    return out


def peers_over_time(samples: Sequence[dict[str, Any]]) -> list[tuple[float, float, float, float]]:
    """Per sweep: (time, min, median, max) of the peers each node has validated (its tried table)."""
    out = []
    for sweep in samples:
        counts = [r["tried"] for r in sweep["nodes"].values() if r.get("tried") is not None]
        if counts:
            out.append((sweep["t"], min(counts), median(counts) or 0.0, max(counts)))
    return out


def life_key(name: str, spawned: float) -> str:
    """How `time_to_peers` names one life of a node."""
    return f"{name}@{spawned:.3f}"


def time_to_peers(nodes: Sequence[NodeRecord], spawn_times: dict[str, list[float]], wanted: int) -> dict[str, float | None]:
    """Per node life: seconds from its spawn to the log line where its count of validated peers
    reached `wanted` (None: never in that life). From the node's own lines, to the millisecond,
    whenever it happened (the /health sweeps start only once every node is up)."""
    by_name = {n.name: n for n in nodes}
    out: dict[str, float | None] = {}
    for name, spawns in spawn_times.items():
        record = by_name.get(name)
        for spawned in spawns:
            key = life_key(name, spawned)
            out[key] = None
            if record is None:
                continue
            life_end = record.life_end(spawned)
            for event in record.events:
                if event.kind != "peers" or event.t < spawned or (life_end is not None and event.t > life_end):
                    continue
                if event.hi >= wanted:
                    out[key] = round(event.t - spawned, 3)
                    break
    return out
