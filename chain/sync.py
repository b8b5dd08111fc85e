"""The sync engine: finds the best chain among the peers and downloads it, trusting no one.

Pure: no sockets, no clocks, no actors. The ConsensusRunner feeds it what arrives
(`on_stats`, `on_block`, `on_announce`, `on_consensus`, `set_tip`, `on_applied`)
and the time (`tick(now)`, due at `next_deadline(now)`: the actor arms one timer
for it, never a poll), and carries out the actions it returns (`Send`, `Stage`,
`Apply`, `SwitchStaged`, `StartRound`, `RoundOver`). The answer to an Apply or
SwitchStaged comes back later (`on_applied`); until it does the round stays in
its "apply" stage and issues no other one.

A round: STATS to every peer (re-sent to the silent ones) until all answered or
`collect_seconds` passed; the claims are ranked (chain.selection); each candidate
chain is then *attempted*, best first, until one is applied. A sign of a chain
longer than the one being fetched (an ANNOUNCE, a STATS_REPLY outside a round) is
never dropped: it is remembered and a round follows it as soon as the current
attempt ends (`_trigger`).

An attempt downloads the chain **downward from its claimed top**, so what is
assembled is always one linked run:

* the top block must carry the claimed hash (a peer whose top differs doesn't
  back the claim: set aside for the attempt, not blamed: it may send the top
  block's index where the protocol means the chain's length);
* below it, block h is accepted only if block h+1's contents hash, on top of
  block h's hash, to block h+1's (already proven) hash. A link that holds proves
  both block h's hash and block h+1's contents; a hash that lacks the proof of
  work proves the *chain* bad (it is remembered, and never fetched again for
  `ban_seconds`);
* a link that fails means either the upper block's contents or the lower block's
  hash is a lie. If one peer served both, it lied. Otherwise both are fetched
  again from other peers, and when a link at those heights finally holds, the
  peer whose copy differs from the proven block is blamed. Nothing is ever
  blamed on a peer because of a stranger's datagram: replies count only from the
  IP asked (chain.fetch), and only from the exact address asked (or the one that
  peer answered STATS from) can a bad block be blamed on it;
* only a real answer is evidence. A source address proves nothing (it is forged
  as easily as any other field), so a reply is never taken as a peer's word
  while its own may still be on the way: up to `MAX_COPIES` copies of a height
  are held, a valid, linking copy always wins, and copies that fail are judged
  (blamed, or the peer set aside) only once every request for that height is
  past its deadline with no valid copy. An all-null "no such block" reply names
  no height: it sets nothing aside by itself, it only tells the scheduler that a
  request to that peer which then times out was refused (chain.fetch). Replies
  answering no request in flight are dropped and counted (`ignored_replies`);
* a blamed peer is set aside for the round and asked for STATS again: if it still
  claims the chain it lied about, it is banned for `ban_seconds`; if its chain
  changed (a reorg mid-sync), it is not;
* the download stops at the first block whose proven hash is the one we hold at
  that height (the fork point: everything below is shared), or at a genesis block
  whose contents hash to its proven hash. No fork-search answer is ever taken on
  trust: there is no fork search, only linked blocks.

Memory is bounded whatever is claimed: at most `window` heights are in flight or
buffered below the proven frontier, linked blocks are handed to ChainKeeper's
staging table every `stage_chunk` blocks (each one transaction, so a crash keeps
them), and nothing is sized by the claim. The chain table changes only when the
whole linked run reaches our chain: `Apply` (a short run held in memory) or
`SwitchStaged` (a long one, moved from staging in one transaction), so the chain
on disk is always one whole version. A later attempt at the same chain (after a
crash, or when it grew on top of what was staged) resumes from the staged run.
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

from chain.block import Block, compute_hash, meets_difficulty
from chain.fetch import Requests
from chain.selection import Candidate, rank_candidates
from messages.wire import MAX_HEIGHT, GetBlock, Stats
from net.address import Address

log = logging.getLogger("node.sync")
FAST_RETRANSMIT_DEPTH = 16  # heights next to the frontier watched for overtaken (lost) requests
TOP_FANOUT = 8  # backers of a claim asked for its top block at once
# Copies of one height held at once: a forgery with a peer's address may come before
# its own copy, which must still find room (and the valid, linking one wins).
MAX_COPIES = 4
MAX_EXTRA_CLAIMS = 16  # claims that triggered a round, kept for it


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class Send:
    """Datagrams to send: (message, address) pairs."""

    messages: tuple[tuple[Any, Address], ...]


@dataclass(frozen=True)
class Stage:
    """Store linked blocks (ascending heights) in the staging table, one transaction; `reset` clears it first."""

    reset: bool
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Apply:
    """Replace our chain from height `first` up with `blocks` (held in memory), one transaction."""

    first: int
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class SwitchStaged:
    """Replace our chain from height `first` up with the staged blocks `first`..`top`, one transaction."""

    first: int
    top: int
    top_hash: str


@dataclass(frozen=True)
class StartRound:
    """Gather the round's inputs (peers, our hashes, the staging summary) and call `start_round`."""

    reason: str
    extra_peers: tuple[Address, ...] = ()


@dataclass(frozen=True)
class RoundOver:
    result: str


Action = Union[Send, Stage, Apply, SwitchStaged, StartRound, RoundOver]


@dataclass(frozen=True)
class Staged:
    """What the staging table holds: a linked run from `low_block` up to (`top`, `top_hash`)."""

    low_block: Block
    top: int
    top_hash: str


# Rounds that ask every peer (up to `max_stats_peers`): the periodic one, the one at join, and
# one asked for by CONSENSUS. Any other reason is a trigger (see `triggered_stats_peers`).
FULL_ROUNDS = frozenset({"timer", "join", "CONSENSUS"})


@dataclass(frozen=True)
class SyncSettings:
    difficulty: int
    window: int = 1024  # heights in flight or buffered below the frontier, at most
    stage_chunk: int = 512  # linked blocks handed to the staging table at a time
    collect_seconds: float = 1.0
    stats_resend_seconds: float = 0.25
    stall_seconds: float = 10.0  # an attempt without a single useful block for this long ends
    round_seconds: float = 600.0  # a round ends after this long whatever happens (staged progress is kept)
    ban_seconds: float = 600.0
    max_stats_peers: int = 64
    # A round started by a sign of a longer chain (an ANNOUNCE, a STATS_REPLY, a retry) asks
    # the peers that showed it and this many others, not all `max_stats_peers`: such rounds
    # come with every block, and asking everyone each time made STATS most of a node's
    # traffic at 100 peers. The timer, join and CONSENSUS rounds still ask everyone.
    triggered_stats_peers: int = 16
    trigger_delay: float = 0.3  # debounce: signs of a longer chain within this window start one round
    trigger_gap_per_peer: float = 10.0
    progress_every: float = 3.0
    probe_depth: int = 4  # heights requested below our top before the first one is shown not to match
    max_remembered: int = 1024  # banned peers, bad chains, trigger times: each capped
    # A round whose longer chains were all abandoned unproven (stalled, or every peer
    # backing them dropped out) is retried after this long, doubling up to the cap;
    # staged blocks are kept, so a retry resumes where the last attempt stopped.
    retry_seconds: float = 5.0
    retry_max_seconds: float = 120.0
    # `next_deadline` is rounded up to this grid: deadlines that fall close together
    # share one tick, and a request is judged lost no sooner than the retransmission
    # logic (chain.fetch) was tuned for, with a tick every 5 ms.
    tick_grain: float = 0.005


# ---------------------------------------------------------------- state


# A block received, the peer it is attributed to, and whether it can be blamed on it.
_Cand = tuple[Block, Address, bool]


@dataclass
class _Attempt:
    candidate: Candidate
    length: int
    top_hash: str
    req: Requests
    k: int  # the frontier: the lowest height whose hash is proven ...
    hk: str  # ... that hash
    content: Block | None = None  # block k, if held (its contents are proven only once k-1 links)
    content_src: Address | None = None  # None: from our staging table (trusted)
    content_acc: bool = True
    top_confirmed: bool = False
    next_new: int = -1  # the highest height below the frontier never requested yet
    linked: list[Block] = field(default_factory=list)  # descending, contents proven, not staged yet
    staged: bool = False  # this attempt's run is (partly) in the staging table
    flushed: int = 0
    done: int = 0  # blocks proven so far (with the staged ones resumed)
    alts: list[_Cand] = field(default_factory=list)  # other copies of block k under its proven hash (contents differ)
    buffer: dict[int, list[_Cand]] = field(default_factory=dict)  # height -> copies received (at most MAX_COPIES)
    wait_until: float | None = None  # the frontier waits for a valid copy until then (the ones held fail)
    retry: dict[int, tuple[Address, ...]] = field(default_factory=dict)  # height -> peers asked before
    avoid: dict[int, frozenset[Address]] = field(default_factory=dict)
    suspects: dict[int, list[tuple[Block, Address, bool, str]]] = field(default_factory=dict)
    overlap_linked: int = 0
    mismatched: int = 0
    started: float = 0.0
    progress_at: float = 0.0
    finished: bool = False


@dataclass
class _Round:
    reason: str
    started: float
    peers: list[Address]
    our_hashes: Sequence[str]
    claims: dict[Address, tuple[int, str | None]] = field(default_factory=dict)
    rtt: dict[Address, float] = field(default_factory=dict)
    reply_addr: dict[Address, Address] = field(default_factory=dict)
    stats_sent_at: float = 0.0
    stats_resent: bool = False
    stage: str = "collect"
    candidates: list[Candidate] = field(default_factory=list)
    weak: list[Candidate] = field(default_factory=list)
    by_top: dict[tuple[int, str], list[Address]] = field(default_factory=dict)
    attempt: _Attempt | None = None
    set_aside: set[Address] = field(default_factory=set)
    verdicts: dict[Address, tuple[int, str]] = field(default_factory=dict)
    last_progress_log: float = 0.0
    abandoned: list[str] = field(default_factory=list)  # why attempts ended unproven (worth a retry)
    remembered: dict[Address, tuple[int, str]] = field(default_factory=dict)  # the claims that led to this round


def _capped_put(table: "OrderedDict[Any, Any]", key: Any, value: Any, cap: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > cap:
        table.popitem(last=False)


def _resend_candidates(req: Requests, h: int) -> list[float]:
    """The times at which chain.fetch's loss tests (`overtaken`, `stale`, `overdue`) may turn
    true for the request in flight for `h`, ascending: its send time plus each test's delay."""
    request = req.sent_to(h)
    link = req.links.get(request[0]) if request is not None else None
    if request is None or link is None:
        return []
    sent = request[1]
    delays: list[float] = []
    if link.srtt is not None:
        delays += [link.srtt, link.srtt + 2 * link.rttvar, link.srtt + 2 * link.rttvar + 0.005]
    if link.min_rtt is not None:
        delays += [2 * link.min_rtt, 4 * link.min_rtt + 0.01, max(4 * link.min_rtt, 2 * req.min_rto)]
    return sorted(sent + d + 1e-6 for d in delays)  # just past each: the tests compare with >=


def _fmt(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


class SyncEngine:
    """One node's consensus rounds and downloads; see the module docstring."""

    def __init__(self, settings: SyncSettings) -> None:
        self.s = settings
        self.round: _Round | None = None
        self.our_len = 0
        self.banned: OrderedDict[Address, float] = OrderedDict()  # peer -> until (lied)
        self.bad_chains: OrderedDict[str, float] = OrderedDict()  # claimed top hash -> until (its blocks proved it bad)
        self._last_trigger: OrderedDict[Address, tuple[float, int]] = OrderedDict()  # peer -> (when, length claimed)
        self._rerun_len = 0  # the longest chain claimed since the round began (0: none): followed after it
        self._claims: OrderedDict[Address, tuple[int, str]] = OrderedDict()  # triggers' claims, for the next round
        self._pending: tuple[float, str, tuple[Address, ...]] | None = None
        self._rerun: tuple[str, tuple[Address, ...]] | None = None
        self.staged: Staged | None = None
        self.rounds = 0
        self.last_result: str | None = None
        self.ignored_replies = 0  # GET_BLOCK_REPLYs answering no request in flight (unsolicited): dropped
        self.replies_without_attempt = 0  # ... of which came while no attempt ran (late for one that ended, or none at all)
        self.null_replies = 0  # "no such block" from a peer asked: a hint, never proof
        self.rejected_replies = 0  # copies that proved false (forged, or lies) or found no room
        self._refusals = 0
        self._retry_delay = settings.retry_seconds

    # ============================================================ triggers

    def set_tip(self, height: int, now: float) -> list[Action]:
        """Our chain's length changed (an ANNOUNCE, our miner, an applied sync)."""
        self.our_len = height
        r = self.round
        if r is not None and r.attempt is not None and not r.attempt.finished and height >= r.attempt.length:
            return self._finish(f"our chain reached height {height} meanwhile")
        return []

    def on_consensus(self, now: float) -> list[Action]:
        return self._want_round("CONSENSUS", (), now, delay=0.0)

    def on_announce(self, addr: Address, height: int, now: float, block_hash: str | None = None) -> list[Action]:
        """An ANNOUNCE (of the block at `height`, hashed `block_hash`) that doesn't extend
        our chain: a reason to look, if it is above our tip."""
        if height + 1 <= self.our_len or self._is_banned(addr, now) or (block_hash is not None and self._is_bad(block_hash, now)):
            return []
        return self._trigger(addr, height + 1, block_hash, f"announce of height {height} from {_fmt(addr)}", now)

    def _trigger(self, addr: Address, length: int, top_hash: str | None, reason: str, now: float) -> list[Action]:
        """A sign of a chain `length` blocks long: a round within `trigger_delay`, or right
        after the current attempt ends.

        A longer chain is never dropped: a claim longer than the chain being fetched is
        remembered (one pending round, the longest claim) and followed as soon as the
        current attempt ends, whoever made it and however soon after its last one. The
        claim itself (with its top hash, when known) is kept for that round, which takes
        it as the peer's answer if its STATS_REPLY doesn't come in time (a busy peer).
        What is dropped is only a peer repeating, within `trigger_gap_per_peer`, a claim
        no longer than the last one it triggered a round with.
        """
        r = self.round
        a = r.attempt if r is not None else None
        if a is not None and not a.finished and (length < a.length or (length == a.length and top_hash in (None, a.top_hash))):
            return []  # the chain being fetched is at least as long
        last = self._last_trigger.get(addr)
        if last is not None and now - last[0] < self.s.trigger_gap_per_peer and length <= last[1]:
            return []
        _capped_put(self._last_trigger, addr, (now, length), self.s.max_remembered)
        if top_hash is not None:
            _capped_put(self._claims, addr, (length, top_hash), MAX_EXTRA_CLAIMS)
        if r is not None and addr not in r.set_aside:
            # (A peer whose own attempt failed this round, making ever longer claims, must
            # not keep the others' chains from being tried: its claim waits for the round.)
            self._rerun_len = max(self._rerun_len, length)
        return self._want_round(reason, (addr,), now, delay=self.s.trigger_delay)

    def _want_round(self, reason: str, extra: tuple[Address, ...], now: float, delay: float) -> list[Action]:
        if self.round is not None:
            if self._rerun is None:
                self._rerun = (reason, extra)
            elif len(self._rerun[1]) < 16:
                self._rerun = (self._rerun[0], tuple(dict.fromkeys(self._rerun[1] + extra)))
            return []
        if self._pending is None:
            self._pending = (now + delay, reason, extra)
        else:
            due, first_reason, extras = self._pending
            reason = first_reason if first_reason in FULL_ROUNDS or reason not in FULL_ROUNDS else reason
            self._pending = (min(due, now + delay), reason, tuple(dict.fromkeys(extras + extra))[:16])
        if delay <= 0:
            return self._pending_due(now)
        return []

    @property
    def applying(self) -> bool:
        """An Apply or SwitchStaged is out and its answer (`on_applied`) has not come back:
        the engine issues no other one meanwhile (the round stays open until it does)."""
        return self.round is not None and self.round.stage == "apply"

    def wakeup_due(self) -> float | None:
        """When an idle engine next needs a tick (a debounced round), or None."""
        return self._pending[0] if self._pending is not None and self.round is None else None

    def _pending_due(self, now: float) -> list[Action]:
        if self._pending is None or self._pending[0] > now or self.round is not None:
            return []
        _, reason, extra = self._pending
        self._pending = None
        return [StartRound(reason, extra)]

    # ============================================================ rounds

    def start_round(self, reason: str, peers: Sequence[Address], our_hashes: Sequence[str], staged: Staged | None, now: float,
                    extra: Sequence[Address] = ()) -> list[Action]:
        """Begin a round with these inputs (gathered by the actor for a StartRound): `peers` from the
        membership tables, `extra` the peers that showed a longer chain (asked first)."""
        if self.round is not None:
            return self._want_round(reason, (), now, 0.3)
        if self._pending is not None:
            # This round is the one a debounced trigger was waiting for: ask its peers too
            # (the announcer of a longer chain may be no peer of ours), first.
            extra = [*extra, *self._pending[2]]
            self._pending = None
        extra = tuple(dict.fromkeys(extra))
        self.our_len = len(our_hashes)
        self.staged = staged
        self._expire_memory(now)
        limit = self.s.max_stats_peers if reason in FULL_ROUNDS else len(extra) + self.s.triggered_stats_peers
        chosen = [p for p in dict.fromkeys([*extra, *peers]) if not self._is_banned(p, now)][: min(limit, self.s.max_stats_peers)]
        if not chosen:
            self.last_result = "no peers"
            return [RoundOver("no peers")]
        self.rounds += 1
        self.round = _Round(reason=reason, started=now, peers=chosen, our_hashes=our_hashes)
        self.round.remembered, self._claims = dict(self._claims), OrderedDict()
        log.debug("consensus round (%s): asking %d peers", reason, len(chosen))
        return self._send_stats(now)

    def _send_stats(self, now: float) -> list[Action]:
        r = self.round
        assert r is not None
        r.stats_resent = r.stats_sent_at > 0
        r.stats_sent_at = now
        silent = [a for a in r.peers if a not in r.claims]
        return [Send(tuple((Stats(), a) for a in silent))] if silent else []

    def on_stats(self, source: Address, height: int, top_hash: str | None, now: float) -> list[Action]:
        """A STATS_REPLY (height already bounded by the codec; None-height means 0)."""
        r = self.round
        out: list[Action] = []
        peer = self._round_peer(source) if r is not None else None
        if r is not None and peer is not None:
            verdict = r.verdicts.pop(peer, None)
            if verdict is not None:
                if verdict == (height, top_hash):
                    self._ban(peer, now, "still claims the chain it served a false block of")
                else:
                    log.info("%s changed its chain mid-sync (now %s blocks); not banned", _fmt(peer), height)
            if r.stage == "collect":
                if not r.stats_resent and peer not in r.claims:
                    r.rtt[peer] = max(0.0, now - r.started)
                if source != peer:
                    r.reply_addr[peer] = source
                r.claims[peer] = (height, top_hash)
                if len(r.claims) == len(r.peers):
                    out += self._end_collect(now)
                return out
        # Outside the collect stage: a peer showing a longer chain is a reason to look.
        if height > self.our_len and top_hash is not None and not self._is_bad(top_hash, now) and not self._is_banned(source, now):
            out += self._trigger(source, height, top_hash, f"STATS_REPLY from {_fmt(source)} shows height {height}", now)
        return out

    def _round_peer(self, source: Address) -> Address | None:
        r = self.round
        assert r is not None
        if source in r.claims or source in r.peers:
            return source
        for peer, addr in r.reply_addr.items():
            if addr == source:
                return peer
        same_ip = [p for p in r.peers if p[0] == source[0] and p not in r.claims]
        return same_ip[0] if len(same_ip) == 1 else None

    def _end_collect(self, now: float) -> list[Action]:
        r = self.round
        assert r is not None
        self._expire_memory(now)
        for peer, claim in r.remembered.items():
            r.claims.setdefault(peer, claim)  # it made this claim, and didn't answer STATS in time: as good
        claims = [(a, h, x) for a, (h, x) in r.claims.items() if not self._is_banned(a, now) and not (x and self._is_bad(x, now))]
        r.candidates = rank_candidates(claims, self.our_len, self.s.difficulty)
        for c in r.candidates:
            r.by_top[(c.height, c.hash)] = list(c.peers)
        log.debug("collected %d claims: %s", len(claims), [(c.height, c.hash[:8], c.votes) for c in r.candidates[:8]])
        return self._next_candidate(now)

    def _next_candidate(self, now: float) -> list[Action]:
        r = self.round
        assert r is not None
        ended = r.attempt is not None
        r.attempt = None
        r.stage = "fetch"
        left = max([c.height for c in r.candidates] + [c.height + 1 for c in r.weak], default=0)
        if ended and self._rerun is not None and self._rerun_len > max(left, self.our_len):
            # A longer chain was claimed while the attempt that just ended ran: look again
            # now rather than try the shorter ones left (the new round sees those too).
            # (Claims from peers set aside in this round don't count: see `_trigger`.)
            return self._finish(f"a chain of {self._rerun_len} blocks was claimed meanwhile; looking again")
        while r.candidates or r.weak:
            if r.candidates:
                candidate, length = r.candidates.pop(0), None
            else:
                candidate = r.weak.pop(0)
                length = candidate.height + 1
            if length is None and candidate.height == self.our_len:
                r.weak.append(candidate)  # same length as ours: only worth trying as a top-index claim
                continue
            if length is not None and length <= self.our_len:
                continue
            length = length if length is not None else candidate.height
            if self._we_hold(r.our_hashes, candidate):
                continue  # a chain we hold, whichever way its peers count their height
            peers = [p for p in candidate.peers if p not in r.set_aside and not self._is_banned(p, now)]
            if not peers:
                continue
            return self._begin_attempt(candidate, length, peers, now)
        if r.abandoned:
            delay, self._retry_delay = self._retry_delay, min(self._retry_delay * 2, self.s.retry_max_seconds)
            result = f"no longer chain fetched ({len(r.abandoned)} abandoned: {r.abandoned[-1]}); retrying in {delay:.0f}s"
            out = self._finish(result)
            self._want_round("retry after an abandoned sync", tuple(r.set_aside)[:16], now, delay=delay)
            return out
        self._retry_delay = self.s.retry_seconds
        return self._finish("nothing better" if not r.claims else "our chain is the best valid one")

    @staticmethod
    def _we_hold(our_hashes: Sequence[str], candidate: Candidate) -> bool:
        """True when the claimed top is our block at the claimed height read as a length or as a top index.

        Without the first reading, peers in step with us (claiming our length and top) became a
        top-index "weak" claim one block longer; fetching that block failed at every peer and
        each round ended "abandoned", with retries, while nothing was wrong.
        """
        for index in (candidate.height - 1, candidate.height):
            if 0 <= index < len(our_hashes) and our_hashes[index] == candidate.hash:
                return True
        return False

    def _begin_attempt(self, candidate: Candidate, length: int, peers: list[Address], now: float) -> list[Action]:
        r = self.round
        assert r is not None
        req = Requests(window=self.s.window)
        for p in peers:
            req.add_peer(p, r.rtt.get(p), r.reply_addr.get(p))
        top = length - 1
        a = _Attempt(candidate=candidate, length=length, top_hash=candidate.hash, req=req, k=top, hk=candidate.hash,
                     started=now, progress_at=now)
        r.attempt = a
        st = self.staged
        if st is not None and st.top == top and st.top_hash == candidate.hash:
            a.staged = True
            a.top_confirmed = True
            a.done = st.top - st.low_block.height  # the lowest staged block counts when it links, as any other
            a.k, a.hk = st.low_block.height, st.low_block.hash
            a.content, a.content_src = st.low_block, None
            a.next_new = a.k - 1
            log.info("resuming the sync of height %d from %d staged blocks", length, a.done + 1)
            out = self._arrived(now)
            if a.finished or r.attempt is not a:
                return out
        else:
            a.retry[top] = ()
            out = []
        log.info("syncing to height %d (%d votes) from %d peers", length, candidate.votes, len(peers))
        return out + self._pump(now)

    # ============================================================ blocks

    def on_blocks(self, replies: Sequence[tuple[Address, Block | None]], now: float) -> list[Action]:
        """A batch of GET_BLOCK_REPLYs: each taken in, then one round of requests for all of them."""
        out: list[Action] = []
        for source, block in replies:
            out += self.on_block(source, block, now, pump=False)
        return out + self._pump(now)

    def on_block(self, source: Address, block: Block | None, now: float, pump: bool = True) -> list[Action]:
        """A GET_BLOCK_REPLY. Only an answer to a request in flight to that address (or to one
        answered moments ago: chain.fetch `awaiting`) counts; anything else is dropped and
        counted. A copy is held as a candidate: it proves nothing until it links (`_settle`)."""
        r = self.round
        a = r.attempt if r is not None else None
        if a is None or a.finished:
            self.ignored_replies += 1
            self.replies_without_attempt += 1
            return []
        if block is None:
            # "No such block" names no height and anyone can forge it: a hint, not proof.
            if a.req.note_null(source, now) is None:
                self.ignored_replies += 1
            else:
                self.null_replies += 1
            return []
        h = block.height
        rep = a.req.match(h, source, now)
        if rep is None and h in a.retry:
            rep = a.req.match_late(a.retry[h], source, now)  # timed out, not re-sent yet: still welcome
        if rep is None:
            self.ignored_replies += 1
            return []
        if not self._hold(a, block, rep.peer, rep.accountable, now):
            return self._pump(now) if pump else []
        out = self._settle(now)
        if not pump or self.round is None or self.round.attempt is not a or a.finished:
            return out
        return out + self._pump(now)

    def _hold(self, a: _Attempt, block: Block, peer: Address, accountable: bool, now: float) -> bool:
        """Keep a received copy of a block the frontier will need (False: nothing to do with it)."""
        h = block.height
        if h > a.k or h < a.k - self.s.window:
            return False  # a late duplicate of something proven, or far below the window
        if h == a.k and a.content is not None:
            # Another copy of the block whose hash is proven: worth keeping only if its
            # contents differ (one of the two is false; the link below tells which).
            if a.content_src is None or block.hash != a.hk or block == a.content or len(a.alts) + 1 >= MAX_COPIES \
                    or any(block == alt for alt, _, _ in a.alts):
                return False
            a.alts.append((block, peer, accountable))
            return True
        copies = a.buffer.setdefault(h, [])
        if any(block == held and peer == src for held, src, _ in copies):
            return False
        if len(copies) >= MAX_COPIES:
            self.rejected_replies += 1
            return False
        if not copies:
            a.progress_at = now
        copies.append((block, peer, accountable))
        return True

    def _waiting(self, a: _Attempt, heights: tuple[int, ...], now: float) -> bool:
        """A valid copy of one of `heights` may still come from a peer asked (chain.fetch
        `awaiting`): the copies held, which fail, prove nothing yet."""
        due = [d for h in heights if (d := a.req.awaiting(h, now)) is not None]
        if not due:
            return False
        a.wait_until = min(due)
        return True

    def _settle(self, now: float) -> list[Action]:
        """Move the frontier down as far as the copies held allow.

        A copy counts when it proves itself (its hash is the proven one; its contents
        link to a copy below). Copies that fail are forgeries or lies: they are judged
        only once no valid copy can come any more (no request for that height is still
        answerable), and never when a valid copy came, so a datagram forged with a
        peer's address costs that peer nothing while its own answer is on its way.
        """
        r = self.round
        assert r is not None and r.attempt is not None
        a = r.attempt
        a.wait_until = None
        out: list[Action] = []
        while not a.finished and self.round is r and r.attempt is a:
            if a.k == 0 and a.content is not None:
                out += self._genesis(now)
                break
            if a.content is None:
                copies = a.buffer.get(a.k)
                if not copies:
                    break
                good = [c for c in copies if c[0].hash == a.hk]
                if not good:
                    if self._waiting(a, (a.k,), now):
                        break
                    del a.buffer[a.k]
                    out += self._judge_top_or_hash(a, copies, now)
                    self._queue(a, a.k, tuple(dict.fromkeys(src for _, src, _ in copies)))
                    continue
                del a.buffer[a.k]
                self.rejected_replies += len(copies) - len(good)
                if not a.top_confirmed:
                    a.top_confirmed = True
                    a.next_new = a.k - 1
                    a.done = max(a.done, 0)
                    a.progress_at = now
                (a.content, a.content_src, a.content_acc), a.alts = good[0], good[1:]
                out += self._resolve(a, a.k, good[0][0], "hash", now, {src for _, src, _ in good})
                continue
            copies = a.buffer.get(a.k - 1)
            if not copies:
                break
            uppers = [(a.content, a.content_src, a.content_acc), *a.alts]
            pair = next(((u, l) for u in uppers for l in copies
                         if compute_hash(l[0].hash, u[0].mined_by, u[0].messages, u[0].timestamp, u[0].nonce) == u[0].hash), None)
            if pair is not None:
                (upper, _, _), (lower, _, _) = pair
                del a.buffer[a.k - 1]
                good = [c for c in copies if c[0].hash == lower.hash]
                good.sort(key=lambda c: c[0] != lower)  # the linking copy first
                self.rejected_replies += len(copies) - len(good) + len(uppers) - sum(1 for u in uppers if u[0] == upper)
                out += self._resolve(a, a.k, upper, "content", now, {src for b, src, _ in uppers if b == upper})
                out += self._resolve(a, a.k - 1, lower, "hash", now, {src for _, src, _ in good})
                a.linked.append(upper)
                a.done += 1
                a.progress_at = now
                a.req.forget(a.k)
                a.k, a.hk = a.k - 1, lower.hash
                (a.content, a.content_src, a.content_acc), a.alts = good[0], good[1:]
                if a.k < self.our_len:
                    a.overlap_linked += 1
                for h in [h for h in a.suspects if h > a.k]:
                    del a.suspects[h]
                a.avoid.pop(a.k + 1, None)
                out += self._arrived(now)
                continue
            # No copy links: the upper block's contents or the lower block's hash is a lie.
            if self._waiting(a, (a.k, a.k - 1), now):
                break
            del a.buffer[a.k - 1]
            out += self._judge_link(a, uppers, copies, now)
        if not a.finished and self.round is r and r.attempt is a and len(a.linked) >= self.s.stage_chunk:
            out += self._flush(a)
        return out

    def _judge_top_or_hash(self, a: _Attempt, copies: list[_Cand], now: float) -> list[Action]:
        """Every copy of block k (hash proven) came with another hash, and no other can come."""
        out: list[Action] = []
        for src in dict.fromkeys(src for _, src, _ in copies):
            acc = any(c_acc for _, c_src, c_acc in copies if c_src == src)
            if a.k == a.length - 1 and not a.top_confirmed:
                # Its top is not the claimed one: it doesn't back the claim (it may send the
                # top block's index where the protocol means the length). Not a lie.
                a.mismatched += 1
                log.debug("%s's top block is not the one it claimed; set aside for this attempt", _fmt(src))
                out += self._drop_from_attempt(src, now)
            else:
                out += self._blame(src, acc, f"block {a.k} is not the one the chain has there", now)
        return out

    def _judge_link(self, a: _Attempt, uppers: list[_Cand], lowers: list[_Cand], now: float) -> list[Action]:
        """No copy of block k-1 links to a copy of block k, and no other copy can come."""
        out: list[Action] = []
        lower_srcs = tuple(dict.fromkeys(src for _, src, _ in lowers))
        upper_srcs = tuple(dict.fromkeys(src for _, src, _ in uppers if src is not None))
        if a.content_src is None:
            # Block k is ours (staged): every copy of k-1 is false.
            for src in lower_srcs:
                acc = any(c_acc for _, c_src, c_acc in lowers if c_src == src)
                out += self._blame(src, acc, f"block {a.k - 1} does not link to the chain above it", now)
            self._queue(a, a.k - 1, lower_srcs)
            return out
        if len(upper_srcs) == 1 and lower_srcs == upper_srcs and all(acc for _, _, acc in (*uppers, *lowers)):
            out += self._blame(lower_srcs[0], True, f"blocks {a.k - 1} and {a.k} it served do not link", now)
            a.content, a.alts = None, []
            self._queue(a, a.k, lower_srcs)
            self._queue(a, a.k - 1, lower_srcs)
            return out
        for block, src, acc in uppers:
            self._suspect(a, a.k, (block, src, acc, "content"))
        for block, src, acc in lowers:
            self._suspect(a, a.k - 1, (block, src, acc, "hash"))
        a.avoid[a.k] = a.avoid.get(a.k, frozenset()) | set(upper_srcs)
        a.avoid[a.k - 1] = a.avoid.get(a.k - 1, frozenset()) | set(lower_srcs)
        a.content, a.alts = None, []
        self._queue(a, a.k, upper_srcs)
        self._queue(a, a.k - 1, lower_srcs)
        return out

    def _arrived(self, now: float) -> list[Action]:
        """Block k's hash is now proven: check its work, whether we hold it, whether it is staged."""
        r = self.round
        assert r is not None and r.attempt is not None
        a = r.attempt
        if not meets_difficulty(a.hk, self.s.difficulty):
            _capped_put(self.bad_chains, a.top_hash, now + self.s.ban_seconds, self.s.max_remembered)
            return self._fail_attempt(f"its block {a.k} lacks the proof of work (chain marked bad)", now)
        for p in r.by_top.get((a.k + 1, a.hk), ()):
            if p not in r.set_aside and not self._is_banned(p, now) and p not in a.req.links:
                a.req.add_peer(p, r.rtt.get(p), r.reply_addr.get(p))  # its chain is a prefix of this one
        if a.k < self.our_len and a.k < len(r.our_hashes) and r.our_hashes[a.k] == a.hk:
            return self._complete(a.k + 1, now)
        st = self.staged
        if st is not None and not a.staged and a.flushed == 0 and st.top == a.k and st.top_hash == a.hk:
            log.info("the chain reaches blocks staged earlier: resuming below height %d", st.low_block.height)
            a.staged = True
            a.done += st.top - st.low_block.height
            a.k, a.hk = st.low_block.height, st.low_block.hash
            a.content, a.content_src, a.content_acc = st.low_block, None, True
            a.alts = []
            for h in [h for h in a.buffer if h >= a.k]:
                del a.buffer[h]
            for h in [h for h in a.retry if h >= a.k]:
                del a.retry[h]
            a.suspects.clear()
            a.next_new = min(a.next_new, a.k - 1)
            if a.k == 0:
                return self._genesis(now)
            return self._arrived(now)
        if a.k == 0:
            return self._genesis(now)
        return []

    def _genesis(self, now: float) -> list[Action]:
        """Block 0 (hash proven) is held: its contents must hash to it with no previous block."""
        r = self.round
        assert r is not None and r.attempt is not None
        a = r.attempt
        assert a.content is not None
        copies = [(a.content, a.content_src, a.content_acc), *a.alts]
        for g, _, _ in copies:
            if compute_hash(None, g.mined_by, g.messages, g.timestamp, g.nonce) == g.hash:
                a.linked.append(g)
                a.done += 1
                return self._complete(0, now)
        if a.content_src is None:
            return self._fail_attempt("staged genesis does not hash", now)
        if self._waiting(a, (0,), now):
            return []
        a.content, a.alts = None, []
        out: list[Action] = []
        srcs = tuple(dict.fromkeys(src for _, src, _ in copies))
        for src in srcs:
            acc = any(c_acc for _, c_src, c_acc in copies if c_src == src)
            out += self._blame(src, acc, "its genesis block's contents do not match its hash", now)
        self._queue(a, 0, srcs)
        return out

    def _resolve(self, a: _Attempt, height: int, proven: Block, what: str, now: float,
                 vouched: set[Address | None] = set()) -> list[Action]:  # noqa: B006 - never mutated
        """A link at `height` held: blame the suspects whose copy differs from the proven block
        (not those who sent the proven one too: the false copy may have been forged)."""
        out: list[Action] = []
        rest = []
        for block, src, acc, kind in a.suspects.get(height, []):
            if kind != what:
                rest.append((block, src, acc, kind))
                continue
            differs = block.hash != proven.hash if kind == "hash" else block != proven
            if differs and src not in vouched:
                out += self._blame(src, acc, f"its block {height} is not the chain's", now)
        if rest:
            a.suspects[height] = rest
        else:
            a.suspects.pop(height, None)
        return out

    def _suspect(self, a: _Attempt, height: int, entry: tuple[Block, Address, bool, str]) -> None:
        entries = a.suspects.setdefault(height, [])
        if len(entries) < 8:
            entries.append(entry)

    def _queue(self, a: _Attempt, height: int, asked: tuple[Address, ...]) -> None:
        if height < 0 or height > a.length - 1:
            return
        a.req.cancel(height)
        a.retry[height] = asked

    # ============================================================ peers

    def _blame(self, peer: Address | None, accountable: bool, why: str, now: float) -> list[Action]:
        """A block `peer` served is proven false: set it aside and re-ask its STATS (the verdict)."""
        r = self.round
        if r is None or peer is None:
            return []
        if not accountable:
            self.ignored_replies += 1
            log.debug("a false block from another port of %s's host: not blamed on it", _fmt(peer))
            return []
        if peer in r.set_aside:
            return []
        log.warning("%s served a false block (%s); set aside, re-asking its STATS", _fmt(peer), why)
        a = r.attempt
        if a is not None:
            r.verdicts[peer] = (a.length, a.top_hash)
        r.set_aside.add(peer)
        out: list[Action] = [Send(((Stats(), peer),))]
        out += self._drop_from_attempt(peer, now)
        return out

    def _set_aside(self, peer: Address, now: float) -> list[Action]:
        r = self.round
        assert r is not None
        r.set_aside.add(peer)
        return self._drop_from_attempt(peer, now)

    def _drop_from_attempt(self, peer: Address, now: float) -> list[Action]:
        r = self.round
        if r is None or r.attempt is None:
            return []
        a = r.attempt
        for h in a.req.remove_peer(peer):
            a.retry.setdefault(h, (peer,))
        for h, copies in list(a.buffer.items()):
            kept = [c for c in copies if c[1] != peer]
            if len(kept) < len(copies):
                if kept:
                    a.buffer[h] = kept
                else:
                    del a.buffer[h]
                    a.retry[h] = (peer,)
        a.alts = [c for c in a.alts if c[1] != peer]
        if a.content is not None and a.content_src == peer:
            # Its hash is proven, its contents came from the peer set aside.
            if a.alts:
                (a.content, a.content_src, a.content_acc), a.alts = a.alts[0], a.alts[1:]
            else:
                a.content = None
                a.retry[a.k] = (peer,)
        return []

    def _ban(self, peer: Address, now: float, why: str) -> None:
        log.warning("%s banned for %.0fs: %s", _fmt(peer), self.s.ban_seconds, why)
        _capped_put(self.banned, peer, now + self.s.ban_seconds, self.s.max_remembered)

    def _is_banned(self, peer: Address, now: float) -> bool:
        until = self.banned.get(peer)
        return until is not None and until > now

    def _is_bad(self, top_hash: str, now: float) -> bool:
        until = self.bad_chains.get(top_hash)
        return until is not None and until > now

    def _expire_memory(self, now: float) -> None:
        for table in (self.banned, self.bad_chains):
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]

    # ============================================================ sending

    def _pump(self, now: float) -> list[Action]:
        """Send what is due: re-sends first (nearest the frontier first), then new heights downward."""
        r = self.round
        if r is None or r.attempt is None or r.attempt.finished:
            return []
        a = r.attempt
        if not a.req.links:
            return self._fail_attempt("every peer backing it dropped out", now, retry=True)
        sends: list[tuple[Any, Address]] = []
        needed, low, blocked = self._frontier(a)
        # Fast retransmit: the next blocks the frontier needs, if answers to later requests overtook them.
        for h in range(needed, max(low, a.k - FAST_RETRANSMIT_DEPTH) - 1, -1):
            if self._lost(a, h, now, needed, blocked):
                asked = a.req.asked(h)
                a.req.cancel(h)
                a.retry[h] = asked
        for h in sorted(a.retry, reverse=True):
            if not a.req.has_room():
                break
            if h > a.k or (h == a.k and a.content is not None) or h in a.buffer:
                del a.retry[h]
                continue
            if h < low:
                continue  # not yet: the window hasn't reached it
            peer = a.req.retry(h, a.retry[h], now, a.avoid.get(h, frozenset())) if a.retry[h] else a.req.assign(h, now, a.avoid.get(h, frozenset()))
            if peer is None:
                break
            del a.retry[h]
            sends.append((GetBlock(h), peer))
            if h == a.length - 1 and not a.top_confirmed:
                # The claimed top: ask several of its backers at once, so peers that
                # serve nothing are found out together, not one timeout after another.
                sends += [(GetBlock(h), p) for p in a.req.widen(h, TOP_FANOUT - 1, now)]
            elif h == needed and (second := a.req.hedge(h)) is not None:
                sends.append((GetBlock(h), second))  # the block everything waits on, lost once: ask two peers
        if a.req.is_inflight(needed) and len(a.req.asked(needed)) < 2 and a.req.overdue(needed, now):
            # Everything waits on this block and it is late (nothing was sent after it
            # to overtake it, e.g. the window is full): ask a second peer too.
            if (second := a.req.hedge(needed)) is not None:
                sends.append((GetBlock(needed), second))
        if a.top_confirmed and a.wait_until is None:
            # (Not while the frontier waits on copies that fail: a liar's chain costs
            # what is in flight, not a window's worth more.)
            while a.next_new >= low and a.req.has_room():
                h = a.next_new
                a.next_new -= 1
                if h in a.buffer or a.req.is_inflight(h) or h in a.retry:
                    continue
                peer = a.req.assign(h, now, a.avoid.get(h, frozenset()))
                if peer is None:
                    a.next_new += 1
                    break
                sends.append((GetBlock(h), peer))
        return [Send(tuple(sends))] if sends else []

    def _frontier(self, a: _Attempt) -> tuple[int, int, bool]:
        """(the height the frontier waits on, the window's lowest height, whether the window
        is used up and waits on the frontier: then nothing new can overtake what it needs)."""
        low = self._lowest_wanted(a)
        needed = a.k if a.content is None else a.k - 1
        blocked = a.next_new < low or len(a.buffer) + a.req.inflight_count >= self.s.window - 8
        return needed, low, blocked

    @staticmethod
    def _lost(a: _Attempt, h: int, now: float, needed: int, blocked: bool) -> bool:
        """The request for `h` (near the frontier) is very likely lost: re-send it now."""
        return a.req.overtaken(h, now, eager=h == needed) or a.req.stale(h, now, blocking=blocked and h == needed)

    def _lowest_wanted(self, a: _Attempt) -> int:
        """The window: heights at most `window` below the frontier, and only a few below our top
        until the blocks there are shown not to be ours (a short extension costs only itself)."""
        probe = self.s.probe_depth + 2 * a.overlap_linked
        return max(0, a.k - self.s.window, min(a.k - 1, self.our_len) - probe)

    # ============================================================ time

    def tick(self, now: float) -> list[Action]:
        """Whatever has fallen due by `now`. Each test here compares `now` with the very
        expression `_next_due` takes its minimum of, so a tick at `next_deadline` (that
        minimum rounded up) always acts on it and leaves nothing due."""
        out = self._pending_due(now)
        r = self.round
        if r is None or r.stage == "apply":
            # Applying: ChainKeeper's answer ends the round (the actor gives up on a lost
            # one itself); ending it here could let a new round apply meanwhile.
            return out
        if now >= r.started + self.s.round_seconds:
            return out + self._finish(f"round deadline ({self.s.round_seconds:.0f}s) passed")
        if r.stage == "collect":
            if now >= r.started + self.s.collect_seconds:
                return out + self._end_collect(now)
            if now >= r.stats_sent_at + self.s.stats_resend_seconds:
                out += self._send_stats(now)
            return out
        a = r.attempt
        if a is None or a.finished:
            return out
        expired, silent = a.req.expire(now)
        for h, asked in expired:
            if h not in a.retry:
                a.retry[h] = asked
        for p in silent:
            log.info("%s answers no GET_BLOCK; set aside for this round", _fmt(p))
            out += self._set_aside(p, now)
        if a.wait_until is not None and now >= a.wait_until and not a.finished and r.attempt is a:
            out += self._settle(now)  # no valid copy came in time: judge the ones held
            if a.finished or self.round is not r or r.attempt is not a:
                return out
        if now >= a.progress_at + self.s.stall_seconds:
            return out + self._fail_attempt(f"no progress in {self.s.stall_seconds:.0f}s", now, retry=True)
        if a.top_confirmed and now >= self._progress_log_due(r, a):
            r.last_progress_log = now
            log.info("sync %s", self.progress_line(now))
        return out + self._pump(now)

    def next_deadline(self, now: float) -> float | None:
        """When the engine next needs a `tick`, or None while only an input can move it.

        The actor arms one timer for this instead of polling: idle, it is a debounced
        round; collecting, the STATS re-send and the end of the collection; fetching,
        the earliest request timeout, the stall and round deadlines, a progress line,
        and the re-sends and hedges of requests near the frontier; applying, nothing.
        A time at or before `now` means "tick now" (a request expired between ticks);
        after a tick at `now` it is always later than `now`.

        Rounded up to the `tick_grain` grid, strictly past the exact time: a tick
        exactly at `sent + rto` could find `now - sent` a hair below `rto` (floats)
        and not count the timeout.
        """
        due = self._next_due(now)
        if due is None or self.s.tick_grain <= 0:
            return due
        grain = self.s.tick_grain
        rounded = math.ceil((due + 1e-6) / grain) * grain
        return rounded if rounded > due else rounded + grain

    def _next_due(self, now: float) -> float | None:
        """The exact earliest time something falls due (see `next_deadline`)."""
        r = self.round
        if r is None:
            return self.wakeup_due()
        if r.stage == "apply":
            return None
        due = r.started + self.s.round_seconds
        if r.stage == "collect":
            return min(due, r.started + self.s.collect_seconds, r.stats_sent_at + self.s.stats_resend_seconds)
        a = r.attempt
        if a is None or a.finished:
            return due
        due = min(due, a.progress_at + self.s.stall_seconds)
        due = min(due, a.req.expiry_bound())
        if a.wait_until is not None:
            due = min(due, a.wait_until)
        if a.top_confirmed:
            due = min(due, self._progress_log_due(r, a))
        resend = self._resend_due(a, now)
        return due if resend is None else min(due, resend)

    def _progress_log_due(self, r: _Round, a: _Attempt) -> float:
        return max(r.last_progress_log, a.started) + self.s.progress_every

    def _resend_due(self, a: _Attempt, now: float) -> float | None:
        """The first time after `now` at which `_pump` re-sends or hedges a request near the
        frontier if nothing arrives meanwhile (an arrival pumps, and the timer is re-armed).

        The candidate times are each in-flight request's send time plus the delays
        chain.fetch's tests use; the tests themselves decide which ones count.
        """
        needed, low, blocked = self._frontier(a)
        best: float | None = None
        for h in range(needed, max(low, a.k - FAST_RETRANSMIT_DEPTH) - 1, -1):
            for t in _resend_candidates(a.req, h):
                if t > now and (best is None or t < best):
                    hedge = h == needed and len(a.req.asked(h)) < 2 and a.req.overdue(h, t)
                    if hedge or self._lost(a, h, t, needed, blocked):
                        best = t
                        break
        return best

    # ============================================================ endings

    def _flush(self, a: _Attempt) -> list[Action]:
        blocks = tuple(reversed(a.linked))
        reset = not a.staged
        a.linked = []
        a.staged = True
        a.flushed += len(blocks)
        if reset or self.staged is None:
            self.staged = Staged(blocks[0], blocks[-1].height, blocks[-1].hash)
        else:
            st = self.staged
            low = blocks[0] if blocks[0].height < st.low_block.height else st.low_block
            top, top_hash = (blocks[-1].height, blocks[-1].hash) if blocks[-1].height > st.top else (st.top, st.top_hash)
            self.staged = Staged(low, top, top_hash)
        return [Stage(reset, blocks)]

    def _complete(self, first: int, now: float) -> list[Action]:
        r = self.round
        assert r is not None and r.attempt is not None
        a = r.attempt
        a.finished = True
        r.stage = "apply"
        if not a.staged:
            return [Apply(first, tuple(reversed(a.linked)))]
        out = self._flush(a) if a.linked else []
        return out + [SwitchStaged(first, a.length - 1, a.top_hash)]

    def on_applied(self, ok: bool, now: float, refusal: str = "ChainKeeper refused the synced chain") -> list[Action]:
        """The answer to the Apply / SwitchStaged out (it comes later, as a message), or
        "not applied" with `refusal` when the actor gave up waiting for it."""
        r = self.round
        if r is None or r.stage != "apply" or r.attempt is None:
            return []  # nothing is out: a duplicate or a stray answer changes nothing
        a = r.attempt
        if ok:
            self._refusals = 0
            self._retry_delay = self.s.retry_seconds
            if a.staged:
                self.staged = None
            self.our_len = max(self.our_len, a.length)
            return self._finish(f"synced to height {a.length} ({a.done} blocks in {now - a.started:.3f}s)")
        self._refusals += 1
        if self._refusals <= 2 and self._rerun is None:
            self._rerun = ("our chain changed during the sync", tuple(a.req.links))
        return self._finish(refusal)

    def _fail_attempt(self, why: str, now: float, retry: bool = False) -> list[Action]:
        """End the current attempt; `retry` when nothing was proven against the chain (it may sync later)."""
        r = self.round
        if r is None:
            return []
        a = r.attempt
        if a is not None:
            a.finished = True
            log.warning("chain (%d, %s) abandoned: %s", a.length, a.top_hash[:12], why)
            if retry:
                r.abandoned.append(why)
            if not a.top_confirmed and a.mismatched and a.length == a.candidate.height:
                r.weak.append(a.candidate)  # maybe its peers report the top index: try that later
            if a.linked and a.staged:
                return self._flush(a) + self._next_candidate(now)
        return self._next_candidate(now)

    def _finish(self, result: str) -> list[Action]:
        self.last_result = result
        log.info("consensus round done: %s", result)
        self.round = None
        self._rerun_len = 0
        out: list[Action] = [RoundOver(result)]
        if self._rerun is not None:
            reason, extra = self._rerun
            self._rerun = None
            out.append(StartRound(reason, extra))
        return out

    # ============================================================ reporting

    def status(self, now: float) -> dict[str, Any]:
        r = self.round
        a = r.attempt if r is not None else None
        done, total = (a.done, self._total(a)) if a is not None else (0, 0)
        elapsed = now - a.started if a is not None else 0.0
        rate = done / elapsed if a is not None and elapsed > 0 else 0.0
        return {
            "running": r is not None,
            "stage": r.stage if r else None,
            "reason": r.reason if r else None,
            "target_height": min(a.length, MAX_HEIGHT) if a else None,
            "fetched": done,
            "total": total,
            "percent": (done * 1000 // total) / 10 if total else 0.0,
            "blocks_per_second": round(rate, 1),
            "eta_seconds": round((total - done) / rate, 1) if rate > 0 and total - done < 10**12 else None,
            "peers": len(a.req.links) if a else 0,
            "rounds": self.rounds,
            "last_result": self.last_result,
            "banned_peers": len(self.banned),
            "ignored_replies": self.ignored_replies,
            "replies_without_attempt": self.replies_without_attempt,
            "null_replies": self.null_replies,
            "rejected_replies": self.rejected_replies,
        }

    def _total(self, a: _Attempt) -> int:
        """Blocks this sync will take at least: down to our top, or further on a fork."""
        return max(a.length - self.our_len, a.done + (a.k - self.our_len if a.k > self.our_len else 1), 1)

    def progress_line(self, now: float) -> str:
        s = self.status(now)
        eta = f"{s['eta_seconds']:.0f}s" if s["eta_seconds"] is not None else "?"
        return (f"{s['fetched']:,}/{s['total']:,} blocks ({s['percent']:.1f}%), {s['blocks_per_second']:,.0f} blocks/s, "
                f"ETA {eta}, {s['peers']} peers")
