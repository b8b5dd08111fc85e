"""GossipManager: membership. Keeps the bounded peer table and seen-id set.

Answers GOSSIP to the originator named inside the message, forwards a new id
once to at most 3 random tracked peers (never back to the originator), sends the
keep-alive and drops peers that have been silent too long. Both tables are
bounded (a cap and a TTL) so a flood of fake gossipers can't exhaust memory.
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

MAX_PEERS = 1024
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
RESOLVE_TIMEOUT = 2.0
# Catch-up on first sight: a newly learned peer gets our GOSSIP (some peers learn
# us only from one) and a STATS (a longer chain there starts a round at once).
# Bounded for the whole node, since a flood of forged gossip names new "peers".
GREET_RATE = 20.0
GREET_BURST = 40.0


@dataclass
class PeerInfo:
    name: str
    last_seen: float
    first_seen: float


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
    def __init__(self, ctx: NodeContext, name: str = "GossipManager", clock: Any = time.monotonic, rng: random.Random | None = None) -> None:
        super().__init__(ctx, name)
        self.clock = clock
        self.rng = rng or random.Random()
        self.peers: OrderedDict[Address, PeerInfo] = OrderedDict()  # oldest-seen first
        # The same addresses in a list (with positions) for O(1) random picks:
        # forwarding must not cost O(peers) per gossip under a flood.
        self._peer_list: list[Address] = []
        self._peer_pos: dict[Address, int] = {}
        self._forwards = TokenBuckets(FORWARD_RATE, FORWARD_BURST, max_keys=1)
        self._greetings = TokenBuckets(GREET_RATE, GREET_BURST, max_keys=1)
        self.seen_ids: OrderedDict[str, float] = OrderedDict()
        self.well_known: list[Address] = []
        self._unresolved: list[tuple[str, int]] = []
        self._heard_from: set[Address] = set()  # well-known peers that have answered
        self._warned_silent: set[Address] = set()

    def on_start(self) -> None:
        cfg = self.ctx.config
        self._unresolved = list(cfg.peers)
        self._resolve_well_known(warn=True)
        self._load_peers()
        self._heard_from.clear()  # restored peers must answer again to count as heard
        if self.ctx.config.peers:
            self.every(WELL_KNOWN_GRACE, "check_well_known")
        self.every(cfg.gossip_interval, "keep_alive")
        # Expire on its own short timer so a silent peer goes at ~60 s, not up to 90.
        self.every(min(EXPIRE_INTERVAL, cfg.peer_timeout / 4), "expire")
        self.keep_alive()

    def release(self) -> None:
        self._save_peers()

    # ---------------------------------------------------------- protocol

    def keep_alive(self) -> None:
        """GOSSIP with a fresh id to the well-known peers and every tracked peer; expire old entries."""
        self.expire()
        if self._unresolved:
            self._resolve_well_known(warn=False)  # DNS may be back
        cfg = self.ctx.config
        gossip = Gossip(cfg.host, cfg.public_port, str(uuid.uuid4()), cfg.name)
        self._remember_id(gossip.id)
        targets = dict.fromkeys(self.well_known)
        targets.update(dict.fromkeys(self.peers))
        for addr in targets:
            self._send(gossip, addr)
        self._save_peers()

    def _resolve_well_known(self, warn: bool) -> None:
        """Resolve the well-known peers not resolved yet; warn (once, at start) for failures."""
        pending, self._unresolved = self._unresolved, []
        for (host, port), addr in zip(pending, resolve_all(pending)):
            if addr is None:
                self._unresolved.append((host, port))
                if warn:
                    self.log.warning("well-known peer %s:%d cannot be resolved; running without it, retrying every keep-alive", host, port)
            elif addr not in self.well_known:
                self.well_known.append(addr)
                if not warn:
                    self.log.info("well-known peer %s:%d resolved to %s:%d", host, port, *addr)

    def check_well_known(self) -> None:
        """One warning per well-known peer that has not answered yet; we keep trying."""
        for addr in self.well_known:
            if addr not in self._heard_from and addr not in self._warned_silent:
                self._warned_silent.add(addr)
                self.log.warning("well-known peer %s:%d has not answered in %.0fs; still trying", addr[0], addr[1], WELL_KNOWN_GRACE)

    def on_gossip(self, gossip: Gossip, source: Address) -> None:
        now = self.clock()
        if gossip.id in self.seen_ids:
            return
        self._remember_id(gossip.id, now)
        originator = (gossip.host, gossip.port)
        if originator == self._own_address() or gossip.port == 0:
            return
        cfg = self.ctx.config
        self._send(GossipReply(cfg.host, cfg.public_port, cfg.name), originator)
        for addr in self._random_peers(FORWARD_FANOUT, exclude=(originator, source)):
            if not self._forwards.allow(None, 1, now):
                self.ctx.metrics.dropped.labels(reason="gossip_forward_limited").inc()
                break
            self._send(gossip, addr)
        self._touch(originator, gossip.name, now)

    def on_gossip_reply(self, reply: GossipReply, source: Address) -> None:
        if reply.port == 0:
            return
        self._touch((reply.host, reply.port), reply.name, self.clock())

    def broadcast(self, message: WireMessage) -> None:
        """Send `message` to every tracked peer (and the well-known ones)."""
        targets = dict.fromkeys(self.well_known)
        targets.update(dict.fromkeys(self.peers))
        for addr in targets:
            self._send(message, addr)

    def peer_addresses(self) -> list[Address]:
        """Peers to ask in a consensus round: tracked peers and the well-known ones."""
        self.expire()
        # Well-known peers first, then the most recently heard from: a caller that
        # can only ask some (consensus asks at most 64) asks the likeliest alive.
        targets = dict.fromkeys(self.well_known)
        targets.update(dict.fromkeys(reversed(self.peers)))
        return list(targets)

    def peer_table(self) -> list[dict[str, Any]]:
        """For ops: each peer with its name and seconds since last heard from."""
        now = self.clock()
        return [
            {"host": host, "port": port, "name": info.name, "last_seen_age": round(now - info.last_seen, 3)}
            for (host, port), info in self.peers.items()
        ]

    def expire(self) -> None:
        """Drop peers silent for longer than the peer timeout and gossip ids past their TTL."""
        now = self.clock()
        timeout = self.ctx.config.peer_timeout
        while self.peers:
            addr, info = next(iter(self.peers.items()))
            if now - info.last_seen <= timeout:
                break
            self._forget(addr)
            self.log.info("dropped silent peer %s:%d (%s)", addr[0], addr[1], info.name)
        while self.seen_ids:
            gossip_id, seen_at = next(iter(self.seen_ids.items()))
            if now - seen_at <= SEEN_ID_TTL:
                break
            del self.seen_ids[gossip_id]
        self.ctx.metrics.peers.set(len(self.peers))

    # ---------------------------------------------------------- internals

    def _own_address(self) -> Address:
        return (self.ctx.config.host, self.ctx.config.public_port)

    def _remember_id(self, gossip_id: str, now: float | None = None) -> None:
        self.seen_ids[gossip_id] = self.clock() if now is None else now
        self.seen_ids.move_to_end(gossip_id)
        while len(self.seen_ids) > MAX_SEEN_IDS:
            self.seen_ids.popitem(last=False)

    def _greet(self, addr: Address, now: float) -> None:
        """A peer seen for the first time: our GOSSIP and a STATS, so either side that is behind catches up."""
        if not self._greetings.allow(None, 1, now):
            self.ctx.metrics.dropped.labels(reason="greeting_limited").inc()
            return
        cfg = self.ctx.config
        gossip = Gossip(cfg.host, cfg.public_port, str(uuid.uuid4()), cfg.name)
        self._remember_id(gossip.id, now)
        self._send(gossip, addr)
        self._send(Stats(), addr)

    def _touch(self, addr: Address, name: str, now: float, greet: bool = True) -> None:
        if addr == self._own_address():
            return
        self._heard_from.add(addr)
        info = self.peers.pop(addr, None)
        if info is None:
            info = PeerInfo(name=name, last_seen=now, first_seen=now)
            self._peer_pos[addr] = len(self._peer_list)
            self._peer_list.append(addr)
            self.log.debug("new peer %s:%d (%s)", addr[0], addr[1], name)
            if greet:
                self._greet(addr, now)
        info.last_seen, info.name = now, name
        self.peers[addr] = info  # most recently seen last
        while len(self.peers) > MAX_PEERS:
            self._forget(next(iter(self.peers)))  # evict the longest-silent peer
        self.ctx.metrics.peers.set(len(self.peers))

    def _peers_file(self) -> Path:
        return Path(self.ctx.config.data_dir) / PEERS_FILENAME

    def _save_peers(self) -> None:
        """Snapshot the peer table (atomically), so a restart doesn't forget the network."""
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
        """Peers from the last snapshot; each must be heard from again within the peer timeout."""
        try:
            snapshot = json.loads(self._peers_file().read_text())
        except (OSError, ValueError):
            return
        now = self.clock()
        skipped = 0
        for entry in snapshot[:MAX_PEERS] if isinstance(snapshot, list) else []:
            peer = _snapshot_peer(entry)
            if peer is None:
                skipped += 1
                continue
            self._touch(peer[0], peer[1], now, greet=False)
        if skipped:
            self.log.warning("ignored %d invalid entries in %s", skipped, self._peers_file())
        if self.peers:
            self.log.info("restored %d peers from the last snapshot", len(self.peers))

    def _forget(self, addr: Address) -> None:
        del self.peers[addr]
        pos = self._peer_pos.pop(addr)
        last = self._peer_list.pop()
        if last != addr:
            self._peer_list[pos] = last
            self._peer_pos[last] = pos

    def _random_peers(self, count: int, exclude: tuple[Address, ...]) -> list[Address]:
        """Up to `count` distinct random tracked peers, none in `exclude`, in O(count)."""
        eligible = len(self._peer_list) - sum(1 for a in set(exclude) if a in self._peer_pos)
        chosen: list[Address] = []
        while len(chosen) < min(count, eligible):
            addr = self._peer_list[self.rng.randrange(len(self._peer_list))]
            if addr not in exclude and addr not in chosen:
                chosen.append(addr)
        return chosen

    def _send(self, message: WireMessage, addr: Address) -> None:
        tell(self.ctx.registry.network(), lambda network: network.send.defer(message, addr))
