"""Pipelined block fetching over lossy UDP, as a pure scheduler.

`FetchPlan` decides which GET_BLOCK requests to send, to whom and when; the
ConsensusRunner does the sending and feeds replies back. Time is passed in, so
the logic is tested without sockets or sleeps.

How it is fast on a lossy network:
* a window of requests is in flight at once, spread over every peer that
  agrees on the chain (each peer has its own cap, so a slow one can't hoard it);
* each peer has an adaptive retransmission timeout (RFC 6298: SRTT + 4*RTTVAR,
  Karn's rule: no samples from retransmitted requests);
* a request that times out is re-sent, to another peer when there is one;
* a peer that keeps timing out, or says it lacks blocks it claimed, is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from chain.block import Block

Address = tuple[str, int]


@dataclass
class PeerLink:
    """What we know about one peer's responsiveness during a fetch."""

    addr: Address
    srtt: float | None = None
    rttvar: float = 0.0
    inflight: int = 0
    consecutive_timeouts: int = 0
    answered: int = 0

    def rto(self, min_rto: float, max_rto: float, initial: float) -> float:
        if self.srtt is None:
            return initial
        return max(min_rto, min(max_rto, self.srtt + 4 * self.rttvar))

    def sample(self, rtt: float) -> None:
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
    attempts: int


@dataclass
class FetchPlan:
    """Fetch every height in `heights` from `peers`."""

    heights: Iterable[int]
    peers: Iterable[Address]
    window: int = 96
    per_peer: int = 32
    min_rto: float = 0.01
    max_rto: float = 1.0
    initial_rto: float = 0.1
    max_consecutive_timeouts: int = 12
    received: dict[int, tuple[Block, Address]] = field(default_factory=dict)
    rtt_hints: dict[Address, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._pending: list[int] = sorted(set(self.heights), reverse=True)  # pop() gives the lowest
        self.wanted: set[int] = set(self._pending)
        self.links: dict[Address, PeerLink] = {addr: PeerLink(addr) for addr in dict.fromkeys(self.peers)}
        for addr, rtt in self.rtt_hints.items():
            if addr in self.links:
                self.links[addr].sample(rtt)  # e.g. the STATS round trip: a better first RTO than a guess
        self._inflight: dict[int, _Request] = {}
        self._retry: list[int] = []
        self._attempts: dict[int, int] = {}
        self._rr = 0
        self.requests_sent = 0
        self.timeouts = 0
        self.dropped_peers: list[Address] = []

    # ---------------------------------------------------------- state

    @property
    def done(self) -> bool:
        return len(self.received) >= len(self.wanted)

    @property
    def failed(self) -> bool:
        """No peer left to ask while blocks are still missing."""
        return not self.links and not self.done

    def peer_addresses(self) -> list[Address]:
        return list(self.links)

    # ---------------------------------------------------------- decisions

    def expire(self, now: float) -> int:
        """Move requests past their deadline back to the queue; returns how many timed out.

        Called on the runner's tick rather than per reply, so a reply costs O(1).
        """
        timed_out_peers: set[Address] = set()
        expired = 0
        for height, request in list(self._inflight.items()):
            if now < request.deadline or self._inflight.get(height) is not request:
                continue  # not due, or already moved by a drop_peer below
            expired += 1
            del self._inflight[height]
            if height not in self.received:
                self._retry.append(height)
            link = self.links.get(request.peer)
            if link is None:
                continue
            link.inflight -= 1
            if request.peer not in timed_out_peers:
                # One strike per peer per pass: a burst of losses is one event.
                timed_out_peers.add(request.peer)
                link.consecutive_timeouts += 1
                if link.consecutive_timeouts > self.max_consecutive_timeouts and len(self.links) > 1:
                    self.drop_peer(request.peer)
        self.timeouts += expired
        return expired

    def due_requests(self, now: float, min_batch: int = 1) -> list[tuple[int, Address]]:
        """Requests to send now (retries first, lowest heights first), up to the window.

        With `min_batch` > 1 nothing is sent until that many slots are free (or the
        queue is nearly drained), so requests go out in batches.
        """
        free = self.window - len(self._inflight)
        if free < min_batch and free < len(self._retry) + len(self._pending):
            return []
        out: list[tuple[int, Address]] = []
        self._retry.sort(reverse=True)
        while len(self._inflight) < self.window and (self._retry or self._pending):
            height = self._retry.pop() if self._retry else self._pending.pop()
            if height in self.received or height in self._inflight:
                continue
            link = self._pick_peer()
            if link is None:
                self._retry.append(height)
                break
            attempts = self._attempts.get(height, 0) + 1
            self._attempts[height] = attempts
            link.inflight += 1
            rto = link.rto(self.min_rto, self.max_rto, self.initial_rto)
            self._inflight[height] = _Request(link.addr, now, now + rto, attempts)
            out.append((height, link.addr))
        self.requests_sent += len(out)
        return out

    def next_deadline(self) -> float | None:
        return min((r.deadline for r in self._inflight.values()), default=None)

    def _pick_peer(self) -> PeerLink | None:
        links = [link for link in self.links.values() if link.inflight < self.per_peer]
        if not links:
            return None
        self._rr = (self._rr + 1) % len(links)
        # Round robin, but prefer the peer with the fewest requests outstanding
        # (min keeps the first of equals, so the rotation breaks ties).
        return min(links[self._rr :] + links[: self._rr], key=lambda link: link.inflight)

    # ---------------------------------------------------------- replies

    def on_block(self, block: Block, peer: Address, now: float) -> bool:
        """A reply carrying `block`. True if it was one we wanted and had not got yet."""
        height = block.height
        if height not in self.wanted or height in self.received:
            return False
        request = self._inflight.pop(height, None)
        link = self.links.get(peer)
        if request is not None:
            requested_from = self.links.get(request.peer)
            if requested_from is not None:
                requested_from.inflight -= 1
            if link is not None and request.peer == peer and request.attempts == 1:
                link.sample(now - request.sent)
        if link is None:
            # From a peer outside the set (dropped, or never asked): keep it only if
            # we asked someone for it, so unsolicited datagrams can't steer the fetch.
            if request is None:
                return False
        else:
            link.consecutive_timeouts = 0
            link.answered += 1
        self.received[height] = (block, peer)
        return True

    def on_missing(self, peer: Address) -> None:
        """`peer` answered a request with the all-null reply: it lacks a block it claimed."""
        self.drop_peer(peer)

    def reject(self, height: int) -> Address | None:
        """A received block proved invalid: forget it (to fetch again) and return who sent it."""
        entry = self.received.pop(height, None)
        if entry is None:
            return None
        self._retry.append(height)
        return entry[1]

    def drop_peer(self, peer: Address) -> None:
        if self.links.pop(peer, None) is None:
            return
        self.dropped_peers.append(peer)
        for height, request in list(self._inflight.items()):
            if request.peer == peer:
                del self._inflight[height]
                self._retry.append(height)
