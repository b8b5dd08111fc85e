"""NetworkIO: owns the UDP socket.

A reader thread blocks on `recvfrom` (with a timeout so it can stop), decodes with
the pure codec and routes each typed message to the actor that handles its type.
Sending is a fire-and-forget `send` message to this actor. It never waits on
another actor, so a slow or restarting actor can't stall the socket.

Every reply it sends is charged its real size to its destination IP (net/ratelimit.py):
at most 3x what that IP sent us until it has answered a STATS or GOSSIP we sent it
(past an allowance of 512 KB per IP per 10 minutes and 1 MB per minute for all
unvalidated IPs together, so a peer that never validates still syncs), and token
buckets per IP and in all; a request whose smallest reply is already over budget
is dropped on arrival. CONSENSUS, which makes the node ask every peer, is limited
per source IP and in all on arrival (ConsensusRunner coalesces what gets through).
Only IPv4 literals ever reach `sendto()` (no lookups, no TypeError), and any send
error is counted, never raised.

The reader is an owned thread (`NetworkIO.reader`, runtime/threads.py): if it dies,
NetworkIO fails and is restarted, so a socket nobody reads never hides behind a
healthy-looking actor. Transient OS errors (EMFILE, ENOBUFS, ENOMEM, ...) in
`select`/`recvfrom` are not a death: they are retried with backoff, counted (the
thread's `transient_errors` in /health, `node_thread_transient_errors_total`) and
logged at most once per 10 s with a count. Any other error ends the thread.
"""
from __future__ import annotations

import functools
import ipaddress
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from actors.base import NodeActor
from runtime.context import NodeContext, Registry, tell
from runtime.interfaces import DatagramApi
from runtime.threads import Backoff, OwnedThread, checkpoint, is_transient
from net.address import valid_port
from net.ratelimit import AntiAmplification, TokenBuckets
from messages.wire import (
    Announce,
    Consensus,
    DecodeError,
    GetBlock,
    GetBlockReply,
    Gossip,
    GossipReply,
    NewWord,
    Stats,
    StatsReply,
    WireMessage,
    decode,
    encode,
    type_name,
)
from net.address import Address

RECV_BUFFER = 65536
READ_TIMEOUT = 0.2  # how often the reader checks it should stop
HELD_RETRY = 0.02  # how often datagrams held for a restarting actor are retried
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
READ_BATCH = 64
# Retrying a transient error in the reader: 10 ms doubling to this (reset by a clean turn).
TRANSIENT_BACKOFF_MAX = 0.25

# Requests that make us reply, and the smallest reply each can cause: a request is
# dropped on arrival (before any actor works on it) when its destination can't be
# sent even that much. Replies are charged their real size when sent (see send_many).
MIN_REPLY_BYTES = {"STATS": 45, "GET_BLOCK": 45, "GOSSIP": 45}
REPLY_KINDS = frozenset({"STATS_REPLY", "GET_BLOCK_REPLY", "GOSSIP_REPLY"})
PROBE_KINDS = frozenset({"STATS", "GOSSIP"})  # an answer to one of these validates the address
PROBES_PER_SECOND = 100  # STATS probes sent instead of replies that were over budget, all IPs together
PROBES_BURST = 200
GOSSIP_TOTAL_PER_SECOND = 200  # GOSSIPs handled per second from all claimed originators together
GOSSIP_TOTAL_BURST = 1000
# NEW_WORD: per source IP and in all (words per second, burst), checked on arrival.
WORDS_PER_SOURCE_RATE, WORDS_PER_SOURCE_BURST = 20.0, 100.0
WORDS_TOTAL_RATE, WORDS_TOTAL_BURST = 500.0, 2000.0
# CONSENSUS: per source IP and in all (datagrams per second, burst), checked on arrival.
# An honest operator or peer sends one now and then; each that gets through only asks
# ConsensusRunner for a round, and it runs at most one per CONSENSUS_ROUND_GAP.
CONSENSUS_PER_SOURCE_RATE, CONSENSUS_PER_SOURCE_BURST = 0.5, 4.0
CONSENSUS_TOTAL_RATE, CONSENSUS_TOTAL_BURST = 5.0, 20.0
# Replies beyond 3x to addresses that never validated: per IP, and all such IPs together.
GRACE_PER_IP_BYTES, GRACE_PER_IP_PERIOD = 512 * 1024, 600.0
GRACE_TOTAL_BYTES, GRACE_TOTAL_PERIOD = 1024 * 1024, 60.0
MAX_ACTOR_QUEUE = 2000
MAX_HELD = 1000  # actor messages kept while their actor restarts ...
HOLD_SECONDS = 3.0  # ... for at most this long  # messages; past this a flood is shed at the socket

@dataclass(frozen=True)
class Route:
    """Where one kind of decoded datagram goes: the actor (found by interface) and
    how it is told a batch of them (one actor message per batch read for the kinds
    that arrive in bursts, one per datagram for the rest)."""

    actor: str  # for logs and metrics
    find: Callable[[Registry], Any]
    tell: Callable[[Any, list[tuple[Any, ...]]], None]


def _each(method: Callable[[Any], Any]) -> Callable[[Any, list[tuple[Any, ...]]], None]:
    """Tell one message per datagram: `method(proxy)` is the proxy's bound method."""
    def tell_each(proxy: Any, batch: list[tuple[Any, ...]]) -> None:
        bound = method(proxy)
        for args in batch:
            bound.defer(*args)
    return tell_each


ROUTES: dict[type, Route] = {
    Stats: Route("ChainKeeper", Registry.chain, lambda chain, batch: chain.on_stats_batch.defer(batch)),
    GetBlock: Route("ChainKeeper", Registry.chain, lambda chain, batch: chain.on_get_block_batch.defer(batch)),
    Announce: Route("ChainKeeper", Registry.chain, _each(lambda chain: chain.on_announce)),
    NewWord: Route("ChainKeeper", Registry.chain, lambda chain, batch: chain.on_new_words.defer(batch)),
    Gossip: Route("GossipManager", Registry.gossip, _each(lambda gossip: gossip.on_gossip)),
    GossipReply: Route("GossipManager", Registry.gossip, _each(lambda gossip: gossip.on_gossip_reply)),
    StatsReply: Route("ConsensusRunner", Registry.consensus, _each(lambda consensus: consensus.on_stats_reply)),
    GetBlockReply: Route("ConsensusRunner", Registry.consensus, lambda consensus, batch: consensus.on_get_block_replies.defer(batch)),
    Consensus: Route("ConsensusRunner", Registry.consensus, _each(lambda consensus: consensus.on_consensus)),
}


@functools.lru_cache(maxsize=4096)
def _is_ipv4_literal(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address) and "%" not in host
    except ValueError:
        return False


def _sendable(addr: object) -> bool:
    """A (IPv4 literal, port 1..65535) pair: what our AF_INET socket can send to without a lookup."""
    if not isinstance(addr, tuple) or len(addr) != 2:
        return False
    host, port = addr
    return isinstance(host, str) and valid_port(port) and _is_ipv4_literal(host)


def _arguments(message: WireMessage, addr: Address) -> tuple[Any, ...]:
    """The handler's arguments for a decoded datagram (see ROUTES for the handler)."""
    if isinstance(message, Stats):
        return (addr,)
    if isinstance(message, GetBlock):
        return (message.height, addr)
    if isinstance(message, Announce):
        return (message.block, addr)
    if isinstance(message, NewWord):
        return (message.word, addr[0])
    if isinstance(message, Consensus):
        return ()
    return (message, addr)


class NetworkIO(NodeActor, DatagramApi):
    # The UDP socket has one owner: never two instances; a hang ends the node (exit 1).
    owns_shared_state = True
    message_budget = 10.0

    def __init__(self, ctx: NodeContext, name: str = "NetworkIO") -> None:
        super().__init__(ctx, name)
        self.sock: socket.socket | None = None
        self._reader: OwnedThread | None = None
        self._stopping = threading.Event()
        self.address: Address | None = None
        cfg = ctx.config
        # Owned by the reader thread only.
        self._held: list[tuple[float, Route, list[tuple[Any, ...]]]] = []
        # Reply budgets, all keyed by destination IP and charged real bytes. Shared by
        # the reader thread (credits, early drops) and the actor (charges): one lock.
        self._budget_lock = threading.Lock()
        self._amplification = AntiAmplification(
            factor=cfg.amplification_factor,
            grace_bytes=GRACE_PER_IP_BYTES, grace_period=GRACE_PER_IP_PERIOD,
            total_grace_bytes=GRACE_TOTAL_BYTES, total_grace_period=GRACE_TOTAL_PERIOD)
        self._reply_buckets = TokenBuckets(cfg.reply_rate_bytes, cfg.reply_burst_bytes)
        self._total_replies = TokenBuckets(cfg.total_reply_rate_bytes, cfg.total_reply_rate_bytes / 4, max_keys=1)
        self._gossip_buckets = TokenBuckets(cfg.gossip_reply_rate_bytes, cfg.gossip_reply_burst_bytes)
        # GOSSIP from many claimed originators at once: bounded all together too (a count).
        self._gossip_total = TokenBuckets(GOSSIP_TOTAL_PER_SECOND, GOSSIP_TOTAL_BURST, max_keys=1)
        self._probes_total = TokenBuckets(PROBES_PER_SECOND, PROBES_BURST, max_keys=1)
        self._probe_data = encode(Stats())
        # Reader thread only.
        self._word_buckets = TokenBuckets(WORDS_PER_SOURCE_RATE, WORDS_PER_SOURCE_BURST)
        self._words_total = TokenBuckets(WORDS_TOTAL_RATE, WORDS_TOTAL_BURST, max_keys=1)
        self._consensus_buckets = TokenBuckets(CONSENSUS_PER_SOURCE_RATE, CONSENSUS_PER_SOURCE_BURST)
        self._consensus_total = TokenBuckets(CONSENSUS_TOTAL_RATE, CONSENSUS_TOTAL_BURST, max_keys=1)

    def on_start(self) -> None:
        self.sock = self._bind()
        self.address = self.sock.getsockname()[:2]
        self._reader = self.spawn("reader", self._read_loop, self.sock)
        self.log.info("listening on udp %s:%d", *self.address)

    def _bind(self) -> socket.socket:
        """Bind the configured port. No retry: a predecessor closes its socket before
        the supervisor hears it ended (Terminated after release), so the port is free."""
        cfg = self.ctx.config
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
            sock.bind((cfg.bind_host, cfg.port))
            # Non-blocking: the reader waits in select() (with a timeout so it can
            # stop) and then drains every datagram already queued without waiting.
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def release(self) -> None:
        self._stopping.set()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self._reader is not None:
            self._reader.join(timeout=2 * READ_TIMEOUT + TRANSIENT_BACKOFF_MAX + 1)  # (a no-op from the reader itself)
        self._reader = None

    # ---------------------------------------------------------- protocol

    def send(self, message: WireMessage, addr: Address) -> None:
        """Encode and send one datagram. Any failure (OS, encoding, a bad address) is counted, not raised."""
        self.send_many([(message, addr)])

    def send_many(self, messages: list[tuple[WireMessage, Address]]) -> None:
        """Send a batch in one actor message (the sync sends windows of requests)."""
        now = time.monotonic()
        for message, addr in messages:
            try:
                data, kind = encode(message), type_name(message)
            except Exception as exc:  # noqa: BLE001 - a message we can't encode is dropped, never fatal
                self._send_failed("unencodable", message, addr, exc)
                continue
            if kind in REPLY_KINDS and _sendable(addr):
                refused = self._charge_reply(kind, addr[0], len(data), now)
                if refused:
                    self.ctx.metrics.dropped.labels(reason=refused).inc()
                    if refused == "amplification_limit":
                        self._probe_instead(addr, now)
                    continue
            if kind in PROBE_KINDS and _sendable(addr):
                # Noted before sending: the answer may be read (by the reader thread)
                # before send_raw even returns.
                with self._budget_lock:
                    self._amplification.probe_sent(addr[0], now)
            self.send_raw(data, addr, kind)

    def _probe_instead(self, addr: Address, now: float) -> None:
        """Send a bare STATS to an unvalidated address whose request we could not answer in full.

        A real peer answers it and is validated (net/ratelimit.py), so its next request
        is answered whole; that is how a peer that asks before it is asked gets in. It is
        charged to the address's 3x credit like any reply, sent at most once per
        validation window per IP and PROBES_PER_SECOND in all, so a forged source gets
        its victim at most one datagram no bigger than the request, now and then.
        """
        if not _sendable(addr):
            return
        data = self._probe_data
        with self._budget_lock:
            if not self._amplification.wants_probe(addr[0], now) or not self._probes_total.allow(None, 1, now):
                return
            if not self._amplification.spend(addr[0], len(data), now):
                return
            self._amplification.probe_sent(addr[0], now)
        self.send_raw(data, addr, "STATS")

    def _charge_reply(self, kind: str, ip: str, nbytes: int, now: float) -> str | None:
        """Charge a reply its real size to its destination IP; the drop reason if it is over budget."""
        with self._budget_lock:
            if not self._amplification.spend(ip, nbytes, now):
                return "amplification_limit"
            if kind == "GOSSIP_REPLY" and not self._gossip_buckets.allow(ip, nbytes, now):
                return "rate_limited"
            if not self._reply_buckets.allow(ip, nbytes, now) or not self._total_replies.allow(None, nbytes, now):
                return "rate_limited"
        return None

    def health_details(self) -> dict[str, Any]:
        """In /health: how many IPs are validated (get full reply budgets rather than 3x what they sent),
        and the bytes sent beyond 3x to unvalidated ones (the allowance; capped per IP and in all)."""
        with self._budget_lock:
            beyond = int(self._amplification.grace_spent)
        return {"validated_addresses": self.validated_addresses(), "unvalidated_bytes_beyond_3x": beyond}

    def validated_addresses(self) -> int:
        """How many IPs are validated now (answered a STATS or GOSSIP we sent)."""
        with self._budget_lock:
            return self._amplification.validated_count()

    def send_raw(self, data: bytes, addr: Address, kind: str) -> bool:
        """Send bytes as they are (no budget: callers of replies use send/send_many). True if sent."""
        if self.sock is None:
            return False
        if not _sendable(addr):
            # Only IPv4 literals reach sendto(): a name would be resolved here, in the
            # actor that owns the socket, and odd text raises TypeError/UnicodeError.
            self._send_failed("bad_address", kind, addr, None)
            return False
        try:
            self.sock.sendto(data, addr)
        except Exception as exc:  # noqa: BLE001 - OSError mostly; anything else must not kill the socket's owner
            self._send_failed("send_error", kind, addr, exc)
            return False
        self.ctx.metrics.datagrams_out.labels(type=kind).inc()
        return True

    def _send_failed(self, reason: str, what: object, addr: object, exc: BaseException | None) -> None:
        self.ctx.metrics.dropped.labels(reason=reason).inc()
        self.log.debug("send %s to %s dropped (%s): %r", type(what).__name__ if not isinstance(what, str) else what, _address_text(addr), reason, exc)

    # ---------------------------------------------------------- reader thread

    def _read_loop(self, sock: socket.socket) -> None:
        """The reader thread: until release() sets _stopping (then a clean return).

        A transient OS error is retried after a backoff; any other exception ends
        the thread, which fails this actor (the supervisor restarts it).
        """
        backoff = Backoff(cap=TRANSIENT_BACKOFF_MAX)
        while not self._stopping.is_set():
            checkpoint()
            try:
                readable, _, _ = select.select([sock], [], [], HELD_RETRY if self._held else READ_TIMEOUT)
            except (OSError, ValueError) as exc:  # ValueError: the socket was closed (by release())
                if self._stopping.is_set():
                    return
                if is_transient(exc):
                    self.transient_error("select", exc, backoff, self._stopping)
                    continue
                raise
            if self._held:
                self._deliver_held()
            if not readable:
                backoff.reset()
                continue
            batch: list[tuple[bytes, Any]] = []
            failed = False
            while len(batch) < READ_BATCH:
                try:
                    batch.append(sock.recvfrom(RECV_BUFFER))
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionRefusedError:
                    continue  # ICMP port unreachable from an earlier send: not a reader problem
                except OSError as exc:
                    if self._stopping.is_set():
                        return
                    if not is_transient(exc):
                        raise
                    self.transient_error("recvfrom", exc, backoff, self._stopping)
                    failed = True
                    break
            if not failed:
                backoff.reset()  # a turn without an error: the next one starts from the shortest wait
            if batch:
                try:
                    self._dispatch(batch)
                except Exception:  # noqa: BLE001 - the reader must outlive any one bad batch
                    self.ctx.metrics.dropped.labels(reason="internal_error").inc(len(batch))
                    self.log.exception("dropped a batch of %d datagrams after an internal error", len(batch))

    def _dispatch(self, datagrams: list[tuple[bytes, Any]]) -> None:
        """Decode a batch; send hot message kinds to their actor as one message per kind."""
        metrics = self.ctx.metrics
        now = time.monotonic()
        batches: dict[Route, list[tuple[Any, ...]]] = {}
        for data, addr in datagrams:
            try:
                message = decode(data)
            except DecodeError as exc:
                metrics.malformed.labels(reason=exc.kind).inc()
                self.log.debug("malformed datagram from %s: %s", _address_text(addr), exc)
                continue
            kind = type_name(message)
            metrics.datagrams_in.labels(type=kind).inc()
            if kind in MIN_REPLY_BYTES:
                refused = self._request_refused(message, kind, len(data), addr[0], now)
                if refused:
                    metrics.dropped.labels(reason=refused).inc()
                    if refused == "amplification_limit" and not isinstance(message, Gossip):
                        self._probe_instead(addr[:2], now)  # (a GOSSIP's reply goes to the host it names)
                    continue
            elif isinstance(message, (StatsReply, GossipReply)):
                with self._budget_lock:
                    self._amplification.answered(addr[0], now)
            elif isinstance(message, NewWord):
                if not self._word_buckets.allow(addr[0], 1, now) or not self._words_total.allow(None, 1, now):
                    metrics.dropped.labels(reason="word_rate_limited").inc()
                    continue
            elif isinstance(message, Consensus):
                if not self._consensus_buckets.allow(addr[0], 1, now) or not self._consensus_total.allow(None, 1, now):
                    metrics.dropped.labels(reason="consensus_rate_limited").inc()
                    continue
            batches.setdefault(ROUTES[type(message)], []).append(_arguments(message, addr[:2]))
        for route, batch in batches.items():
            self._deliver(route, batch)

    def _request_refused(self, message: WireMessage, kind: str, nbytes: int, source_ip: str, now: float) -> str | None:
        """Credit the reply's destination with this request's bytes (QUIC's 3x rule), and
        drop the request at once (None: keep it) if even the smallest reply would be over budget."""
        dest_ip = message.host if isinstance(message, Gossip) else source_ip
        need = MIN_REPLY_BYTES[kind]
        with self._budget_lock:
            self._amplification.credit(dest_ip, nbytes)
            if self._amplification.available(dest_ip, now) < need:
                return "amplification_limit"
            if self._reply_buckets.available(dest_ip, now) < need or self._total_replies.available(None, now) < need:
                return "rate_limited"
            if isinstance(message, Gossip):
                if self._gossip_buckets.available(dest_ip, now) < need or not self._gossip_total.allow(None, 1, now):
                    return "rate_limited"
        return None

    def _deliver(self, route: Route, batch: list[tuple[Any, ...]]) -> None:
        """Hand datagrams to an actor, unless it is down or already swamped."""
        proxy = route.find(self.ctx.registry)
        if proxy is not None and proxy.actor_ref.actor_inbox.qsize() > MAX_ACTOR_QUEUE:
            self.ctx.metrics.dropped.labels(reason="overloaded").inc(len(batch))
            return
        if not tell(proxy, lambda proxy: route.tell(proxy, batch)):
            self._hold(route, batch)

    def _hold(self, route: Route, batch: list[tuple[Any, ...]]) -> None:
        """Keep datagrams for an actor that is restarting, briefly and boundedly,
        so a crash of ChainKeeper (say) doesn't also cost the requests in flight."""
        if len(self._held) >= MAX_HELD:
            self.ctx.metrics.dropped.labels(reason="actor_unavailable").inc(len(batch))
            return
        self._held.append((time.monotonic(), route, batch))

    def _deliver_held(self) -> None:
        """Retry held datagrams (oldest first); drop those older than HOLD_SECONDS."""
        held, self._held = self._held, []
        now = time.monotonic()
        for since, route, batch in held:
            if now - since > HOLD_SECONDS:
                self.ctx.metrics.dropped.labels(reason="actor_unavailable").inc(len(batch))
            elif not tell(route.find(self.ctx.registry), lambda proxy: route.tell(proxy, batch)):
                self._held.append((since, route, batch))


def _address_text(addr: object) -> str:
    """`host:port` for the log (an address from the socket or a peer, possibly malformed)."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return repr(addr)
