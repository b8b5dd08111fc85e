"""MinerGateway: hands out work to external miners over TCP and takes back their nonces.

This is how a node grows past one machine: `run_node.py miner --connect HOST:PORT
--token T` on another machine runs the same hash loop (mining/worker.py) in
its own worker processes and relays over line-delimited JSON (mining/protocol.py,
documented in docs/mining.md).

Shape, and why:

* Sockets are served by threads (an acceptor, one reader per connection) that only
  read and parse; every decision (work, verification, bookkeeping, replies) is a
  message `tell`-ed to the actor, so the actor's state has one owner.
* Every authenticated client has a line budget (lines/s and bytes/s with bursts,
  `LineBudget`, from the node's config). Lines go to the actor in batches, at most
  one batch per client waiting in its inbox: the reader holds the next until the
  actor has taken the last, so however fast a client writes, the inbox holds at
  most a batch per client. A client ahead of its budget is not read at all: the
  reader keeps at most one read's worth of its lines and stops calling recv(), so
  the kernel's buffers fill and TCP flow control slows the sender, at no cost to
  us. One that stays ahead for `miner_budget_grace` seconds (it never once lets
  its socket drain) is told so and dropped.
* A client's claimed hash rate is judged per token and source IP across
  reconnects (`ClaimLedger`): its claims, the work units it was given and the
  solutions it returned add up over every connection, so a liar can't restart
  the doubt by reconnecting.
* Nothing a remote miner says is trusted: the token is checked with
  `hmac.compare_digest` before anything else, lines are bounded and garbage is
  counted (too much of it and the connection is dropped), and every submitted
  nonce is turned into a block that `check_block` verifies before ChainKeeper sees it.
* ChainKeeper tells the gateway about every tip change (`on_tip_changed`), and it
  pushes new work to every connected miner at once; stale work ids are then
  refused. A slow poll of the tip backs this up in case a notice was missed
  (e.g. while the gateway was restarting).
* The acceptor and every connection's reader are owned threads
  (`MinerGateway.accept`, `MinerGateway.conn-<n>`, runtime/threads.py): one that
  dies of an unexpected exception (a bug) fails the gateway, which is restarted.
  The acceptor survives transient errors (EMFILE/ENFILE when out of descriptors,
  ENOBUFS, ECONNABORTED): it retries with backoff, counts them (its thread's
  `transient_errors` in /health, `node_thread_transient_errors_total`) and logs at
  most one line per 10 s with a count. A connection's own OS errors (a peer reset,
  a timeout) just end that connection.
* Health line: a connection whose FIRST line is `{"type": "health"}` is answered
  `{"type": "health_ok"}` and closed, without a token, without telling the actor
  and without a log line. The node's end-to-end probe uses it: an answer proves
  that the listener, the acceptor and a connection thread work.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import pykka

from actors.base import NodeActor
from runtime.context import NodeContext
from runtime.interfaces import ChainProxy, GatewayApi, TipListener
from actors.miner import WorkUnit, usable_words
from mining.protocol import (AUTH_TIMEOUT, MAX_LINE_BYTES, ClaimLedger, Claims, LineBudget, LineReader, ProtocolError,
                             decode_line, encode_line)
from runtime.threads import Backoff, OwnedThread, checkpoint, current_thread, is_transient
from chain.block import MAX_NONCE_CHARS
from mining.worker import MAX_TAG_CHARS
from chain.block import MAX_MESSAGES, Block, InvalidBlock, check_block, compute_hash, hash_prefix
from messages.internal import TipChanged

T = TypeVar("T")

ASK_TIMEOUT = 1.0
TIP_POLL_INTERVAL = 1.0  # a backstop: tip changes are pushed by ChainKeeper
REFRESH_INTERVAL = 2.0  # fresh timestamp and words for everyone
MAX_CLIENTS = 64  # authenticated miners
# Connections that have not authenticated yet have a pool of their own, so they
# can never take an authenticated miner's place: when it is full the oldest
# pending one is dropped for the newcomer (a real miner authenticates at once).
MAX_PENDING = 16
AUTH_PHASE_SECONDS = 3.0
MAX_OUTBOX_BYTES = 64 * 1024  # queued bytes to one miner; past this it is not reading: dropped
SOCKET_SNDBUF = 32 * 1024  # the kernel's share of a miner's unread bytes, kept small too
# The kernel's buffer for what a miner sent and we have not read: small, so a client
# we stopped reading (over its budget) is held back by TCP after a few KiB, not MiBs.
SOCKET_RCVBUF = 64 * 1024
RECV_BYTES = 16 * 1024  # one read from a client: its most we hold while it is ahead of its budget
MAX_BATCH = 64  # lines in one message to the actor
# Refusals that say nothing about a miner (a connection that never spoke): logged at
# most once per 10 s with a count, so a flood of them can't fill the log.
QUIET_REFUSALS = frozenset({"closed before authenticating", "no auth line in time"})
MAX_GARBAGE = 50  # malformed lines a connection may send before it is dropped
IDLE_TIMEOUT = 120.0  # clients report hashes every second; silence this long is a dead peer
KEPT_WORK_PER_CLIENT = 4
RATE_WINDOW = 5.0
CLIENT_ID_SPACE = 16**5  # keeps "x<id>-<rand>" + a worker suffix within MAX_TAG_CHARS
ACCEPT_BACKOFF_MAX = 0.25  # retrying accept() after a transient error: 10 ms doubling to this
# The health line (first line of a connection) and its answer; see the module docstring.
HEALTH_LINE = {"type": "health"}
HEALTH_OK = {"type": "health_ok"}
_HEALTH_CHECK = "health check"  # _authenticate's verdict for a health line (compared by identity)


class _Client:
    """One authenticated connection. Shared by its reader thread and the actor: `send`,
    `flush` and `close` are used from both, and they lock.

    The socket is non-blocking: `send` queues the line (at most MAX_OUTBOX_BYTES
    waiting) and writes what the kernel takes now, the reader thread writes the
    rest when the socket is writable, so a miner that never reads can't block the
    actor; once its outbox is full it is dropped.
    """

    def __init__(self, sock: socket.socket, address: tuple[str, int]) -> None:
        self.sock = sock
        self.address = address
        self.id = -1  # set by the actor
        self._lock = threading.Lock()
        self._outbox = bytearray()
        self.closed = False
        self.overflowed = False
        self.drop_reason = ""  # set by the reader when it drops the client (e.g. over its budget)
        # Clear while a batch of this client's lines waits in the actor's inbox: the
        # reader sends the next only once the actor has taken it.
        self.delivered = threading.Event()
        self.delivered.set()

    def send(self, message: dict[str, Any]) -> bool:
        data = encode_line(message)
        with self._lock:
            if self.closed:
                return False
            if len(self._outbox) + len(data) > MAX_OUTBOX_BYTES:
                self.overflowed = True
                self._close_locked()
                return False
            self._outbox += data
            return self._flush_locked()

    def pending(self) -> bool:
        with self._lock:
            return bool(self._outbox) and not self.closed

    def flush(self) -> bool:
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> bool:
        while self._outbox and not self.closed:
            try:
                sent = self.sock.send(self._outbox)
            except (BlockingIOError, InterruptedError):
                return True  # the rest goes when the socket is writable
            except OSError:
                self._close_locked()
                return False
            del self._outbox[:sent]
        return not self.closed

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._outbox.clear()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread's select
        except OSError:
            pass
        self.sock.close()


@dataclass
class _ClientState:
    """What the actor knows about one client (actor thread only)."""

    client: _Client
    claims: Claims  # shared by every connection of its token and source IP (ClaimLedger)
    works: dict[int, WorkUnit] = field(default_factory=dict)
    garbage: int = 0
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    tags: dict[int, str] = field(default_factory=dict)  # work id -> the nonce tag it was given
    connected_at: float = field(default_factory=time.monotonic)


# Thread -> actor messages.
@dataclass(frozen=True, slots=True)
class _Connected:
    client: _Client


@dataclass(frozen=True, slots=True)
class _Line:
    client: _Client
    message: dict[str, Any] | None  # None: garbage
    problem: str = ""


@dataclass(frozen=True, slots=True)
class _Lines:
    """A batch of one client's lines (at most MAX_BATCH); the client's next waits until this is taken."""

    client: _Client
    lines: tuple[_Line, ...]


@dataclass(frozen=True, slots=True)
class _Disconnected:
    client: _Client


@dataclass(frozen=True, slots=True)
class _AuthRefused:
    address: tuple[str, int]
    reason: str


@dataclass(frozen=True, slots=True)
class _Template:
    """The block being mined, shared by every client's work."""

    height: int
    prev_hash: str | None
    mined_by: str
    messages: tuple[str, ...]
    timestamp: int
    prefix: bytes


class MinerGateway(NodeActor, GatewayApi, TipListener):
    """Serves external miners on ctx.config.bind_host:ctx.config.miner_listen."""
    # The listening socket has one owner: never two instances; a hang ends the node (exit 1).
    owns_shared_state = True
    message_budget = 10.0

    def __init__(self, ctx: NodeContext, name: str = "MinerGateway") -> None:
        super().__init__(ctx, name)
        if not ctx.config.miner_token:
            raise ValueError("the miner gateway needs a token (--miner-token)")
        self._token = ctx.config.miner_token.encode("utf-8")
        # Claims are remembered per (token, source IP); the key holds a fingerprint, not the token.
        self._token_key = hashlib.sha256(self._token).hexdigest()[:16]
        self._ledger = ClaimLedger()
        config = ctx.config
        self._budget_args = (config.miner_line_rate, config.miner_line_burst,
                             config.miner_byte_rate, config.miner_byte_burst)
        LineBudget(*self._budget_args, now=0.0)  # bad settings fail the start, not a reader thread
        self._grace = config.miner_budget_grace
        # Batches sent by readers and not yet handled (the inbox's share from the sockets).
        self._inbox_lock = threading.Lock()
        self._inbox = 0
        self._inbox_peak = 0
        self._throttled: set[_Client] = set()  # clients ahead of their budget now (under _inbox_lock)
        self._throttle_events = 0  # times a client got ahead of its budget and was no longer read
        self._listener: socket.socket | None = None
        self._acceptor: OwnedThread | None = None
        self._connection_seq = 0  # numbers the connection threads (conn-<n>)
        self._stopping = threading.Event()
        self._open_lock = threading.Lock()
        self._open: set[socket.socket] = set()  # every accepted socket, for release()
        self._pending: dict[socket.socket, float] = {}  # not authenticated yet, oldest first
        self._clients: dict[int, _ClientState] = {}
        self._template: _Template | None = None
        self._work_id = 0
        self._next_client_id = 1
        self._rate_gauge = ctx.metrics.miner_hashrate.labels(miner="external", backend="gateway")
        self.stats = {"submitted": 0, "accepted": 0, "rejected": 0, "auth_refused": 0, "garbage_lines": 0, "connections": 0,
                      "lines": 0, "budget_drops": 0}

    # ---------------------------------------------------------- lifecycle

    def on_start(self) -> None:
        try:
            address = (self.ctx.config.bind_host, self.ctx.config.miner_listen)
            self._listener = socket.create_server(address, family=_family(address[0]), backlog=16)
            # Accepted connections inherit it (set before any handshake, so the window fits it).
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RCVBUF)
            self._listener.settimeout(0.5)  # so the acceptor notices release()
            self._acceptor = self.spawn("accept", self._accept_loop, self.actor_ref)
            self.every(TIP_POLL_INTERVAL, self.poll_tip)
            self.every(REFRESH_INTERVAL, self.refresh_work)
        except BaseException:
            self._cancel_timers()
            self.release()
            raise
        self.log.info("accepting external miners on tcp %s:%d", *self._listener.getsockname()[:2])

    def release(self) -> None:
        """Close the listener and every connection. Idempotent."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            _shutdown(listener)  # on Linux this also wakes the acceptor's accept()
        for state in list(self._clients.values()):
            state.client.close()
        self._clients.clear()
        with self._open_lock:
            leftover = list(self._open)
            self._open.clear()
        for sock in leftover:
            _shutdown(sock)
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.join(2.0)  # (a no-op from the acceptor itself)
        self._rate_gauge.set(0)

    # ---------------------------------------------------------- public protocol

    def on_tip_changed(self, event: TipChanged) -> None:
        """ChainKeeper's notice of a new tip: new work for every connected miner now."""
        if not self._clients:
            return
        template = self._template
        if template is None or (template.height, template.prev_hash) != (event.height, event.hash):
            self._new_template(event.height, event.hash)
            self._push_all()

    def poll_tip(self) -> None:
        """Push new work as soon as ChainKeeper's tip differs from what miners are on."""
        if not self._clients:
            return
        tip = self._ask_chain(lambda chain: chain.tip())
        if tip is None:
            return
        template = self._template
        if template is None or (template.height, template.prev_hash) != tuple(tip):
            self._new_template(*tip)
            self._push_all()

    def refresh_work(self) -> None:
        """Every few seconds: a current timestamp and the queued words for everyone."""
        if not self._clients:
            return
        tip = self._ask_chain(lambda chain: chain.tip())
        if tip is not None:
            self._new_template(*tip)
            self._push_all()
        self._update_rate()

    def health_details(self) -> dict[str, Any]:
        """The gateway's part of /health: clients, hash rate (believed claims), claimed rate, outcomes."""
        listener = self._listener
        rate, claimed, doubted = self._rates()
        with self._open_lock:
            pending = len(self._pending)
        with self._inbox_lock:
            inbox, inbox_peak, throttled = self._inbox, self._inbox_peak, len(self._throttled)
            throttle_events = self._throttle_events
        return {
            "address": "%s:%d" % listener.getsockname()[:2] if listener is not None else None,
            "clients": len(self._clients),
            "pending": pending,
            "throttled_clients": throttled,  # ahead of their line budget: not being read
            "throttle_events": throttle_events,
            "inbox_batches": inbox,
            "inbox_batches_peak": inbox_peak,
            "hashrate": round(rate, 1),
            "hashrate_claimed": round(claimed, 1),
            "implausible_clients": doubted,
            **self.stats,
        }

    def port(self) -> int | None:
        """The TCP port actually bound (useful when configured as an ephemeral port)."""
        return self._listener.getsockname()[1] if self._listener is not None else None

    # ---------------------------------------------------------- thread messages

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Lines):
            try:
                state = self._clients.get(message.client.id)
                if state is not None and state.client is message.client:
                    for line in message.lines:
                        if state.client.closed:
                            break
                        self.stats["lines"] += 1
                        self._on_line(state, line)
            finally:
                with self._inbox_lock:
                    self._inbox -= 1
                message.client.delivered.set()
            return None
        if isinstance(message, _Connected):
            self._on_connected(message.client)
            return None
        if isinstance(message, _Disconnected):
            state = self._clients.get(message.client.id)
            if state is not None and state.client is message.client:
                del self._clients[message.client.id]
                if message.client.drop_reason:
                    self.stats["budget_drops"] += 1
                    self.log.warning("external miner %d (%s:%d) dropped: %s", message.client.id,
                                     *message.client.address[:2], message.client.drop_reason)
                else:
                    self.log.info("external miner %d (%s:%d) disconnected", message.client.id, *message.client.address[:2])
                self._update_rate()
            return None
        if isinstance(message, _AuthRefused):
            self.stats["auth_refused"] += 1
            if message.reason in QUIET_REFUSALS:  # scanners, descriptor floods: one line per 10 s, counted
                self._repeats.report(message.reason, logging.WARNING, "external miner connection from %s:%d refused: %s",
                                     *message.address[:2], message.reason)
            else:
                self.log.warning("external miner from %s:%d refused: %s", *message.address[:2], message.reason)
            return None
        return super().on_receive(message)

    def _on_connected(self, client: _Client) -> None:
        if self._stopping.is_set():
            client.close()
            return
        if len(self._clients) >= MAX_CLIENTS:
            client.send({"type": "error", "error": "too many miners"})
            client.close()
            return
        while self._next_client_id in self._clients or self._next_client_id == 0:
            self._next_client_id = (self._next_client_id + 1) % CLIENT_ID_SPACE
        client.id = self._next_client_id
        self._next_client_id = (self._next_client_id + 1) % CLIENT_ID_SPACE
        state = _ClientState(client, self._ledger.claims((self._token_key, client.address[0])))
        self._clients[client.id] = state
        self.stats["connections"] += 1
        self.log.info("external miner %d connected from %s:%d", client.id, *client.address[:2])
        client.send({"type": "welcome", "miner_id": client.id, "difficulty": self.ctx.config.difficulty, "tag_max": MAX_TAG_CHARS})
        if self._template is None:
            tip = self._ask_chain(lambda chain: chain.tip())
            if tip is not None:
                self._new_template(*tip)
        if self._template is not None:
            self._push(state)

    def _on_line(self, state: _ClientState, line: _Line) -> None:
        message = line.message
        if message is None:
            self._garbage(state, line.problem)
            return
        kind = message["type"]
        if kind == "submit":
            self._on_submit(state, message)
        elif kind == "hashes":
            count = message.get("count")
            if isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= 10**12:
                state.samples.append((time.monotonic(), count))
                state.claims.claimed_hashes += count
            else:
                self._garbage(state, "'count' must be a non-negative int")
        elif kind == "auth":
            state.client.send({"type": "error", "error": "already authenticated"})
        else:
            self._garbage(state, f"unknown type {kind[:40]!r}")

    def _garbage(self, state: _ClientState, problem: str) -> None:
        state.garbage += 1
        self.stats["garbage_lines"] += 1
        self.log.debug("garbage from external miner %d: %s", state.client.id, problem)
        if state.garbage > MAX_GARBAGE:
            self.log.warning("external miner %d dropped: more than %d bad lines", state.client.id, MAX_GARBAGE)
            state.client.send({"type": "error", "error": "too many bad lines"})
            state.client.close()
            return
        state.client.send({"type": "error", "error": problem or "bad line"})

    def _on_submit(self, state: _ClientState, message: dict[str, Any]) -> None:
        self.stats["submitted"] += 1
        work_id, nonce = message.get("work_id"), message.get("nonce")
        if not isinstance(work_id, int) or isinstance(work_id, bool) or not isinstance(nonce, str):
            self._garbage(state, "submit needs an int 'work_id' and a string 'nonce'")
            return
        work = state.works.get(work_id)
        if work is None:
            self._result(state, work_id, False, "unknown or expired work")
            return
        tag = state.tags.get(work_id, "")
        if not nonce.startswith(tag):
            # Each work unit has its own tag: a nonce without it was not searched
            # for this unit (or was another client's find).
            self._result(state, work_id, False, "nonce does not start with the work's tag")
            return
        if len(nonce) > MAX_NONCE_CHARS:
            self._result(state, work_id, False, f"nonce longer than {MAX_NONCE_CHARS} characters")
            return
        try:
            block_hash = compute_hash(work.prev_hash, work.mined_by, work.messages, work.timestamp, nonce)
            block = Block(work.height, work.mined_by, work.messages, nonce, work.timestamp, block_hash)
            check_block(block, work.prev_hash, self.ctx.config.difficulty)
            state.claims.solutions += 1
        except UnicodeEncodeError:
            self._result(state, work_id, False, "nonce is not encodable as UTF-8")
            return
        except InvalidBlock as exc:
            self.ctx.metrics.blocks_rejected.labels(source="external_miner").inc()
            self._result(state, work_id, False, f"invalid: {exc.reason}")
            return
        accepted = bool(self._ask_chain(lambda chain: chain.add_mined_block(block)))
        self._result(state, work_id, accepted, "" if accepted else "stale: the chain moved on", block)
        if accepted:
            self.log.debug("external miner %d found block %d %s", state.client.id, block.height, block.hash[:16])
            self._new_template(block.height + 1, block.hash)
            self._push_all()
        else:
            before = self._template
            self.poll_tip()  # pushes to everyone if the tip moved
            if self._template is before:
                self._push(state)

    def _result(self, state: _ClientState, work_id: int, accepted: bool, reason: str, block: Block | None = None) -> None:
        self.stats["accepted" if accepted else "rejected"] += 1
        reply: dict[str, Any] = {"type": "result", "work_id": work_id, "accepted": accepted}
        if reason:
            reply["reason"] = reason
        if block is not None:
            reply.update(height=block.height, hash=block.hash)
        state.client.send(reply)

    # ---------------------------------------------------------- work

    def _new_template(self, height: int, prev_hash: str | None) -> None:
        words = self._ask_chain(lambda chain: chain.pending_words(4 * MAX_MESSAGES))
        mined_by = self.ctx.config.name
        messages = usable_words(words or [], "pow-node external", mined_by, height)
        timestamp = int(time.time())
        self._template = _Template(height, prev_hash, mined_by, messages, timestamp,
                                   hash_prefix(prev_hash, mined_by, messages, timestamp))

    def _push_all(self) -> None:
        for state in list(self._clients.values()):
            self._push(state)

    def _push(self, state: _ClientState) -> None:
        """Give one client new work: the shared template under a nonce tag of its own."""
        template = self._template
        if template is None:
            return
        self._work_id += 1
        work = WorkUnit(self._work_id, template.height, template.prev_hash, template.mined_by, template.messages, template.timestamp)
        # "x" keeps external tags apart from local miners' "<hex index>-"; "<id>-" is
        # prefix-free among clients; the random part is fresh for every work unit.
        tag = f"x{state.client.id:x}-{secrets.randbits(24):06x}"
        state.works[work.work_id] = work
        state.tags[work.work_id] = tag
        state.claims.units += 1
        while len(state.works) > KEPT_WORK_PER_CLIENT:
            oldest = min(state.works)
            del state.works[oldest]
            state.tags.pop(oldest, None)
        state.client.send({
            "type": "work", "work_id": work.work_id, "height": work.height,
            "prefix": template.prefix.hex(), "difficulty": self.ctx.config.difficulty,
            "tag": tag, "tag_max": MAX_TAG_CHARS,
        })

    def _update_rate(self) -> float:
        """Hashes/s over the last RATE_WINDOW seconds from the miners whose claims are plausible."""
        return self._rates()[0]

    def _rates(self) -> tuple[float, float, int]:
        """(plausible hashes/s, claimed hashes/s, clients whose claim is not believed)."""
        now = time.monotonic()
        believed = claimed = 0
        doubted = 0
        difficulty = self.ctx.config.difficulty
        for state in self._clients.values():
            while state.samples and now - state.samples[0][0] > RATE_WINDOW:
                state.samples.popleft()
            reported = sum(count for _, count in state.samples)
            claimed += reported
            if state.claims.plausible(difficulty):
                believed += reported
            else:
                doubted += 1
        rate = believed / RATE_WINDOW
        self._rate_gauge.set(rate)
        return rate, claimed / RATE_WINDOW, doubted

    def _ask_chain(self, call: Callable[[ChainProxy], "pykka.Future[T]"]) -> T | None:
        """Ask ChainKeeper; None while it is down or slow."""
        return self.ask(self.ctx.registry.chain(), call, timeout=ASK_TIMEOUT)

    # ---------------------------------------------------------- socket threads

    def _accept_loop(self, ref: pykka.ActorRef[Any]) -> None:
        """The acceptor thread: until release() sets _stopping (then a clean return).

        Transient errors are retried with backoff (the connection waits in the
        listen backlog meanwhile); any other exception ends the thread and fails
        the gateway.
        """
        listener = self._listener
        backoff = Backoff(cap=ACCEPT_BACKOFF_MAX)
        while not self._stopping.is_set() and listener is not None:
            checkpoint()
            try:
                sock, address = listener.accept()
            except socket.timeout:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return  # closed by release()
                if not is_transient(exc):
                    raise
                self.transient_error("accept", exc, backoff, self._stopping)
                continue
            backoff.reset()
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SNDBUF)
            except OSError:
                pass
            with self._open_lock:
                if self._stopping.is_set() or len(self._open) - len(self._pending) >= MAX_CLIENTS + 8:
                    _shutdown(sock)
                    continue
                if len(self._pending) >= MAX_PENDING:
                    oldest = next(iter(self._pending))
                    del self._pending[oldest]
                    _shutdown(oldest)  # its thread sees the close and ends
                    self.stats["auth_evicted"] = self.stats.get("auth_evicted", 0) + 1
                self._open.add(sock)
                self._pending[sock] = time.monotonic()
            self._connection_seq += 1
            self.spawn(f"conn-{self._connection_seq}", self._connection, sock, address, ref)

    def _connection(self, sock: socket.socket, address: tuple[str, int], ref: pykka.ActorRef[Any]) -> None:
        """A connection thread: serve it; a clean end forgets the thread (one that dies stays in /health)."""
        self._serve(sock, address, ref)
        owned = current_thread()
        if owned is not None:
            self.instance_record.drop_thread(owned.name)

    def _serve(self, sock: socket.socket, address: tuple[str, int], ref: pykka.ActorRef[Any]) -> None:
        """One connection: authenticate (in the pending pool), then relay lines both ways until it ends.

        The connection's own OS errors (reset, timeout, closed by release() or by
        the actor) end it with a clean return; anything else is a bug and raises.
        """
        client = _Client(sock, address)
        connected = False
        try:
            reader = LineReader()
            reason, pending = self._authenticate(sock, reader)
            with self._open_lock:
                self._pending.pop(sock, None)
            if reason is _HEALTH_CHECK:
                sock.sendall(encode_line(HEALTH_OK))  # (still blocking, with the auth phase's timeout)
                return
            sock.setblocking(False)  # from here on nothing waits on this socket but select()
            if reason is not None:
                client.send({"type": "error", "error": "unauthorized"})
                ref.tell(_AuthRefused(address, reason))
                return
            ref.tell(_Connected(client))
            connected = True
            self._relay(client, sock, reader, pending, ref)
        except (OSError, pykka.ActorDeadError):  # the connection ended, or the gateway is going away
            return
        except ValueError:
            if sock.fileno() == -1:
                return  # select() on a socket closed by release() or the actor
            raise
        finally:
            with self._inbox_lock:
                self._throttled.discard(client)
            if client.overflowed:
                self.log.warning("external miner %d (%s:%d) dropped: not reading (over %d bytes queued)",
                                 client.id, *address[:2], MAX_OUTBOX_BYTES)
            client.close()
            with self._open_lock:
                self._open.discard(sock)
                self._pending.pop(sock, None)
            if connected:
                try:
                    ref.tell(_Disconnected(client))
                except pykka.ActorDeadError:
                    pass

    def _relay(self, client: _Client, sock: socket.socket, reader: LineReader, backlog_lines: list[bytes | None],
               ref: pykka.ActorRef[Any]) -> None:
        """An authenticated client: pass its lines to the actor within its budget, write what the actor queued.

        `backlog` holds lines read but not yet passed on; nothing more is read until
        it is empty, so a client ahead of its budget (or of the actor) is simply not
        read: TCP flow control does the rest. `ahead_since` is when the budget first
        refused a line; it is cleared only when the client's socket is found drained
        with the budget available, so a client that keeps writing faster than its
        budget is dropped after the grace period.
        """
        budget = LineBudget(*self._budget_args, now=time.monotonic())
        backlog: deque[bytes | None] = deque(backlog_lines)
        ahead_since: float | None = None
        last_heard = time.monotonic()
        while not self._stopping.is_set() and not client.closed:
            checkpoint()
            now = time.monotonic()
            refused = False
            if backlog and client.delivered.is_set():
                batch: list[_Line] = []
                while backlog and len(batch) < MAX_BATCH:
                    if not budget.take(_cost(backlog[0]), now):
                        refused = True
                        break
                    batch.append(_parse(client, backlog.popleft()))
                if batch:
                    self._deliver(ref, client, tuple(batch))
            if refused:
                if ahead_since is None:
                    ahead_since = now
                    with self._inbox_lock:
                        self._throttled.add(client)
                        self._throttle_events += 1
                elif now - ahead_since > self._grace:
                    client.drop_reason = f"over its line budget for more than {self._grace:g}s"
                    client.send({"type": "error", "error": "over the line budget"})
                    return
            if backlog:
                # Ahead of the budget: wait for it to refill; waiting on the actor: for it to take the batch.
                if refused:
                    delay = min(1.0, max(0.05, budget.wait(_cost(backlog[0]), now)))  # a few lines per wake-up
                    self._stopping.wait(delay)
                else:
                    client.delivered.wait(0.2)
                if client.pending():
                    client.flush()
                continue
            # Wakes every second to notice release() and idle peers, and when the
            # socket can take more of the outbox.
            readable, writable, _ = select.select([sock], [sock] if client.pending() else [], [], 1.0)
            if writable:
                client.flush()
            if not readable:
                if ahead_since is not None:  # drained: it is within its budget again
                    ahead_since = None
                    with self._inbox_lock:
                        self._throttled.discard(client)
                if time.monotonic() - last_heard > IDLE_TIMEOUT:
                    return
                continue
            try:
                data = sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                return
            last_heard = time.monotonic()
            backlog.extend(line for line in reader.feed(data) if line is None or line.strip())

    def _deliver(self, ref: pykka.ActorRef[Any], client: _Client, batch: tuple[_Line, ...]) -> None:
        """Tell the actor one batch; the client's next waits until the actor has taken it."""
        client.delivered.clear()
        with self._inbox_lock:
            self._inbox += 1
            self._inbox_peak = max(self._inbox_peak, self._inbox)
        try:
            ref.tell(_Lines(client, batch))
        except pykka.ActorDeadError:
            with self._inbox_lock:
                self._inbox -= 1
            raise

    def _authenticate(self, sock: socket.socket, reader: LineReader) -> tuple[str | None, list[bytes | None]]:
        """Read the first line within AUTH_PHASE_SECONDS.

        Returns (None, lines that came after it) if it carries our token,
        (_HEALTH_CHECK, []) for the health line, else (why not, []).
        """
        deadline = time.monotonic() + min(AUTH_TIMEOUT, AUTH_PHASE_SECONDS)
        while True:
            checkpoint()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "no auth line in time", []
            sock.settimeout(remaining)
            try:
                data = sock.recv(4096)
            except socket.timeout:
                return "no auth line in time", []
            if not data:
                return "closed before authenticating", []
            lines = reader.feed(data)
            if lines:
                break
        first, rest = lines[0], lines[1:]
        if first is None:
            return "auth line too long", []
        try:
            message = decode_line(first)
        except ProtocolError as exc:
            return f"first line is not an auth message ({exc})", []
        if message["type"] == HEALTH_LINE["type"]:
            return _HEALTH_CHECK, []
        token = message.get("token")
        if message["type"] != "auth" or not isinstance(token, str):
            return "first line is not an auth message", []
        if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._token):
            return "wrong token", []
        return None, [line for line in rest if line is None or line.strip()]


def _cost(line: bytes | None) -> int:
    """A line's charge in bytes against a budget (an overlong one counts as the longest allowed)."""
    return MAX_LINE_BYTES + 1 if line is None else len(line) + 1


def _parse(client: _Client, line: bytes | None) -> _Line:
    """A received line as the message the actor gets (garbage carries its problem)."""
    if line is None:
        return _Line(client, None, "line too long")
    try:
        return _Line(client, decode_line(line))
    except ProtocolError as exc:
        return _Line(client, None, str(exc))


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
