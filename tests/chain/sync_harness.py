"""A simulated network for the sync engine: scripted peers, a virtual clock, no sockets.

The harness plays the ConsensusRunner and the ChainKeeper: it carries out the
engine's actions (delivering datagrams to scripted peers, whose answers come back
after their delay, or not at all), keeps "our" chain and the staging table, and
ticks the engine every 5 ms of virtual time.
"""
from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Callable

from chain.block import Block, check_chain
from chain.sync import Apply, RoundOver, Send, Stage, Staged, StartRound, SwitchStaged, SyncEngine, SyncSettings
from messages.wire import GetBlock, Stats
from net.address import Address

DIFFICULTY = 1

Serve = Callable[[int], "Block | None | str"]  # a height -> a block, None (no such block) or "silent"


@dataclass
class SimPeer:
    addr: Address
    blocks: list[Block]
    claim: tuple[int, str | None] | None = None
    serve: Serve | None = None  # overrides serving from `blocks`
    delay: float = 0.01
    block_delay: float | None = None  # GET_BLOCK answers take this long instead (a loaded peer: STATS is cheaper)
    loss: float = 0.0
    answer_stats: bool = True
    reply_from: Address | None = None
    serial: bool = False  # answers one GET_BLOCK after another, `delay` each (a slow single-threaded peer)
    busy_until: float = 0.0
    get_blocks: list[int] = field(default_factory=list)
    stats_asked: int = 0

    def stats(self) -> tuple[int, str | None]:
        if self.claim is not None:
            return self.claim
        return len(self.blocks), self.blocks[-1].hash if self.blocks else None

    def block(self, height: int) -> "Block | None | str":
        if self.serve is not None:
            return self.serve(height)
        return self.blocks[height] if 0 <= height < len(self.blocks) else None


class Harness:
    def __init__(self, ours: list[Block], peers: list[SimPeer], seed: int = 0, staging: dict[int, Block] | None = None, **settings) -> None:
        self.engine = SyncEngine(SyncSettings(difficulty=DIFFICULTY, **settings))
        self.chain = list(ours)
        self.peers = {p.addr: p for p in peers}
        self.rng = random.Random(seed)
        self.now = 0.0
        self._events: list[tuple[float, int, str, tuple]] = []
        self._seq = itertools.count()
        self.staging: dict[int, Block] = dict(staging or {})
        self.results: list[str] = []
        self.applied: list[tuple[str, int, int]] = []
        self.max_held = 0
        self.stage_writes = 0
        self.engine.set_tip(len(self.chain), 0.0)

    # ---------------------------------------------------------- driving

    def start(self, reason: str = "test", extra: tuple[Address, ...] = ()) -> None:
        self.do(self.engine.start_round(reason, [*self.peers, *extra], [b.hash for b in self.chain], self.staged(), self.now))

    def staged(self) -> Staged | None:
        if not self.staging:
            return None
        low, high = min(self.staging), max(self.staging)
        if len(self.staging) != high - low + 1:
            return None
        return Staged(self.staging[low], high, self.staging[high].hash)

    def run(self, until: float, stop: Callable[["Harness"], bool] | None = None) -> None:
        """Advance virtual time to `until` (or until `stop` holds), delivering and ticking."""
        tick = 0.005
        next_tick = self.now + tick
        while self.now < until:
            if stop is not None and stop(self):
                return
            due = self._events[0][0] if self._events else float("inf")
            if due <= next_tick:
                at, _, kind, payload = heapq.heappop(self._events)
                self.now = max(self.now, at)
                self._deliver(kind, payload)
            else:
                self.now = next_tick
                next_tick += tick
                self.do(self.engine.tick(self.now))
            r = self.engine.round
            if r is not None and r.attempt is not None:
                a = r.attempt
                self.max_held = max(self.max_held, len(a.buffer) + a.req.inflight_count + len(a.linked))

    def inject(self, delay: float, kind: str, payload: tuple) -> None:
        heapq.heappush(self._events, (self.now + delay, next(self._seq), kind, payload))

    def _deliver(self, kind: str, payload: tuple) -> None:
        if kind == "stats_reply":
            source, height, top = payload
            self.do(self.engine.on_stats(source, height, top, self.now))
        elif kind == "block":
            source, block = payload
            self.do(self.engine.on_block(source, block, self.now))
        elif kind == "call":
            (fn,) = payload
            fn(self)

    # ---------------------------------------------------------- actions

    def do(self, actions: list) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, Send):
                for message, addr in action.messages:
                    self._to_peer(message, addr)
            elif isinstance(action, Stage):
                self.stage_writes += 1
                if action.reset:
                    self.staging.clear()
                for b in action.blocks:
                    self.staging[b.height] = b
            elif isinstance(action, Apply):
                queue += self.engine.on_applied(self._apply(action.first, list(action.blocks), "memory"), self.now)
            elif isinstance(action, SwitchStaged):
                blocks = [self.staging.get(h) for h in range(action.first, action.top + 1)]
                ok = None not in blocks and blocks[-1].hash == action.top_hash and self._apply(action.first, blocks, "staged")
                if ok:
                    self.staging.clear()
                queue += self.engine.on_applied(bool(ok), self.now)
            elif isinstance(action, StartRound):
                self.results.append(f"start:{action.reason}")
                self.do(self.engine.start_round(action.reason, [*self.peers, *action.extra_peers],
                                                [b.hash for b in self.chain], self.staged(), self.now))
            elif isinstance(action, RoundOver):
                self.results.append(action.result)

    def _apply(self, first: int, blocks: list[Block], how: str) -> bool:
        if first > len(self.chain) or first + len(blocks) <= len(self.chain):
            return False
        prev = self.chain[first - 1].hash if first > 0 else None
        check_chain(blocks, DIFFICULTY, base_height=first, base_prev_hash=prev)  # raises: a test failure
        self.chain[first:] = blocks
        self.applied.append((how, first, len(blocks)))
        self.engine.set_tip(len(self.chain), self.now)
        return True

    def _to_peer(self, message: object, addr: Address) -> None:
        peer = self.peers.get(addr)
        if peer is None:
            return
        source = peer.reply_from or peer.addr
        if isinstance(message, Stats):
            peer.stats_asked += 1
            if peer.answer_stats:
                height, top = peer.stats()
                self.inject(peer.delay, "stats_reply", (source, height, top))
        elif isinstance(message, GetBlock):
            peer.get_blocks.append(message.height)
            if peer.loss and self.rng.random() < peer.loss:
                return
            block = peer.block(message.height)
            if block == "silent":
                return
            if peer.serial:
                peer.busy_until = max(self.now, peer.busy_until) + peer.delay
                self.inject(peer.busy_until - self.now, "block", (source, block))
            else:
                delay = peer.delay if peer.block_delay is None else peer.block_delay
                self.inject(delay * (0.5 + self.rng.random()), "block", (source, block))

    # ---------------------------------------------------------- results

    def synced_to(self, blocks: list[Block]) -> bool:
        return [b.hash for b in self.chain] == [b.hash for b in blocks]
