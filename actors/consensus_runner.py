"""ConsensusRunner: finds the best chain among the peers and syncs to it.

A round (on join, on a timer, on CONSENSUS, on an ANNOUNCE that does not link):

1. **collect**: STATS to every peer (re-sent to the silent ones), until all have
   answered or a deadline passes; rank the claimed chains (chain.selection).
2. **verify**: fetch the claimed top block from the claiming peers; a claim whose
   top hash doesn't check out becomes a weaker vote (tried last, read as a top
   index instead of a length).
3. **fork**: find where that chain and ours diverge by probing a spread of heights
   per round trip (a k-ary search), so an extension costs only the new blocks and
   a reorg only the blocks above the fork.
4. **fetch**: pipelined GET_BLOCKs spread over the agreeing peers (chain.fetch),
   validating as blocks arrive. The first bad block served by two peers (or by the
   last peer left) ends the candidate and the next best is tried.
5. **apply**: ChainKeeper replaces everything above the fork in one transaction,
   and only if the new chain is longer and fully valid.

The round is an event-driven state machine inside the actor, driven by replies
and a short tick while a round runs, so the actor keeps answering throughout.
"""
from __future__ import annotations

import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any, Callable

from actors.base import NodeActor, Ticker
from runtime.context import NodeContext, tell
from runtime.interfaces import ConsensusApi, TipListener
from chain.block import Block, InvalidBlock, check_block
from chain.fetch import FetchPlan
from chain.selection import Candidate, gallop_heights, narrow_fork, next_probe_heights, rank_candidates
from messages.internal import TipChanged
from messages.wire import GetBlock, GetBlockReply, Stats, StatsReply

Address = tuple[str, int]
TICK_SECONDS = 0.005
MAX_CLAIMS_SEEN = 1024
COLLECT_SECONDS = 1.0
STATS_RESEND_SECONDS = 0.25
CANDIDATE_STALL_SECONDS = 10.0
MAX_STATS_PEERS = 64
PROBE_FANOUT = 15
ANNOUNCE_ROUND_MIN_GAP = 1.0
ASK_TIMEOUT = 5.0  # below the supervisor's 10 s liveness timeout: waiting on a hung peer actor must not make us look hung
BAN_SECONDS = 600.0
REQUEST_BATCH = 8  # refill the request window in batches: fewer actor messages per block


@dataclass
class _Round:
    reason: str
    started: float
    peers: list[Address]
    our_hashes: list[str]
    claims: dict[Address, tuple[int, str | None]] = field(default_factory=dict)
    stats_sent_at: float = 0.0
    stats_resent: bool = False
    rtt: dict[Address, float] = field(default_factory=dict)  # from the STATS round trip (Karn: first send only)
    candidates: list[Candidate] = field(default_factory=list)
    weak: list[Candidate] = field(default_factory=list)
    stage: str = "collect"
    # the candidate being tried
    candidate: Candidate | None = None
    length: int = 0  # its length as verified
    plan: FetchPlan | None = None
    low: int = 0  # fork search: blocks below `low` match ours
    high: int = 0  # ... and block `high` differs (or is past an end)
    seen: dict[int, tuple[Block, Address]] = field(default_factory=dict)
    bad: Tally = field(default_factory=Tally)
    validated: list[Block] = field(default_factory=list)
    fork: int = 0
    probe_rounds: int = 0
    progress_at: float = 0.0


class ConsensusRunner(NodeActor, ConsensusApi, TipListener):
    def __init__(self, ctx: NodeContext, name: str = "ConsensusRunner", clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ctx, name)
        self.clock = clock
        self.round: _Round | None = None
        self._rerun: str | None = None
        self._ticker: Ticker | None = None
        self._last_announce_round = -1e9
        self.rounds_run = 0
        self._sync_started = 0.0
        self.last_result: str | None = None
        # Memory across rounds, so a liar costs one download, not one per round:
        self.banned: dict[Address, float] = {}  # peer -> until (served an invalid block)
        self.bad_chains: dict[str, float] = {}  # claimed top hash -> until (proved invalid)
        # For the dashboard: each peer's latest claimed height (a claim, not a fact), bounded.
        self.claims_seen: dict[Address, tuple[int | None, float]] = {}

    def on_start(self) -> None:
        self.every(self.ctx.config.consensus_interval, "start_round", "timer")
        self.actor_ref.proxy().start_round.defer("join")

    def release(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    # ---------------------------------------------------------- triggers

    def on_consensus(self) -> None:
        self.start_round("CONSENSUS")

    def on_unlinked_announce(self, block: Block, addr: Address) -> None:
        now = self.clock()
        if self.round is None and now - self._last_announce_round < ANNOUNCE_ROUND_MIN_GAP:
            return
        self._last_announce_round = now
        self.start_round(f"announce of height {block.height} from {addr[0]}:{addr[1]}", extra_peer=addr)

    def on_tip_changed(self, event: TipChanged) -> None:
        """Our chain grew meanwhile (an ANNOUNCE, our miner): a round chasing a chain
        no longer than ours has nothing left to gain."""
        r = self.round
        if r is not None and r.stage != "collect" and r.length and event.height >= r.length:
            self._finish(f"our chain reached height {event.height} meanwhile")

    def status(self) -> dict[str, Any]:
        r = self.round
        return {
            "running": r is not None,
            "stage": r.stage if r else None,
            "reason": r.reason if r else None,
            "target_height": r.length if r else None,
            "fetched": len(r.plan.received) if r and r.plan else 0,
            "rounds": self.rounds_run,
            "last_result": self.last_result,
        }

    def claimed_heights(self) -> dict[str, dict[str, Any]]:
        """`{"host:port": {"height": H, "age": seconds}}`: what each peer last said its chain length was."""
        now = self.clock()
        return {f"{h}:{p}": {"height": height, "age": round(now - at, 1)} for (h, p), (height, at) in self.claims_seen.items()}

    def _note_claim(self, addr: Address, height: int | None) -> None:
        self.claims_seen.pop(addr, None)
        self.claims_seen[addr] = (height, self.clock())
        while len(self.claims_seen) > MAX_CLAIMS_SEEN:
            del self.claims_seen[next(iter(self.claims_seen))]

    def start_round(self, reason: str, extra_peer: Address | None = None) -> None:
        if self.round is not None:
            self._rerun = self._rerun or reason
            return
        peers = self.ask(self.ctx.registry.gossip(), lambda gossip: gossip.peer_addresses(), timeout=ASK_TIMEOUT) or []
        if extra_peer is not None and extra_peer not in peers:
            peers.append(extra_peer)
        our_hashes = self.ask(self.ctx.registry.chain(), lambda chain: chain.all_hashes(), timeout=ASK_TIMEOUT)
        if our_hashes is None or not peers:
            self.last_result = "no peers" if our_hashes is not None else "ChainKeeper unavailable"
            return
        now = self.clock()
        peers = peers[:MAX_STATS_PEERS]
        self.round = _Round(reason=reason, started=now, peers=peers, our_hashes=our_hashes, progress_at=now)
        self.rounds_run += 1
        self.ctx.metrics.sync_rounds.inc()
        self.log.debug("consensus round (%s): asking %d peers", reason, len(peers))
        self._send_stats(now)
        self._ticker = Ticker(TICK_SECONDS, self.actor_ref.proxy().tick.defer, "ConsensusRunner-tick").start()

    # ---------------------------------------------------------- replies

    def on_stats_reply(self, reply: StatsReply, addr: Address) -> None:
        self._note_claim(addr, reply.height)
        r = self.round
        if r is None or r.stage != "collect" or addr not in r.peers:
            return
        if not r.stats_resent and addr not in r.claims:
            r.rtt[addr] = self.clock() - r.started
        r.claims[addr] = (reply.height, reply.hash)
        if len(r.claims) == len(r.peers):
            self._end_collect()

    def on_get_block_reply(self, reply: GetBlockReply, addr: Address) -> None:
        self.on_get_block_replies([(reply, addr)])

    def on_get_block_replies(self, replies: list[tuple[GetBlockReply, Address]]) -> None:
        """A batch of GET_BLOCK_REPLYs (NetworkIO batches what arrives together)."""
        r = self.round
        if r is None or r.plan is None:
            return
        now = self.clock()
        plan = r.plan
        for reply, addr in replies:
            if reply.block is None:
                if addr in plan.links:
                    self.log.debug("%s:%d lacks a block it claimed; dropped from this sync", *addr)
                    plan.on_missing(addr)
            elif plan.on_block(reply.block, addr, now):
                r.progress_at = now
                r.seen[reply.block.height] = (reply.block, addr)
        self._after_reply(now)

    def tick(self) -> None:
        r = self.round
        if r is None:
            return
        now = self.clock()
        if r.stage == "collect":
            if now - r.started >= COLLECT_SECONDS:
                self._end_collect()
            elif now - r.stats_sent_at >= STATS_RESEND_SECONDS:
                self._send_stats(now)
            return
        if now - r.progress_at > CANDIDATE_STALL_SECONDS:
            self._fail_candidate("no progress")
            return
        if r.plan is not None:
            r.plan.expire(now)
        self._after_reply(now, min_batch=1)

    # ---------------------------------------------------------- stages

    def _send_stats(self, now: float) -> None:
        r = self.round
        assert r is not None
        r.stats_resent = r.stats_sent_at > 0
        r.stats_sent_at = now
        silent = [addr for addr in r.peers if addr not in r.claims]
        self._send_many([(Stats(), addr) for addr in silent])

    def _end_collect(self) -> None:
        r = self.round
        assert r is not None
        now = self.clock()
        self.banned = {a: t for a, t in self.banned.items() if t > now}
        self.bad_chains = {h: t for h, t in self.bad_chains.items() if t > now}
        claims = [
            (addr, h, hsh) for addr, (h, hsh) in r.claims.items()
            if addr not in self.banned and hsh not in self.bad_chains
        ]
        r.candidates = rank_candidates(claims, len(r.our_hashes))
        self.log.debug("collected %d claims: %s", len(claims), [(c.height, c.hash[:8], c.votes) for c in r.candidates])
        self._next_candidate()

    def _next_candidate(self) -> None:
        r = self.round
        assert r is not None
        r.plan = None
        r.seen.clear()
        r.bad.clear()
        r.validated = []
        our_len = len(r.our_hashes)
        while r.candidates or r.weak:
            if r.candidates:
                candidate, length = r.candidates.pop(0), None
            else:
                candidate = r.weak.pop(0)
                length = candidate.height + 1
            if candidate.height == our_len and length is None:
                # Same length as ours: only worth trying as a top-index claim.
                r.weak.append(candidate)
                continue
            if length is not None and length <= our_len:
                continue
            if candidate.hash in r.our_hashes:
                continue  # a chain we already have all of
            r.candidate = candidate
            r.length = length if length is not None else candidate.height
            r.stage = "verify"
            r.progress_at = self.clock()
            self.ctx.metrics.sync_target.set(r.length)
            self._start_plan([r.length - 1], candidate.peers)
            return
        self._finish("nothing better" if not r.claims else "our chain is the best valid one")

    def _start_plan(self, heights: list[int], peers: Any) -> None:
        r = self.round
        assert r is not None
        wanted = [h for h in heights if h not in r.seen]
        previous = r.plan
        hints = {a: link.srtt for a, link in previous.links.items() if link.srtt is not None} if previous else r.rtt
        r.plan = FetchPlan(heights=wanted, peers=peers, rtt_hints=hints or r.rtt)
        for h in heights:
            if h in r.seen:
                r.plan.wanted.add(h)
                r.plan.received[h] = r.seen[h]
        self._after_reply(self.clock())

    def _after_reply(self, now: float, min_batch: int = REQUEST_BATCH) -> None:
        """Advance the current stage as far as the received blocks allow, then send what is due."""
        r = self.round
        if r is None or r.plan is None:
            return
        if r.stage == "fetch":
            self._validate_ready()
            r = self.round
            if r is None or r.plan is None or r.stage != "fetch":
                return
        if r.plan.failed:
            self._fail_candidate("every agreeing peer dropped out")
            return
        if r.plan.done:
            if r.stage == "verify":
                self._end_verify()
            elif r.stage == "fork":
                self._end_probe()
            return
        due = r.plan.due_requests(now, min_batch)
        if due:
            self._send_many([(GetBlock(h), addr) for h, addr in due])

    def _end_verify(self) -> None:
        r = self.round
        assert r is not None and r.candidate is not None and r.plan is not None
        top, source = r.plan.received[r.length - 1]
        if top.hash != r.candidate.hash:
            if r.length == r.candidate.height:
                self.log.debug("claim (%d, %s) does not check out; kept as a weak vote", r.candidate.height, r.candidate.hash[:8])
                r.weak.append(r.candidate)
            self._next_candidate()
            return
        r.stage = "fork"
        r.probe_rounds = 0
        r.low, r.high = 0, min(len(r.our_hashes), r.length)
        # Probe our top first, alone: in the common case (the candidate extends our
        # chain) that one block settles it; otherwise a k-ary search follows.
        self._probe([r.high - 1] if r.high > 0 else [])

    def _probe(self, heights: list[int]) -> None:
        r = self.round
        assert r is not None and r.plan is not None
        if not heights:
            self._start_fetch()
            return
        self._start_plan(heights, r.plan.peer_addresses())

    def _end_probe(self) -> None:
        r = self.round
        assert r is not None and r.plan is not None
        matches = [(h, block.hash == r.our_hashes[h]) for h, (block, _) in r.plan.received.items() if h < len(r.our_hashes)]
        r.low, r.high = narrow_fork(r.low, r.high, matches)
        r.probe_rounds += 1
        if r.low >= r.high:
            self._start_fetch()
        elif r.probe_rounds == 1:
            # Our top differs: forks are usually recent, so gallop back from the top
            # (1, 2, 4, ... blocks below) before searching the bracket it finds.
            self._probe(gallop_heights(r.low, r.high, PROBE_FANOUT))
        else:
            self._probe(next_probe_heights(r.low, r.high, PROBE_FANOUT))

    def _start_fetch(self) -> None:
        r = self.round
        assert r is not None and r.plan is not None
        r.fork = r.low
        r.stage = "fetch"
        self.log.info(
            "syncing to height %d (%d votes) from fork point %d: %d blocks from %d peers",
            r.length, r.candidate.votes if r.candidate else 0, r.fork, r.length - r.fork, len(r.plan.links),
        )
        self._sync_started = self.clock()
        self._start_plan(list(range(r.fork, r.length)), r.plan.peer_addresses())

    def _validate_ready(self) -> None:
        r = self.round
        assert r is not None and r.plan is not None
        difficulty = self.ctx.config.difficulty
        while True:
            height = r.fork + len(r.validated)
            if height >= r.length:
                self._apply()
                return
            entry = r.plan.received.get(height)
            if entry is None:
                return
            block, source = entry
            prev_hash = (r.validated[-1].hash if r.validated else (r.our_hashes[height - 1] if height > 0 else None))
            try:
                check_block(block, prev_hash, difficulty)
            except InvalidBlock as exc:
                r.bad[height] += 1
                r.plan.reject(height)
                r.seen.pop(height, None)
                r.plan.drop_peer(source)
                self.ctx.metrics.blocks_rejected.labels(source="sync").inc()
                self.log.warning("invalid block %d from %s:%d (%s); peer banned for %.0fs", height, source[0], source[1], exc.reason, BAN_SECONDS)
                self.banned[source] = self.clock() + BAN_SECONDS
                if r.bad[height] >= 2 or not r.plan.links:
                    if r.candidate is not None:
                        self.bad_chains[r.candidate.hash] = self.clock() + BAN_SECONDS
                    self._fail_candidate(f"invalid block at height {height}")
                return
            r.validated.append(block)
            self.ctx.metrics.sync_fetched.set(len(r.validated))

    def _apply(self) -> None:
        r = self.round
        assert r is not None and r.candidate is not None
        if r.validated[-1].hash != r.candidate.hash and r.length == r.candidate.height:
            self._fail_candidate("top hash differs from the claim")
            return
        elapsed = self.clock() - self._sync_started
        self.ctx.metrics.sync_seconds.inc(max(0.0, elapsed))
        if r.plan is not None:
            self.log.debug(
                "fetch stats: %d requests (%d timeouts) for %d blocks; rtt per peer: %s",
                r.plan.requests_sent, r.plan.timeouts, len(r.validated),
                {f"{a[0]}:{a[1]}": (round((l.srtt or 0) * 1000, 2), round(l.rttvar * 1000, 2)) for a, l in r.plan.links.items()},
            )
        applied = self.ask(self.ctx.registry.chain(), lambda chain: chain.apply_segment(r.fork, r.validated), timeout=ASK_TIMEOUT)
        if applied:
            self._finish(f"synced to height {r.length} ({len(r.validated)} blocks from height {r.fork} in {elapsed:.3f}s)")
        else:
            self._fail_candidate("ChainKeeper refused the segment")

    def _fail_candidate(self, why: str) -> None:
        r = self.round
        if r is None:
            return
        if r.candidate is not None:
            self.log.warning("chain (%d, %s) abandoned: %s", r.candidate.height, r.candidate.hash[:12], why)
        self._next_candidate()

    def _finish(self, result: str) -> None:
        self.last_result = result
        self.log.info("consensus round done: %s", result)
        self.round = None
        self.ctx.metrics.sync_target.set(0)
        self.ctx.metrics.sync_fetched.set(0)
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._rerun is not None:
            reason, self._rerun = self._rerun, None
            self.actor_ref.proxy().start_round.defer(reason)

    # ---------------------------------------------------------- I/O helpers

    def _send_many(self, messages: list[tuple[Any, Address]]) -> None:
        if messages:
            tell(self.ctx.registry.network(), lambda network: network.send_many.defer(messages))
