"""ConsensusRunner: the thin actor around the sync engine (chain/sync.py).

All the decisions (which chain, which block from whom, what to blame, when to
give up) are the engine's, which is pure and tested with an injected clock. This
actor only does the I/O: it feeds the engine what arrives (STATS_REPLYs,
GET_BLOCK_REPLYs, CONSENSUS, ANNOUNCEs that don't link, tip changes, ChainKeeper's
answers) and the time, and carries out the actions it returns: datagrams to
NetworkIO, staging writes and chain switches to ChainKeeper, the inputs of a new
round (peers from GossipManager, our hashes and the staged run from ChainKeeper).
Rounds start on join, on a timer, on CONSENSUS, and within ~2 s of any sign of a
longer chain. CONSENSUS rounds are coalesced (`RoundGate`): at most one per
CONSENSUS_ROUND_GAP, one running and one waiting, however many CONSENSUS datagrams
arrive (NetworkIO also limits them per source IP and in all): a round sends a STATS
to every peer, so what third parties receive is bounded by the peer count and the
gap, never by the CONSENSUS rate.

It never waits on another actor: every request is told, with a request id, and
the answer comes back as a message of its own (`on_round_inputs`,
`on_peer_addresses`, `on_segment_applied`); an answer that never comes is given up
on at a deadline, and a late one (an old id) is ignored. Time comes from ONE
one-shot timer, armed after every message for the earliest of the engine's next
deadline and this actor's own (a round's inputs, an apply's answer): no polling,
idle or syncing.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from actors.base import NodeActor
from chain.sync import (
    Action,
    Apply,
    RoundOver,
    Send,
    Stage,
    Staged,
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
from net.ratelimit import RoundGate

INPUTS_TIMEOUT = 5.0  # a round's inputs: then it goes on without GossipManager's peers, or gives up without ChainKeeper's
# An apply's answer: generous, since switching to a staged chain of 800k blocks takes
# seconds; past it the engine is told "not applied" (ChainKeeper is down or stuck).
APPLY_TIMEOUT = 120.0
MIN_TIMER_DELAY = 0.001  # a deadline already past is ticked this soon (never a busy loop)
GAUGE_LIMIT = 2**53  # gauges are floats: a claimed height is clamped before it is shown
MAX_CLAIMS_SEEN = 1024
MAX_EXTRA_PEERS = 16  # peers named by the triggers of a round that waits for its inputs
# CONSENSUS rounds: at most one released per this many seconds (the rest coalesce into
# one waiting). With 64 peers a round is 64 STATS of 16 bytes (re-sent to a silent one
# up to 3 times): ~68 bytes a second to all peers together (~270 if none answers), and
# one STATS per peer per gap, whatever the CONSENSUS rate. An attacker sending the
# fewest CONSENSUS that keep a round waiting (one per gap, 20 bytes) still gets one
# round per gap: that absolute cost is the price of honouring a lone CONSENSUS.
CONSENSUS_ROUND_GAP = 15.0

# Request ids are unique in the process, across instances: an answer meant for a
# ConsensusRunner that crashed (and is handed to its successor) matches nothing.
_request_ids = itertools.count(1)


@dataclass
class _Gathering:
    """A round waiting for its inputs; each part is None until its answer comes."""

    request_id: int
    reason: str
    extra_peers: list[Address]
    deadline: float
    peers: list[Address] | None = None
    chain: tuple[Sequence[str], Staged | None] | None = None


@dataclass(frozen=True)
class _Applying:
    """An Apply / SwitchStaged told to ChainKeeper whose answer has not come yet."""

    request_id: int
    deadline: float
    what: str  # for the log line when it never comes


class ConsensusRunner(NodeActor, ConsensusApi, TipListener):
    # Expendable: a hung instance is abandoned and replaced. Starting a round over a
    # long chain (our hashes) takes a while.
    message_budget = 30.0

    def __init__(self, ctx: NodeContext, name: str = "ConsensusRunner", clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ctx, name)
        self.clock = clock
        self.engine = SyncEngine(SyncSettings(difficulty=ctx.config.difficulty))
        self._timer: TimerHandle | None = None  # the one pending tick ...
        self._timer_due = 0.0  # ... and when it is due (clock time)
        self._gathering: _Gathering | None = None
        self._applying: _Applying | None = None
        self._round_started = 0.0
        self._consensus_gate = RoundGate(CONSENSUS_ROUND_GAP)
        # For the dashboard: each peer's latest claimed chain length and top hash (a claim, not
        # a fact) and when it was made, from every STATS_REPLY and ANNOUNCE; bounded.
        self.claims_seen: dict[Address, tuple[int | None, str | None, float]] = {}

    def on_start(self) -> None:
        self.every(self.ctx.config.consensus_interval, self.start_round, "timer")

    def on_attached(self) -> None:
        """The supervisor listed us: answers to our requests can reach us now. The join round."""
        self.start_round("join")

    def release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---------------------------------------------------------- inputs

    def on_consensus(self) -> None:
        """A CONSENSUS datagram: a round now if none was released in the last gap, else
        one waiting (released by `tick` when the gap has passed); extra ones coalesce."""
        now = self.clock()
        already_waiting = self._consensus_gate.waiting
        if self._consensus_gate.ask(now):
            self._run(self.engine.on_consensus(now))
            return
        if already_waiting:
            self.ctx.metrics.dropped.labels(reason="consensus_coalesced").inc()
        self._rearm()

    def on_unlinked_announce(self, block: Any, addr: Address) -> None:
        self._note_claim(addr, block.height + 1, block.hash)
        self._run(self.engine.on_announce(addr, block.height, self.clock(), block.hash))

    def on_tip_changed(self, event: TipChanged) -> None:
        """Also how a late apply is learnt of: ChainKeeper tells the new tip before it answers."""
        self._run(self.engine.set_tip(event.height, self.clock()))

    def on_stats_reply(self, reply: StatsReply, addr: Address) -> None:
        # GossipManager greets a new address with a STATS: this answer is what validates it there.
        tell(self.ctx.registry.gossip(), lambda gossip: gossip.on_stats_answer.defer(addr))
        self._note_claim(addr, reply.height, reply.hash)
        self._run(self.engine.on_stats(addr, reply.height, reply.hash, self.clock()))

    def on_get_block_replies(self, replies: list[tuple[GetBlockReply, Address]]) -> None:
        """A batch of GET_BLOCK_REPLYs (NetworkIO batches what arrives together)."""
        ignored, idle = self.engine.ignored_replies, self.engine.replies_without_attempt
        self._run(self.engine.on_blocks([(addr, reply.block) for reply, addr in replies], self.clock()))
        # Answering no request in flight: dropped, counted for operators, apart from those that came
        # while no fetch ran (late answers to an attempt that ended: a sign attempts end too soon).
        idle = self.engine.replies_without_attempt - idle
        if idle:
            self.ctx.metrics.dropped.labels(reason="block_reply_without_fetch").inc(idle)
        if self.engine.ignored_replies - ignored > idle:
            self.ctx.metrics.dropped.labels(reason="unsolicited_block_reply").inc(self.engine.ignored_replies - ignored - idle)

    def tick(self) -> None:
        """The one timer fired (or a stale one did: harmless): act on whatever is due."""
        if self._timer is not None and self._timer.cancelled:
            self._timer = None  # fired (the timer service cancels a one-shot as it fires)
        now = self.clock()
        gathering, applying = self._gathering, self._applying
        if gathering is not None and now >= gathering.deadline:
            self._begin_round(gathering, overdue=True)
        if applying is not None and now >= applying.deadline:
            self.log.warning("no answer from ChainKeeper to the %s within %.0fs: taken as not applied", applying.what, APPLY_TIMEOUT)
            self._applying = None
            self._run(self.engine.on_applied(False, now, f"ChainKeeper did not answer the {applying.what}"))
        if self._consensus_gate.poll(now):
            self._run(self.engine.on_consensus(now))
        self._run(self.engine.tick(now))
        self._update_gauges()

    # ---------------------------------------------------------- rounds

    def start_round(self, reason: str, extra_peers: Sequence[Address] = ()) -> None:
        """Ask ChainKeeper and GossipManager for the round's inputs; it begins when they come."""
        if self.engine.round is not None:
            self._run(self.engine.on_consensus(self.clock()) if reason == "CONSENSUS" else [])
            return
        if not self._registered():
            # Answers come back through the registry, which lists us only once we are
            # attached; `on_attached` starts the join round then.
            self.log.debug("%s round asked for before this instance was attached: left to on_attached", reason)
            return
        gathering = self._gathering
        if gathering is not None:  # already asked: this trigger's peers join that round
            gathering.extra_peers = list(dict.fromkeys([*gathering.extra_peers, *extra_peers]))[:MAX_EXTRA_PEERS]
            return
        request_id = next(_request_ids)
        if not tell(self.ctx.registry.chain(), lambda chain: chain.send_round_inputs.defer(request_id)):
            self.engine.last_result = "ChainKeeper unavailable"
            return
        gathering = _Gathering(request_id, reason, list(extra_peers)[:MAX_EXTRA_PEERS], self.clock() + INPUTS_TIMEOUT)
        self._gathering = gathering
        if not tell(self.ctx.registry.gossip(), lambda gossip: gossip.send_peer_addresses.defer(request_id)):
            gathering.peers = []  # GossipManager is restarting: the known peers will do
        self._rearm()

    def _registered(self) -> bool:
        """The registry lists this instance: the answers to our requests can reach us."""
        ref = self.ctx.registry.ref(self.name)
        return ref is not None and ref.actor_urn == self.actor_urn

    def on_round_inputs(self, request_id: int, our_hashes: Sequence[str], staged: Staged | None) -> None:
        """ChainKeeper's answer to `send_round_inputs`: our block hashes by height, the staged run."""
        gathering = self._gathering
        if gathering is None or gathering.request_id != request_id:
            return  # a round that began (or gave up) without it
        gathering.chain = (our_hashes, staged)
        self._begin_round(gathering, overdue=False)

    def on_peer_addresses(self, request_id: int, peers: Sequence[Address]) -> None:
        """GossipManager's answer to `send_peer_addresses`."""
        gathering = self._gathering
        if gathering is None or gathering.request_id != request_id:
            return
        gathering.peers = list(peers)
        self._begin_round(gathering, overdue=False)

    def _begin_round(self, gathering: _Gathering, overdue: bool) -> None:
        """Start the round once its inputs are in; past its deadline, with what came."""
        if gathering.chain is None:
            if overdue:
                self._gathering = None
                self.engine.last_result = "ChainKeeper unavailable"
                self.log.warning("ChainKeeper did not send a round's inputs within %.0fs; round skipped", INPUTS_TIMEOUT)
            self._rearm()
            return
        if gathering.peers is None and not overdue:
            return  # ChainKeeper's part came first: GossipManager's follows
        self._gathering = None
        our_hashes, staged = gathering.chain
        now = self.clock()
        self._run(self.engine.start_round(gathering.reason, gathering.peers or [], our_hashes, staged, now, extra=gathering.extra_peers))
        if self.engine.round is not None:
            self.ctx.metrics.sync_rounds.inc()
            self._round_started = now

    def on_segment_applied(self, request_id: int, ok: bool) -> None:
        """ChainKeeper's answer to an apply or a switch: whether our chain is now the synced one."""
        applying = self._applying
        if applying is None or applying.request_id != request_id:
            # Given up on already (the engine was told "not applied"). If it was applied
            # after all, the tip notice sent before this answer has told the engine.
            self.log.info("late answer from ChainKeeper to a sync's apply (%s): ignored", "applied" if ok else "refused")
            return
        self._applying = None
        self._run(self.engine.on_applied(ok, self.clock()))

    # ---------------------------------------------------------- queries

    def status(self) -> dict[str, Any]:
        return self.engine.status(self.clock())

    def claimed_heights(self) -> dict[str, dict[str, Any]]:
        """`{"host:port": {"height": H, "hash": X, "age": seconds}}`: each peer's latest claim of its chain.

        Refreshed by every STATS_REPLY and every ANNOUNCE the peer sends (ChainKeeper
        tells us of the ones it could use, `note_announce`), not only by a sync round's,
        so the dashboard never shows a peer's claim from minutes ago while it mines.
        """
        now = self.clock()
        return {f"{h}:{p}": {"height": height, "hash": top, "age": round(now - at, 1)}
                for (h, p), (height, top, at) in self.claims_seen.items()}

    def note_announce(self, height: int, top_hash: str, addr: Address) -> None:
        """A peer ANNOUNCEd a block ChainKeeper stored or already held: its chain is `height` blocks long."""
        self._note_claim(addr, height, top_hash)

    def _note_claim(self, addr: Address, height: int | None, top_hash: str | None) -> None:
        self.claims_seen.pop(addr, None)
        self.claims_seen[addr] = (height, top_hash, self.clock())
        while len(self.claims_seen) > MAX_CLAIMS_SEEN:
            del self.claims_seen[next(iter(self.claims_seen))]

    # ---------------------------------------------------------- outputs

    def _run(self, actions: list[Action]) -> None:
        """Carry out the engine's actions (and those its immediate answers lead to), then re-arm the timer."""
        queue = list(actions)
        outgoing: list[Any] = []  # every datagram of this turn, to NetworkIO in one message
        while queue:
            action = queue.pop(0)
            if isinstance(action, Send):
                outgoing += action.messages
            elif isinstance(action, Stage):
                # ChainKeeper handles its messages in order, so the switch told later
                # sees every segment staged before it.
                blocks, reset = list(action.blocks), action.reset
                tell(self.ctx.registry.chain(), lambda chain: chain.stage_blocks.defer(blocks, reset))
            elif isinstance(action, (Apply, SwitchStaged)):
                queue += self._tell_apply(action)
            elif isinstance(action, RoundOver):
                if self._round_started:
                    self.ctx.metrics.sync_seconds.inc(max(0.0, self.clock() - self._round_started))
                    self._round_started = 0.0
                self._update_gauges()
            elif isinstance(action, StartRound):
                self.tell_self(self.start_round, action.reason, action.extra_peers)
        if outgoing:
            tell(self.ctx.registry.network(), lambda network: network.send_many.defer(outgoing))
        self._rearm()

    def _tell_apply(self, action: Apply | SwitchStaged) -> list[Action]:
        """Tell ChainKeeper to apply (the answer comes as `on_segment_applied`); if it is
        down, the engine hears "not applied" at once."""
        if self._applying is not None:  # the engine issues one at a time; if not, the newest counts
            self.log.warning("a new %s while the answer to an earlier one is out: the earlier one's is ignored", type(action).__name__)
        request_id = next(_request_ids)
        if isinstance(action, Apply):
            first, segment = action.first, list(action.blocks)
            what = f"apply of {len(segment)} blocks from height {first}"
            sent = tell(self.ctx.registry.chain(), lambda chain: chain.apply_segment_and_reply.defer(request_id, first, segment))
        else:
            switch = action
            what = f"switch to the staged chain {switch.first}..{switch.top}"
            sent = tell(self.ctx.registry.chain(),
                        lambda chain: chain.switch_to_staged_and_reply.defer(request_id, switch.first, switch.top, switch.top_hash))
        if not sent:
            self._applying = None
            return self.engine.on_applied(False, self.clock(), "ChainKeeper unavailable")
        self._applying = _Applying(request_id, self.clock() + APPLY_TIMEOUT, what)
        return []

    def _rearm(self) -> None:
        """Keep ONE pending tick, due at the earliest deadline (the engine's or ours).

        A pending tick due no later is kept (it re-arms when it fires), so a burst
        of messages costs no timer churn; one set for a deadline that went away only
        costs a tick that finds nothing to do.
        """
        now = self.clock()
        dues = [self.engine.next_deadline(now)]
        if self._gathering is not None:
            dues.append(self._gathering.deadline)
        if self._applying is not None:
            dues.append(self._applying.deadline)
        dues.append(self._consensus_gate.due())
        due = min((d for d in dues if d is not None), default=None)
        timer = self._timer
        if timer is not None and timer.cancelled:
            timer = self._timer = None  # it fired: its tick is queued or done
        if due is None:
            if timer is not None:
                timer.cancel()
                self._timer = None
            return
        if timer is not None:
            if self._timer_due <= due:
                return
            timer.cancel()
        self._timer = self.after(max(due - now, MIN_TIMER_DELAY), self.tick)
        self._timer_due = max(due, now + MIN_TIMER_DELAY)

    def _update_gauges(self) -> None:
        status = self.engine.status(self.clock())
        target = status["target_height"] or 0
        self.ctx.metrics.sync_target.set(min(int(target), GAUGE_LIMIT))
        self.ctx.metrics.sync_fetched.set(min(int(status["fetched"]), GAUGE_LIMIT))
