"""GossipManager: membership, as Bitcoin Core's address manager does it.

Two bounded tables (membership: see docs/protocol.md):

* **tried**: peers that answered something we sent them within PROBE_WINDOW (a
  GOSSIP_REPLY from the host it names to our GOSSIP, or a STATS_REPLY from the very
  address we greeted with a STATS): a node really is there.
  Only tried peers (and the well-known ones) are forwarded gossip, sent ANNOUNCEs
  and asked for STATS by consensus.
* **new**: addresses only heard of (a GOSSIP's claimed originator, an unsolicited
  GOSSIP_REPLY, the last snapshot). Each is greeted with a STATS (rate-limited);
  answering moves it to tried.

What membership costs a node must not grow with the network beyond what the
protocol's flood itself costs (each new id: one reply to its originator, three
forwards). So only a keep-alive carries a fresh id (it is flooded; every node it
reaches answers us, and an answer from the host it names within PROBE_WINDOW of it
promotes that address); the keep-alive is sent straight to the well-known peers and
to a random sample of each table, not to every entry (the flood reaches the rest);
a greeting carries no GOSSIP at all, so it never starts a flood (see `_greet`).

A flood of forged originators only churns the new table: it can never evict a
tried or a well-known peer. The new table evicts its longest-silent entry when
full; a full tried table refuses promotions until an entry goes silent for the
peer timeout. Every table (seen ids, heard-from, probes) is capped.
"""
from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from actors.base import NodeActor
from runtime.context import NodeContext, tell
from runtime.interfaces import GossipApi
from net.ratelimit import TokenBuckets
from messages.wire import MAX_NAME_CHARS, Gossip, GossipReply, Stats, WireMessage
from net.address import Address, ip_literal, is_printable_text, valid_port

MAX_TRIED = 256
MAX_NEW = 1024
MAX_PEERS = MAX_TRIED + MAX_NEW
MAX_SEEN_IDS = 10_000
SEEN_ID_TTL = 120.0
FORWARD_FANOUT = 3
PEERS_FILENAME = "peers.json"
EXPIRE_INTERVAL = 5.0
WELL_KNOWN_GRACE = 10.0  # seconds a well-known peer has to answer before we warn (once)
# Forwards per second for the whole node: ample for an honest network (each node
# gossips every 30 s), and a flood of fresh ids can't make us spray our peers.
FORWARD_RATE = 300.0
FORWARD_BURST = 600.0
# Catch-up on first sight, and the probe of a newly heard-of address: our GOSSIP
# (some peers learn us only from one; its GOSSIP_REPLY moves the address to tried)
# and a STATS (a longer chain there starts a round at once; its STATS_REPLY
# validates the address for reply budgets). Bounded for the whole node, since a
# flood of forged gossip names new "peers"; the rest wait for the keep-alive.
GREET_RATE = 20.0
GREET_BURST = 40.0
PROBE_WINDOW = 10.0  # an answer this soon after our GOSSIP (or greeting STATS) to that address promotes it
# A tried peer that shows it is alive is asked its chain (STATS) at most this often: once per
# keep-alive interval, since every peer is asked at that rate (N/30 STATS a second at N peers).
CLAIM_REFRESH = 30.0
# Sent straight to the well-known peers and to this many random entries of each table; the
# flood carries it to the rest (forwarded by 3 at each node, it reaches ~94% of the network).
KEEPALIVE_SAMPLE = 8
RESOLVE_TIMEOUT = 2.0
# Relaying a block we accepted (ChainKeeper tells us, once per block): an ANNOUNCE to this
# many random tried peers. Each relay costs whoever caused it a valid proof-of-work block.
RELAY_FANOUT = 8
# A tried peer that announced a block of a branch shorter than (or as long as) ours is sent
# our tip at most this often (after a healed partition, its side learns of the longer chain).
STALE_ANSWER_INTERVAL = 10.0
# While no peer is tried, the well-known ones are greeted again after 2, 4, 8 ... s up to this,
# not only at the keep-alive (one may have been unreachable when we started, e.g. behind a cut).
# It costs nothing while they stay unreachable, and bounds how long after a cut heals an isolated
# node stays alone (with 30 s, a node that joined through the far side of a cut got its peers up
# to 30 s after the heal).
WELL_KNOWN_RETRY_FIRST = 2.0
WELL_KNOWN_RETRY_MAX = 10.0


@dataclass
class PeerInfo:
    name: str
    last_seen: float
    first_seen: float
    probed_at: float | None = None  # when we last sent it a GOSSIP (keep-alive) or a greeting STATS


def resolve_all(peers: Sequence[tuple[str, int]], timeout: float = RESOLVE_TIMEOUT) -> list[Address | None]:
    """The IPv4 address of each (host, port), None for those not resolved within `timeout`.

    Name lookups can hang; they run in parallel on helper threads, so the actor
    waits at most `timeout` in all, however many peers are unresolvable.
    """
    results: list[Address | None] = [None] * len(peers)

    def lookup(index: int, host: str, port: int) -> None:
        try:
            info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
            results[index] = info[0][4][:2]
        except (OSError, UnicodeError, IndexError):
            pass

    threads = [threading.Thread(target=lookup, args=(i, h, p), daemon=True, name=f"resolve-{h}") for i, (h, p) in enumerate(peers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return list(results)


def _snapshot_peer(entry: Any) -> tuple[Address, str] | None:
    """A peers.json entry checked by the same rules as the wire (an IP literal, a port, a printable name)."""
    if not isinstance(entry, dict):
        return None
    host, port, name = ip_literal(entry.get("host")), entry.get("port"), entry.get("name")
    if host is None or not valid_port(port) or not isinstance(name, str):
        return None
    if len(name) > MAX_NAME_CHARS or not is_printable_text(name):
        return None
    return (host, port), name


class GossipManager(NodeActor, GossipApi):
    # Expendable: a hung instance is abandoned and replaced (its peer table is rebuilt by gossip).
    message_budget = 10.0

    def __init__(self, ctx: NodeContext, name: str = "GossipManager", clock: Any = time.monotonic, rng: random.Random | None = None) -> None:
        super().__init__(ctx, name)
        self.clock = clock
        self.rng = rng or random.Random()
        self.tried: OrderedDict[Address, PeerInfo] = OrderedDict()  # oldest-seen first
        self.new: OrderedDict[Address, PeerInfo] = OrderedDict()  # oldest-seen first
        # The tried addresses in a list (with positions) for O(1) random picks:
        # forwarding must not cost O(peers) per gossip under a flood.
        self._tried_list: list[Address] = []
        self._tried_pos: dict[Address, int] = {}
        self._forwards = TokenBuckets(FORWARD_RATE, FORWARD_BURST, max_keys=1)
        self._greetings = TokenBuckets(GREET_RATE, GREET_BURST, max_keys=1)
        self._keepalive: Gossip | None = None  # our current GOSSIP (a well-known peer resolved late gets it: no new id)
        self._keepalive_sent_at: float | None = None
        self.seen_ids: OrderedDict[str, float] = OrderedDict()
        self.well_known: list[Address] = []
        self._well_known_probed: dict[Address, float] = {}
        self._unresolved: list[tuple[str, int]] = []
        self._resolver: threading.Thread | None = None
        self._heard_from: set[Address] = set()  # well-known peers that have answered (bounded by --peer)
        self._warned_silent: set[Address] = set()
        # Per tried peer: a STATS asked at most every CLAIM_REFRESH s, our tip sent at most every STALE_ANSWER_INTERVAL s.
        self._claims_asked = TokenBuckets(1.0 / CLAIM_REFRESH, 1.0, max_keys=2 * MAX_TRIED)
        self._stale_answered = TokenBuckets(1.0 / STALE_ANSWER_INTERVAL, 1.0, max_keys=2 * MAX_TRIED)
        self._well_known_retry = False  # a retry of the well-known peers is scheduled

    @property
    def peers(self) -> dict[Address, PeerInfo]:
        """Both tables, tried first (for counting and tests)."""
        return {**self.tried, **self.new}

    def on_start(self) -> None:
        cfg = self.ctx.config
        self._unresolved = list(cfg.peers)
        # At start the well-known names are resolved here (bounded by RESOLVE_TIMEOUT),
        # before any datagram is handled; retries run on a helper thread.
        self._on_resolved(list(self._unresolved), resolve_all(self._unresolved), warn=True)
        self._load_peers()
        if self.ctx.config.peers:
            self.every(WELL_KNOWN_GRACE, self.check_well_known)
        self.every(cfg.gossip_interval, self.keep_alive)
        self._schedule_well_known_retry(WELL_KNOWN_RETRY_FIRST)
        # Expire on its own short timer so a silent peer goes at ~60 s, not up to 90.
        self.every(min(EXPIRE_INTERVAL, cfg.peer_timeout / 4), self.expire)
        self.keep_alive()

    def release(self) -> None:
        self._save_peers()

    # ---------------------------------------------------------- protocol

    def keep_alive(self) -> None:
        """GOSSIP with a fresh id to the well-known peers and to KEEPALIVE_SAMPLE random entries of each
        table; the flood takes it to the others, and each node it reaches answers us (which promotes it)."""
        now = self.clock()
        self.expire()
        if self._unresolved:
            self._resolve_in_background()  # DNS may be back
        cfg = self.ctx.config
        gossip = Gossip(cfg.host, cfg.public_port, str(uuid.uuid4()), cfg.name)
        self._keepalive = gossip
        self._keepalive_sent_at = now
        self._remember_id(gossip.id, now)
        for addr in self.well_known:
            self._well_known_probed[addr] = now
            self._send(gossip, addr)
        targets = self._random_tried(KEEPALIVE_SAMPLE, exclude=tuple(self.well_known))
        targets += [a for a in self._random_new(KEEPALIVE_SAMPLE) if a not in self.well_known]
        for addr in targets:
            self._entry(addr).probed_at = now
            self._send(gossip, addr)
        self._save_peers()

    def _resolve_in_background(self) -> None:
        """Retry the unresolved well-known names on a helper thread; the answer comes back as a message."""
        if self._resolver is not None and self._resolver.is_alive():
            return
        pending = list(self._unresolved)
        proxy = self.actor_ref.proxy()

        def run() -> None:
            try:
                proxy.on_resolved.defer(pending, resolve_all(pending))
            except Exception:  # noqa: BLE001 - the actor is gone: nothing to tell
                pass

        self._resolver = threading.Thread(target=run, name=f"{self.name}-resolve", daemon=True)
        self._resolver.start()

    def on_resolved(self, pending: list[tuple[str, int]], results: list[Address | None]) -> None:
        self._on_resolved(pending, results, warn=False)

    def _on_resolved(self, pending: list[tuple[str, int]], results: list[Address | None], warn: bool) -> None:
        """Record resolved well-known peers; warn (once, at start) for failures."""
        still: list[tuple[str, int]] = []
        for (host, port), addr in zip(pending, results):
            if addr is None:
                still.append((host, port))
                if warn:
                    self.log.warning("well-known peer %s:%d cannot be resolved; running without it, retrying every keep-alive", host, port)
            elif addr not in self.well_known:
                self.well_known.append(addr)
                if not warn:
                    self.log.info("well-known peer %s:%d resolved to %s:%d", host, port, *addr)
                    if self._keepalive is not None:
                        self._well_known_probed[addr] = self.clock()
                        self._send(self._keepalive, addr)
        self._unresolved = [p for p in self._unresolved if p not in pending or p in still]

    def _schedule_well_known_retry(self, delay: float) -> None:
        if self.well_known and not self.tried and not self._well_known_retry:
            self._well_known_retry = True
            self.after(delay, self.retry_well_known, delay)

    def retry_well_known(self, delay: float) -> None:
        """No peer tried yet: greet the well-known ones again (a fresh GOSSIP id, as a lost first one
        may have been seen there), then again after twice the delay, up to WELL_KNOWN_RETRY_MAX."""
        self._well_known_retry = False
        if self.tried:
            return
        cfg = self.ctx.config
        now = self.clock()
        gossip = Gossip(cfg.host, cfg.public_port, str(uuid.uuid4()), cfg.name)
        self._keepalive, self._keepalive_sent_at = gossip, now  # flooded from there like a keep-alive
        self._remember_id(gossip.id, now)
        for addr in self.well_known:
            self._well_known_probed[addr] = now
            self._send(gossip, addr)
        self._schedule_well_known_retry(min(WELL_KNOWN_RETRY_MAX, delay * 2))

    def check_well_known(self) -> None:
        """One warning per well-known peer that has not answered yet; we keep trying."""
        for addr in self.well_known:
            if addr not in self._heard_from and addr not in self._warned_silent:
                self._warned_silent.add(addr)
                self.log.warning("well-known peer %s:%d has not answered in %.0fs; still trying", addr[0], addr[1], WELL_KNOWN_GRACE)

    def on_gossip(self, gossip: Gossip, source: Address) -> None:
        now = self.clock()
        if gossip.id in self.seen_ids:
            if source[0] == gossip.host:
                self._refresh_known((gossip.host, gossip.port), gossip.name, now)
            return  # never forwarded (nor replied to) twice
        self._remember_id(gossip.id, now)
        originator = (gossip.host, gossip.port)
        if originator == self._own_address():
            return
        cfg = self.ctx.config
        self._send(GossipReply(cfg.host, cfg.public_port, cfg.name), originator)
        for addr in self._random_tried(FORWARD_FANOUT, exclude=(originator, source)):
            if not self._forwards.allow(None, 1, now):
                self.ctx.metrics.dropped.labels(reason="gossip_forward_limited").inc()
                break
            self._send(gossip, addr)
        self._heard_of(originator, gossip.name, now, probe=True)

    def on_gossip_reply(self, reply: GossipReply, source: Address) -> None:
        now = self.clock()
        addr = (reply.host, reply.port)
        if addr == self._own_address():
            return
        if addr in self.well_known and source[0] == reply.host:
            self._heard_from.add(addr)
        info = self.tried.get(addr)
        if info is not None:
            self._refresh_tried(addr, info, reply.name, now)
            return
        entry = self.new.get(addr)
        # Our keep-alive id is flooded: a node it reached answers us whether or not we sent it straight there.
        probes = [t for t in (self._well_known_probed.get(addr), entry.probed_at if entry else None,
                              self._keepalive_sent_at) if t is not None]
        probed = max(probes) if probes else None
        if source[0] == reply.host and probed is not None and now - probed <= PROBE_WINDOW:
            self._promote(addr, reply.name, now)
        else:
            self._heard_of(addr, reply.name, now, probe=True)

    def on_stats_answer(self, addr: Address) -> None:
        """Told by ConsensusRunner: a STATS_REPLY came from `addr`. If it is an address we greeted (or
        probed) within PROBE_WINDOW, the round trip proves it is real and alive: promote it. Any
        other STATS_REPLY changes nothing here (tried peers are kept by their GOSSIP traffic)."""
        now = self.clock()
        info = self.new.get(addr)
        if info is None or info.probed_at is None or now - info.probed_at > PROBE_WINDOW:
            return
        self._promote(addr, info.name, now)

    def broadcast(self, message: WireMessage) -> None:
        """Send `message` (an ANNOUNCE) to the well-known and the tried peers."""
        for addr in self._trusted_targets():
            self._send(message, addr)

    def relay(self, message: WireMessage, exclude: list[Address]) -> None:
        """Send `message` (an ANNOUNCE of a block ChainKeeper just accepted) to up to RELAY_FANOUT
        random tried peers, none of `exclude` (its sender, peers known to have it)."""
        for addr in self._random_tried(RELAY_FANOUT, exclude=tuple(exclude)):
            self._send(message, addr)

    def answer_stale(self, message: WireMessage, addr: Address) -> None:
        """Send `message` (an ANNOUNCE of our tip) to `addr`, which announced a block of a branch no longer
        than ours: only to a tried or well-known peer (a forged source can't aim it elsewhere), at most
        once per STALE_ANSWER_INTERVAL per peer."""
        if addr not in self.tried and addr not in self.well_known:
            self.ctx.metrics.dropped.labels(reason="stale_answer_untried").inc()
            return
        if self._stale_answered.allow(addr, 1.0, self.clock()):
            self._send(message, addr)

    def peer_addresses(self) -> list[Address]:
        """Peers to ask in a consensus round: the well-known and the tried ones (validated addresses only)."""
        self.expire()
        return self._trusted_targets()

    def send_peer_addresses(self, request_id: int) -> None:
        """Told by ConsensusRunner starting a round: tell it back `peer_addresses()` (it never waits on us)."""
        peers = self.peer_addresses()
        tell(self.ctx.registry.consensus(), lambda consensus: consensus.on_peer_addresses.defer(request_id, peers))

    def health_details(self) -> dict[str, Any]:
        """In /health: the size of each membership table."""
        return {"tried": len(self.tried), "new": len(self.new), "well_known": len(self.well_known)}

    def peer_table(self) -> list[dict[str, Any]]:
        """For ops: each peer with its table (tried/new), name and seconds since last heard from."""
        now = self.clock()
        return [
            {"host": host, "port": port, "name": info.name, "last_seen_age": round(now - info.last_seen, 3), "table": table}
            for table, entries in (("tried", self.tried), ("new", self.new))
            for (host, port), info in entries.items()
        ]

    def expire(self) -> None:
        """Drop peers silent for longer than the peer timeout and gossip ids past their TTL."""
        now = self.clock()
        timeout = self.ctx.config.peer_timeout
        for table in (self.tried, self.new):
            while table:
                addr, info = next(iter(table.items()))
                if now - info.last_seen <= timeout:
                    break
                self._forget(addr)
                if table is self.tried:
                    self.log.info("dropped silent peer %s:%d (%s)", addr[0], addr[1], info.name,
                                  extra={"peer": f"{addr[0]}:{addr[1]}"})
        while self.seen_ids:
            gossip_id, seen_at = next(iter(self.seen_ids.items()))
            if now - seen_at <= SEEN_ID_TTL:
                break
            del self.seen_ids[gossip_id]
        self._schedule_well_known_retry(WELL_KNOWN_RETRY_FIRST)  # every tried peer went silent: greet again soon
        self._update_gauge()

    # ---------------------------------------------------------- internals

    def _own_address(self) -> Address:
        return (self.ctx.config.host, self.ctx.config.public_port)

    def _trusted_targets(self) -> list[Address]:
        # Well-known peers first, then the most recently heard from: a caller that
        # can only ask some (consensus asks at most 64) asks the likeliest alive.
        targets = dict.fromkeys(self.well_known)
        targets.update(dict.fromkeys(reversed(self.tried)))
        return list(targets)

    def _remember_id(self, gossip_id: str, now: float | None = None) -> None:
        self.seen_ids[gossip_id] = self.clock() if now is None else now
        self.seen_ids.move_to_end(gossip_id)
        while len(self.seen_ids) > MAX_SEEN_IDS:
            self.seen_ids.popitem(last=False)

    def _heard_of(self, addr: Address, name: str, now: float, probe: bool) -> None:
        """An address we only heard of: refresh it where it is, or add it to the new table."""
        if addr == self._own_address():
            return
        info = self.tried.get(addr)
        if info is not None:
            self._refresh_tried(addr, info, name, now)
            return
        info = self.new.pop(addr, None)
        fresh = info is None
        if info is None:
            info = PeerInfo(name=name, last_seen=now, first_seen=now)
            self.log.debug("heard of %s:%d (%s)", addr[0], addr[1], name)
        info.last_seen, info.name = now, name
        self.new[addr] = info  # most recently seen last
        while len(self.new) > MAX_NEW:
            self.new.popitem(last=False)  # the longest-silent address we only heard of
            self.ctx.metrics.dropped.labels(reason="peer_new_table_full").inc()
        if fresh and probe and addr not in self._well_known_probed:
            self._greet(addr, info, now)
        self._update_gauge()

    def _greet(self, addr: Address, info: PeerInfo, now: float) -> None:
        """An address seen for the first time: a STATS. Its answer (on_stats_answer) proves the address
        is real, which promotes it, and is its claim, so either side that is behind catches up.

        Never our GOSSIP: a node that had not seen our keep-alive's id would forward it, a flood of its
        own. At a join that is cheap, but when a partition heals every node greets the whole other side
        at once, and each greeting flooded that side again: twice the network's datagrams for half a
        minute, which on a busy host delayed the sync that ends the split. Our regular keep-alive
        reaches the greeted node within one interval anyway, and its answer promotes it too."""
        if not self._greetings.allow(None, 1, now):
            self.ctx.metrics.dropped.labels(reason="greeting_limited").inc()
            return
        info.probed_at = now
        self._claims_asked.allow(addr, 1.0, now)  # its answer is the claim: the next refresh need not ask
        self._send(Stats(), addr)

    def _refresh_known(self, addr: Address, name: str, now: float) -> None:
        """A repeated GOSSIP id straight from the peer it names (some peers reuse one id for
        every keep-alive): that peer is alive. Refreshed where it is; never added by this."""
        info = self.tried.get(addr)
        if info is not None:
            self._refresh_tried(addr, info, name, now)
            return
        info = self.new.pop(addr, None)
        if info is not None:
            info.last_seen, info.name = now, name
            self.new[addr] = info  # most recently seen last

    def _refresh_tried(self, addr: Address, info: PeerInfo, name: str, now: float) -> None:
        info.last_seen, info.name = now, name
        self.tried.move_to_end(addr)
        self._ask_claim(addr, now)

    def _ask_claim(self, addr: Address, now: float) -> None:
        """A tried peer showed it is alive (a GOSSIP or GOSSIP_REPLY): ask its chain with a STATS, at most
        every CLAIM_REFRESH s. GOSSIP carries no height; this way the claim ConsensusRunner keeps of
        each peer (shown on the dashboard and `/peers`) is as fresh as the peer's last word to us."""
        if self._claims_asked.allow(addr, 1.0, now):
            self._send(Stats(), addr)

    def _promote(self, addr: Address, name: str, now: float) -> None:
        """Move an address that answered our GOSSIP into the tried table, if there is room."""
        if len(self.tried) >= MAX_TRIED:
            self.ctx.metrics.dropped.labels(reason="peer_tried_table_full").inc()
            self._heard_of(addr, name, now, probe=False)
            return
        info = self.new.pop(addr, None) or PeerInfo(name=name, last_seen=now, first_seen=now)
        info.last_seen, info.name = now, name
        self.tried[addr] = info
        self._tried_pos[addr] = len(self._tried_list)
        self._tried_list.append(addr)
        # Once per join (and once per leave, in expire()): an operator sees the network form.
        if len(self.tried) == 1:
            self.log.info("first peer %s:%d (%s) answered: no longer on our own", addr[0], addr[1], name,
                          extra={"peer": f"{addr[0]}:{addr[1]}"})
        else:
            self.log.info("peer %s:%d (%s) joined: %d peers", addr[0], addr[1], name, len(self.tried),
                          extra={"peer": f"{addr[0]}:{addr[1]}"})
        self._update_gauge()

    def _update_gauge(self) -> None:
        self.ctx.metrics.peers.set(len(self.tried) + len(self.new))

    def _peers_file(self) -> Path:
        return Path(self.ctx.config.data_dir) / PEERS_FILENAME

    def _save_peers(self) -> None:
        """Snapshot both tables (atomically), so a restart doesn't forget the network."""
        snapshot = [{"host": h, "port": p, "name": info.name} for (h, p), info in self.peers.items()]
        path = self._peers_file()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(snapshot))
            os.replace(tmp, path)
        except OSError as exc:
            self.log.warning("could not save the peer table: %s", exc)

    def _load_peers(self) -> None:
        """Peers from the last snapshot, into the new table: each must answer again to be tried."""
        try:
            snapshot = json.loads(self._peers_file().read_text())
        except (OSError, ValueError):
            return
        now = self.clock()
        skipped = 0
        for entry in snapshot[:MAX_NEW] if isinstance(snapshot, list) else []:
            peer = _snapshot_peer(entry)
            if peer is None:
                skipped += 1
                continue
            self._heard_of(peer[0], peer[1], now, probe=False)
        if skipped:
            self.log.warning("ignored %d invalid entries in %s", skipped, self._peers_file())
        if self.new:
            self.log.info("restored %d peers from the last snapshot", len(self.new))

    def _forget(self, addr: Address) -> None:
        if self.new.pop(addr, None) is not None:
            return
        del self.tried[addr]
        pos = self._tried_pos.pop(addr)
        last = self._tried_list.pop()
        if last != addr:
            self._tried_list[pos] = last
            self._tried_pos[last] = pos

    def _random_tried(self, count: int, exclude: tuple[Address, ...]) -> list[Address]:
        """Up to `count` distinct random tried peers, none in `exclude`, in O(count)."""
        eligible = len(self._tried_list) - sum(1 for a in set(exclude) if a in self._tried_pos)
        chosen: list[Address] = []
        while len(chosen) < min(count, eligible):
            addr = self._tried_list[self.rng.randrange(len(self._tried_list))]
            if addr not in exclude and addr not in chosen:
                chosen.append(addr)
        return chosen

    def _random_new(self, count: int) -> list[Address]:
        """Up to `count` distinct random addresses of the new table (a copy of at most MAX_NEW keys, once per keep-alive)."""
        if len(self.new) <= count:
            return list(self.new)
        return self.rng.sample(list(self.new), count)

    def _entry(self, addr: Address) -> PeerInfo:
        """The entry of `addr` in whichever table holds it."""
        info = self.tried.get(addr)
        return info if info is not None else self.new[addr]

    def _send(self, message: WireMessage, addr: Address) -> None:
        tell(self.ctx.registry.network(), lambda network: network.send.defer(message, addr))
