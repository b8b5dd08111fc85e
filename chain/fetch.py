"""Who to ask for which block, and when: the GET_BLOCK scheduler of a sync, pure.

`Requests` knows nothing about chains: the sync engine (chain/sync.py) tells it
which heights it wants, it says which (height, peer) requests to send now, matches
replies to the requests they answer, and expires the ones that went unanswered.
Time is passed in, so it is tested without sockets or sleeps.

What it guarantees, whatever the peers do:
* bounded: at most `window` heights in flight (the engine also bounds what it
  buffers); nothing is sized by a peer's claim;
* a reply counts only if it comes from the IP a request for that height was sent
  to (any port of it: some real peers answer from another socket); it is
  attributed to that peer, and is *accountable* (may be blamed on it) only when it
  came from the exact address asked or the one the peer answered STATS from;
* paced per peer, by delay rather than by loss (a lossy link is not a slow one):
  each peer has a window of requests in flight that grows by one per answer while
  its round trips stay near the fastest seen, and shrinks when they stretch (its
  queue is filling: a slow peer ends up with requests at the rate it answers), and
  an RFC 6298 retransmission timeout (SRTT + 4*RTTVAR, Karn's rule, doubled at
  most once per timeout period while it stays silent), so no storm of duplicates;
* a height is in flight to one peer at a time; a timed-out request goes to another
  peer when there is one;
* a peer that never answers is set aside after `silent_timeouts` timeouts in a
  row, one that stopped answering after `max_timeouts`;
* only a real answer is evidence: anyone can send a datagram with a peer's source
  address, so an all-null "no such block" reply (`note_null`) proves nothing by
  itself. It counts only while something is in flight to that peer (else it is
  unsolicited), and only as a hint: a peer is set aside for lacking blocks when
  requests to it *time out* with no answer after it said null, `lack_timeouts`
  times in a row. A request answered (maybe by a forgery) stays answerable past
  its deadline, at least `answer_grace` (`awaiting`): a later copy from the peer
  asked still counts.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from net.address import Address

# A round trip this much above twice the fastest seen means the peer's queue is
# filling (not jitter: links jitter by tens of milliseconds).
QUEUE_SLACK = 0.05


@dataclass
class PeerLink:
    """What we know about one peer's responsiveness during a sync attempt."""

    addr: Address
    reply_addr: Address | None = None  # where it answered STATS from, if not `addr`
    srtt: float | None = None
    rttvar: float = 0.0
    backoff: float = 1.0
    cwnd: float = 4.0
    min_rtt: float | None = None
    inflight: int = 0
    answered: int = 0
    timeouts_in_row: int = 0
    last_event: float = float("-inf")  # last time a timeout counted against it
    answered_at_event: int = 0
    recent_answered_sends: deque = field(default_factory=lambda: deque(maxlen=8))  # send times of its latest answers
    first_sent: float | None = None
    pending: int = 0  # requests in flight that name this peer among those asked
    heard_at: float = float("-inf")  # its last reply to a request (whatever the block was)
    null_at: float = float("-inf")  # its last all-null reply while something was in flight to it
    lack_strikes: int = 0  # timeouts after a null, with nothing heard from it since the request
    last_lack: float = float("-inf")

    def rto(self, min_rto: float, max_rto: float, initial: float) -> float:
        base = initial if self.srtt is None else self.srtt + 4 * self.rttvar
        return min(max_rto, max(min_rto, base) * self.backoff)

    def sample(self, rtt: float) -> None:
        self.min_rtt = rtt if self.min_rtt is None else min(self.min_rtt, rtt)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt


@dataclass
class _Request:
    peer: Address
    sent: float
    deadline: float
    retransmitted: bool
    asked: tuple[Address, ...] = ()  # every peer asked for this height (late replies count)


@dataclass(frozen=True)
class Reply:
    """A reply matched to a request: the peer it is attributed to, and whether it can be blamed on it.

    `first` is False for a further reply to a request already answered (a forged
    datagram may have come first: the peer's own copy is still welcome).
    """

    peer: Address
    accountable: bool
    first: bool = True


@dataclass
class Requests:
    """In-flight GET_BLOCK requests of one sync attempt, spread over its peers."""

    window: int = 1024
    max_cwnd: float = 128.0
    initial_cwnd: float = 4.0
    min_rto: float = 0.05
    max_rto: float = 4.0
    initial_rto: float = 0.5
    silent_timeouts: int = 4
    silent_seconds: float = 0.5  # ... and never answered for this long (a far peer's first answers take a while)
    max_timeouts: int = 10
    lack_timeouts: int = 2  # timeouts after a null, one per timeout period, before a peer is set aside for lacking blocks
    # An answered request stays answerable at least this long after it was sent: a forged
    # first reply also makes a round trip look short (and the deadline with it), while
    # the peer's own copy takes its usual time. Copies that fail are judged only after.
    answer_grace: float = 1.0
    links: dict[Address, PeerLink] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._inflight: dict[int, _Request] = {}
        # Requests answered, kept until their deadline passes (or the engine forgets the
        # height): further replies from the peers asked still count. Bounded by `window`.
        self._answered: OrderedDict[int, _Request] = OrderedDict()
        self._first_sent: dict[int, float] = {}  # height -> when it was first asked (spurious-timeout detection)
        self._earliest = float("inf")  # no request is due before this (a lower bound: scans are skipped until then)
        self._rr = 0
        self.sent = 0
        self.timeouts = 0

    # ---------------------------------------------------------- peers

    def add_peer(self, addr: Address, rtt_hint: float | None = None, reply_addr: Address | None = None) -> None:
        if addr in self.links:
            return
        link = PeerLink(addr, reply_addr=reply_addr if reply_addr != addr else None, cwnd=self.initial_cwnd)
        if rtt_hint is not None:
            # The STATS round trip: a better first RTO than a guess. Not a floor for the
            # queueing test, though: a peer may answer STATS faster than GET_BLOCK.
            link.srtt, link.rttvar = rtt_hint, rtt_hint / 2
        self.links[addr] = link

    def remove_peer(self, addr: Address) -> list[int]:
        """Forget `addr`; returns the heights that were in flight to it (to ask someone else)."""
        if self.links.pop(addr, None) is None:
            return []
        orphaned = [h for h, r in self._inflight.items() if r.peer == addr]
        for h in orphaned:
            self._close(h)
        return orphaned

    def peers(self) -> list[Address]:
        return list(self.links)

    # ---------------------------------------------------------- requests

    def _open(self, height: int, request: _Request) -> None:
        self._inflight[height] = request
        self._earliest = min(self._earliest, request.deadline)
        for a in request.asked:
            link = self.links.get(a)
            if link is not None:
                link.pending += 1

    def _close(self, height: int) -> _Request | None:
        request = self._inflight.pop(height, None)
        if request is not None:
            for a in request.asked:
                link = self.links.get(a)
                if link is not None:  # (one set aside and added back counts only its new requests)
                    link.pending = max(0, link.pending - 1)
        return request

    def _also_ask(self, request: _Request, extra: list[Address]) -> None:
        request.asked = (*request.asked, *extra)
        for a in extra:
            self.links[a].pending += 1

    @property
    def inflight_count(self) -> int:
        return len(self._inflight)

    def expiry_bound(self) -> float:
        """No request in flight times out before this (inf if none is in flight).

        A lower bound kept so `expire` can skip its scan: a request answered since
        only makes it early, and a call to `expire` at it tightens it.
        """
        return self._earliest if self._inflight else float("inf")

    def sent_to(self, height: int) -> tuple[Address, float] | None:
        """(the peer, the time) the request in flight for `height` was last sent to (None if none is)."""
        request = self._inflight.get(height)
        return (request.peer, request.sent) if request is not None else None

    def awaiting(self, height: int, now: float) -> float | None:
        """Until when an answer to a request for `height` may still come from a peer asked:
        the deadline of the request in flight, or of the one answered (a forged reply may
        have come first); None when there is none or it passed."""
        request = self._inflight.get(height)
        if request is not None:
            return request.deadline if request.deadline > now else None
        request = self._answered.get(height)
        if request is None or (until := self._answerable_until(request)) <= now:
            return None
        return until

    def _answerable_until(self, request: _Request) -> float:
        return max(request.deadline, request.sent + self.answer_grace)

    def forget(self, height: int) -> None:
        """`height` is settled: further replies for it are strangers' again."""
        self._answered.pop(height, None)

    def is_inflight(self, height: int) -> bool:
        return height in self._inflight

    def has_room(self) -> bool:
        return len(self._inflight) < self.window and any(l.inflight < int(l.cwnd) for l in self.links.values())

    def assign(self, height: int, now: float, avoid: frozenset[Address] = frozenset(), only: Address | None = None) -> Address | None:
        """Send a request for `height` now, to the least loaded peer with room (not in `avoid` if possible)."""
        if height in self._inflight or len(self._inflight) >= self.window:
            return None
        link = self._pick(avoid, only)
        if link is None:
            return None
        link.inflight += 1
        if link.first_sent is None:
            link.first_sent = now
        rto = link.rto(self.min_rto, self.max_rto, self.initial_rto)
        self._open(height, _Request(link.addr, now, now + rto, retransmitted=False, asked=(link.addr,)))
        self._first_sent[height] = now
        if len(self._first_sent) > 4 * self.window:
            del self._first_sent[next(iter(self._first_sent))]
        self.sent += 1
        return link.addr

    def retry(self, height: int, previous: tuple[Address, ...], now: float, avoid: frozenset[Address] = frozenset()) -> Address | None:
        """Re-send a height that timed out; the earlier peers stay able to answer it late."""
        if height in self._inflight or len(self._inflight) >= self.window:
            return None
        link = self._pick(avoid | frozenset(previous[-1:]), None)
        if link is None:
            return None
        link.inflight += 1
        rto = link.rto(self.min_rto, self.max_rto, self.initial_rto)
        asked = tuple(dict.fromkeys((*previous[-3:], link.addr)))
        self._open(height, _Request(link.addr, now, now + rto, retransmitted=True, asked=asked))
        self.sent += 1
        return link.addr

    def _pick(self, avoid: frozenset[Address], only: Address | None) -> PeerLink | None:
        if only is not None:
            link = self.links.get(only)
            return link if link is not None and link.inflight < int(link.cwnd) else None
        links = list(self.links.values())
        if not links:
            return None
        n = len(links)
        self._rr = (self._rr + 1) % n
        best: PeerLink | None = None
        best_key: tuple[bool, float] | None = None
        for i in range(n):
            link = links[(self._rr + i) % n]
            if link.inflight >= int(link.cwnd):
                continue
            key = (link.addr in avoid, link.inflight / link.cwnd)
            if best_key is None or key < best_key:
                best, best_key = link, key
        return best

    # ---------------------------------------------------------- replies

    def match(self, height: int, source: Address, now: float) -> Reply | None:
        """The request a reply for `height` from `source` answers, or None (a stranger's datagram).

        Only a peer asked for `height` can answer it, and only from its own IP. The
        first reply ends the request (flow control, round trips); more replies from a
        peer asked count until its deadline (`first` False), since the first one may
        have been forged: which copy is the chain's is the sync engine's to prove.
        """
        request = self._inflight.get(height)
        if request is None:
            answered = self._answered.get(height)
            if answered is None:
                return None
            peer = self._attribute(answered.asked, source)
            if peer is None:
                return None
            self._heard(peer, now)
            link = self.links.get(peer)
            if link is not None:  # it answered too (after another backer, or after a forgery): not silent
                link.answered += 1
                link.timeouts_in_row = 0
            return Reply(peer, self._accountable(peer, source), first=False)
        peer = self._attribute(request.asked, source)
        if peer is None:
            return None
        self._close(height)
        self._answered[height] = request
        self._answered.move_to_end(height)
        while len(self._answered) > self.window:
            self._answered.popitem(last=False)
        self._heard(peer, now)
        current = self.links.get(request.peer)
        if current is not None:
            current.inflight -= 1
        link = self.links.get(peer)
        if link is not None:
            link.answered += 1
            link.timeouts_in_row = 0
            if peer == request.peer:
                link.recent_answered_sends.append(request.sent)
            first = self._first_sent.pop(height, None)
            if request.retransmitted and link.min_rtt is not None and first is not None and now - request.sent < link.min_rtt / 2:
                # Too soon to answer the re-send: the first request's answer, late. The
                # timeout was spurious (a slow peer, not a lost datagram): learn its RTT.
                link.sample(now - first)
                link.cwnd = max(1.0, link.cwnd - 0.5)
            elif request.retransmitted or peer != request.peer:
                if link.min_rtt is not None:
                    # Alive, with a known round trip: a lossy link, not a silent peer. (Before
                    # its first clean sample, keep backing off until one comes: Karn.)
                    link.backoff = max(1.0, link.backoff / 2)
            else:
                rtt = now - request.sent
                link.sample(rtt)  # Karn: only from a request sent once
                link.backoff = 1.0
                assert link.min_rtt is not None
                if rtt > 2 * link.min_rtt + QUEUE_SLACK:
                    link.cwnd = max(1.0, link.cwnd - 0.5)  # its queue is growing: ease off
                else:
                    link.cwnd = min(self.max_cwnd, link.cwnd + 1)
        return Reply(peer, self._accountable(peer, source))

    def match_late(self, asked: tuple[Address, ...], source: Address, now: float) -> Reply | None:
        """A reply for a height whose request timed out and waits to be re-sent: from one of `asked`?"""
        peer = self._attribute(asked, source)
        if peer is None:
            return None
        link = self.links.get(peer)
        if link is not None:
            link.answered += 1
            link.timeouts_in_row = 0
            if link.min_rtt is not None:
                link.backoff = max(1.0, link.backoff / 2)
        self._heard(peer, now)
        return Reply(peer, self._accountable(peer, source))

    def _heard(self, peer: Address, now: float) -> None:
        link = self.links.get(peer)
        if link is not None:
            link.heard_at = now
            link.lack_strikes = 0

    def note_null(self, source: Address, now: float) -> Reply | None:
        """An all-null reply ("no such block": it names no height) from `source`.

        Attributed only to a peer of this attempt it comes from exactly (its address,
        or the one it answered STATS from), and only while a request to that peer is in
        flight: else None, an unsolicited datagram. It ends nothing: it is remembered,
        and tells `expire` that a request to that peer which then times out with no
        answer from it was most likely refused, not lost.
        """
        link = self.links.get(source)
        if link is None:
            link = next((l for l in self.links.values() if l.reply_addr == source), None)
        if link is None or link.pending <= 0:
            return None
        link.null_at = now
        return Reply(link.addr, True)

    def _attribute(self, asked: tuple[Address, ...], source: Address) -> Address | None:
        same_ip = [a for a in asked if a[0] == source[0]]
        if not same_ip:
            return None
        for a in same_ip:
            if a == source:
                return a
        for a in same_ip:
            link = self.links.get(a)
            if link is not None and link.reply_addr == source:
                return a
        return same_ip[-1]

    def _accountable(self, peer: Address, source: Address) -> bool:
        if source == peer:
            return True
        link = self.links.get(peer)
        return link is not None and link.reply_addr == source

    def widen(self, height: int, limit: int, now: float) -> list[Address]:
        """Also ask up to `limit` more peers for an in-flight height (a chain's top: who serves it at all?).

        A peer that never answered gets a timeout strike for it like the first one asked.
        """
        request = self._inflight.get(height)
        if request is None:
            return []
        extra = [a for a in self.links if a not in request.asked][:limit]
        for a in extra:
            if self.links[a].first_sent is None:
                self.links[a].first_sent = now
        self._also_ask(request, extra)
        self.sent += len(extra)
        return extra

    def stale(self, height: int, now: float, blocking: bool = False) -> bool:
        """The request for `height` has taken several of its peer's fastest round trips, with
        little in flight to wait behind (or with everything else waiting on it, `blocking`):
        lost, whatever the (queue-inflated) SRTT says."""
        request = self._inflight.get(height)
        link = self.links.get(request.peer) if request is not None else None
        if request is None or link is None or link.min_rtt is None:
            return False
        if blocking:
            return now - request.sent >= 4 * link.min_rtt + 0.01
        if len(self._inflight) > 16 or link.inflight > 2:
            return False
        return now - request.sent >= max(4 * link.min_rtt, 2 * self.min_rto)

    def overdue(self, height: int, now: float) -> bool:
        """The request for `height` is later than its peer's usual answers (well before its timeout)."""
        request = self._inflight.get(height)
        link = self.links.get(request.peer) if request is not None else None
        if request is None or link is None or link.srtt is None:
            return False
        return now - request.sent >= link.srtt + 2 * link.rttvar + 0.005

    def hedge(self, height: int) -> Address | None:
        """Also ask a second peer for an in-flight height (the one the sync is waiting on): its answer counts too."""
        request = self._inflight.get(height)
        if request is None or len(self.links) < 2:
            return None
        others = [l for l in self.links.values() if l.addr not in request.asked and l.answered > 0]  # never a silent one
        if not others:
            return None
        link = min(others, key=lambda l: l.inflight / l.cwnd)
        self._also_ask(request, [link.addr])
        self.sent += 1
        return link.addr

    def asked(self, height: int) -> tuple[Address, ...]:
        request = self._inflight.get(height)
        return request.asked if request is not None else ()

    def overtaken(self, height: int, now: float, by: int = 3, eager: bool = False) -> bool:
        """The request for `height` is very likely lost: its peer has since answered `by` requests sent
        after it, and it is older than a usual round trip (so mere reordering doesn't count).

        Replies overtaking a request are what fast retransmit (RFC 5681) acts on: a
        lost block at the frontier is asked again at once, not after a timeout.
        """
        request = self._inflight.get(height)
        if request is None:
            return False
        link = self.links.get(request.peer)
        if link is None or link.srtt is None or link.min_rtt is None:
            return False
        if link.srtt > 2 * link.min_rtt + QUEUE_SLACK:
            return False  # its answers queue up (a slow peer): lateness is not loss there
        age = now - request.sent
        wait = link.srtt if eager else max(link.srtt + 2 * link.rttvar, 2 * link.min_rtt)
        if age < wait:
            return False
        return sum(1 for sent in link.recent_answered_sends if sent > request.sent) >= by

    def cancel(self, height: int) -> None:
        self._first_sent.pop(height, None)
        request = self._close(height)
        if request is not None:
            link = self.links.get(request.peer)
            if link is not None:
                link.inflight -= 1

    # ---------------------------------------------------------- time

    def expire(self, now: float) -> tuple[list[tuple[int, tuple[Address, ...]]], list[Address]]:
        """Requests past their deadline: ((height, peers asked) to re-send, peers to set aside)."""
        expired: list[tuple[int, tuple[Address, ...]]] = []
        struck: set[Address] = set()
        lacking: set[Address] = set()
        self._prune_answered(now)
        if now < self._earliest:
            return expired, []
        self._earliest = float("inf")
        for height, request in list(self._inflight.items()):
            if now < request.deadline:
                self._earliest = min(self._earliest, request.deadline)
                continue
            self._close(height)
            expired.append((height, request.asked))
            for asked in request.asked:
                other = self.links.get(asked)
                if other is None or asked in lacking:
                    continue
                # It said "no such block" after this was sent, and nothing else since:
                # the timeout passed with no answer, so the null was most likely its own.
                if other.null_at >= request.sent and other.heard_at < request.sent \
                        and now - other.last_lack >= other.rto(self.min_rto, self.max_rto, self.initial_rto):
                    lacking.add(asked)
                    other.lack_strikes += 1
                    other.last_lack = now
            for extra in request.asked:
                other = self.links.get(extra)
                if extra != request.peer and other is not None and other.answered == 0:
                    # Asked alongside (a chain's top) and still nothing from it. The widened top is re-sent
                    # at each nearest peer's timeout; a strike per re-send set every backer aside within
                    # a second, before a loaded peer's first answer could come (busy is not silent).
                    self._strike(extra, other, now, struck)
            link = self.links.get(request.peer)
            if link is None:
                continue
            link.inflight -= 1
            if self._strike(request.peer, link, now, struck):
                if link.answered == link.answered_at_event:
                    link.cwnd = max(1.0, link.cwnd / 2)  # silent since the last strike
                link.answered_at_event = link.answered
        self.timeouts += len(expired)
        silent = [
            a for a in struck
            if (l := self.links[a]).timeouts_in_row >= self.max_timeouts
            or (l.answered == 0 and l.timeouts_in_row >= self.silent_timeouts and l.first_sent is not None and now - l.first_sent >= self.silent_seconds)
        ]
        silent += [a for a in lacking if a not in silent and self.links[a].lack_strikes >= self.lack_timeouts]
        return expired, silent

    def _strike(self, addr: Address, link: PeerLink, now: float, struck: set[Address]) -> bool:
        """Count a timeout against `addr` (and back off), at most once per its own timeout period:
        a burst of losses, or many requests it was asked alongside others, is one event."""
        if addr in struck or now - link.last_event < link.rto(self.min_rto, self.max_rto, self.initial_rto):
            return False
        struck.add(addr)
        link.timeouts_in_row += 1
        link.backoff = min(link.backoff * 2, 16.0)
        link.last_event = now
        return True

    def _prune_answered(self, now: float) -> None:
        """Drop answered requests no longer answerable (oldest first: they were answered in order, mostly)."""
        while self._answered:
            height, request = next(iter(self._answered.items()))
            if self._answerable_until(request) > now:
                break
            del self._answered[height]

    def next_deadline(self) -> float | None:
        return min((r.deadline for r in self._inflight.values()), default=None)
