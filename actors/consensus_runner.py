"""ConsensusRunner: the thin actor around the sync engine (chain/sync.py).

All the decisions (which chain, which block from whom, what to blame, when to
give up) are the engine's, which is pure and tested with an injected clock. This
actor only does the I/O: it feeds the engine what arrives (STATS_REPLYs,
GET_BLOCK_REPLYs, CONSENSUS, ANNOUNCEs that don't link, tip changes) and the time
(a slow tick while idle, a fast one during a round), and carries out the actions
it returns: datagrams to NetworkIO, staging writes and chain switches to
ChainKeeper, the inputs of a new round (peers from GossipManager, our hashes and
the staged run from ChainKeeper). Rounds start on join, on a timer, on
CONSENSUS, and within ~2 s of any sign of a longer chain.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from actors.base import NodeActor
from chain.sync import (
    Action,
    Apply,
    RoundOver,
    Send,
    Stage,
    StartRound,
    SwitchStaged,
    SyncEngine,
    SyncSettings,
)
from messages.internal import TipChanged
from messages.wire import GetBlockReply, StatsReply
from runtime.context import NodeContext, tell
from runtime.interfaces import ConsensusApi, TipListener
from runtime.timers import TimerHandle
from net.address import Address

FAST_TICK_SECONDS = 0.005  # during a round: retransmission timers are this precise
ASK_TIMEOUT = 5.0  # below the supervisor's 10 s liveness timeout
GAUGE_LIMIT = 2**53  # gauges are floats: a claimed height is clamped before it is shown
MAX_CLAIMS_SEEN = 1024


class ConsensusRunner(NodeActor, ConsensusApi, TipListener):
    def __init__(self, ctx: NodeContext, name: str = "ConsensusRunner", clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ctx, name)
        self.clock = clock
        self.engine = SyncEngine(SyncSettings(difficulty=ctx.config.difficulty))
        self._fast: TimerHandle | None = None
        self._wakeup: TimerHandle | None = None  # while idle: one tick when a debounced round is due
        self._round_started = 0.0
        # For the dashboard: each peer's latest claimed height (a claim, not a fact), bounded.
        self.claims_seen: dict[Address, tuple[int | None, float]] = {}

    def on_start(self) -> None:
        self.every(self.ctx.config.consensus_interval, self.start_round, "timer")
        self.actor_ref.proxy().start_round.defer("join")

    def release(self) -> None:
        self._stop_fast_tick()
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None

    # ---------------------------------------------------------- inputs

    def on_consensus(self) -> None:
        self._run(self.engine.on_consensus(self.clock()))

    def on_unlinked_announce(self, block: Any, addr: Address) -> None:
        self._run(self.engine.on_announce(addr, block.height, self.clock()))

    def on_tip_changed(self, event: TipChanged) -> None:
        self._run(self.engine.set_tip(event.height, self.clock()))

    def on_stats_reply(self, reply: StatsReply, addr: Address) -> None:
        self._note_claim(addr, reply.height)
        self._run(self.engine.on_stats(addr, reply.height, reply.hash, self.clock()))

    def on_get_block_replies(self, replies: list[tuple[GetBlockReply, Address]]) -> None:
        """A batch of GET_BLOCK_REPLYs (NetworkIO batches what arrives together)."""
        self._run(self.engine.on_blocks([(addr, reply.block) for reply, addr in replies], self.clock()))

    def tick(self) -> None:
        self._wakeup = None
        self._run(self.engine.tick(self.clock()))
        self._update_gauges()

    def start_round(self, reason: str, extra_peers: Sequence[Address] = ()) -> None:
        if self.engine.round is not None:
            self._run(self.engine.on_consensus(self.clock()) if reason == "CONSENSUS" else [])
            return
        peers = self.ask(self.ctx.registry.gossip(), lambda gossip: gossip.peer_addresses(), timeout=ASK_TIMEOUT) or []
        our_hashes = self.ask(self.ctx.registry.chain(), lambda chain: chain.all_hashes(), timeout=ASK_TIMEOUT)
        if our_hashes is None:
            self.engine.last_result = "ChainKeeper unavailable"
            return
        staged = self.ask(self.ctx.registry.chain(), lambda chain: chain.staging_summary(), timeout=ASK_TIMEOUT)
        peers = list(dict.fromkeys([*peers, *extra_peers]))
        self._run(self.engine.start_round(reason, peers, our_hashes, staged, self.clock()))
        if self.engine.round is not None:
            self.ctx.metrics.sync_rounds.inc()
            self._round_started = self.clock()
            self._start_fast_tick()

    # ---------------------------------------------------------- queries

    def status(self) -> dict[str, Any]:
        return self.engine.status(self.clock())

    def claimed_heights(self) -> dict[str, dict[str, Any]]:
        """`{"host:port": {"height": H, "age": seconds}}`: what each peer last said its chain length was."""
        now = self.clock()
        return {f"{h}:{p}": {"height": height, "age": round(now - at, 1)} for (h, p), (height, at) in self.claims_seen.items()}

    def _note_claim(self, addr: Address, height: int | None) -> None:
        self.claims_seen.pop(addr, None)
        self.claims_seen[addr] = (height, self.clock())
        while len(self.claims_seen) > MAX_CLAIMS_SEEN:
            del self.claims_seen[next(iter(self.claims_seen))]

    # ---------------------------------------------------------- outputs

    def _run(self, actions: list[Action]) -> None:
        """Carry out the engine's actions, and those its answers lead to."""
        queue = list(actions)
        outgoing: list[Any] = []  # every datagram of this turn, to NetworkIO in one message
        while queue:
            action = queue.pop(0)
            if isinstance(action, Send):
                outgoing += action.messages
            elif isinstance(action, Stage):
                # Told, not asked: ChainKeeper handles its messages in order, so the
                # switch asked for later sees every segment staged before it.
                blocks, reset = list(action.blocks), action.reset
                tell(self.ctx.registry.chain(), lambda chain: chain.stage_blocks.defer(blocks, reset))
            elif isinstance(action, Apply):
                first, segment = action.first, list(action.blocks)
                ok = self.ask(self.ctx.registry.chain(), lambda chain: chain.apply_segment(first, segment), timeout=ASK_TIMEOUT)
                queue += self.engine.on_applied(bool(ok), self.clock())
            elif isinstance(action, SwitchStaged):
                switch = action
                ok = self.ask(self.ctx.registry.chain(), lambda chain: chain.switch_to_staged(switch.first, switch.top, switch.top_hash),
                              timeout=ASK_TIMEOUT)
                queue += self.engine.on_applied(bool(ok), self.clock())
            elif isinstance(action, RoundOver):
                self._stop_fast_tick()
                if self._round_started:
                    self.ctx.metrics.sync_seconds.inc(max(0.0, self.clock() - self._round_started))
                    self._round_started = 0.0
                self._update_gauges()
            elif isinstance(action, StartRound):
                self.actor_ref.proxy().start_round.defer(action.reason, action.extra_peers)
        if outgoing:
            tell(self.ctx.registry.network(), lambda network: network.send_many.defer(outgoing))
        self._arm_wakeup()

    def _arm_wakeup(self) -> None:
        due = self.engine.wakeup_due()
        if due is None or self._wakeup is not None or self._fast is not None:
            return
        self._wakeup = self.after(max(0.0, due - self.clock()) + 0.01, self.tick)

    def _update_gauges(self) -> None:
        status = self.engine.status(self.clock())
        target = status["target_height"] or 0
        self.ctx.metrics.sync_target.set(min(int(target), GAUGE_LIMIT))
        self.ctx.metrics.sync_fetched.set(min(int(status["fetched"]), GAUGE_LIMIT))

    def _start_fast_tick(self) -> None:
        if self._fast is None:
            self._fast = self.every(FAST_TICK_SECONDS, self.tick)

    def _stop_fast_tick(self) -> None:
        if self._fast is not None:
            self._fast.cancel()
            self._fast = None
