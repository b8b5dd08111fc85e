"""The protocols the node's actors offer each other, and their typed proxies.

An actor reaches another through the registry by *interface*, never by a name
and a method string: `ctx.registry.chain()` is a `ChainProxy` (or None while
ChainKeeper restarts), and `chain.tip()` is checked by a type checker and fails
loudly if the method is renamed. The interfaces live here, apart from the actor
classes, so that actors that talk both ways (NetworkIO routes datagrams to
ConsensusRunner, which sends through NetworkIO) don't import each other.

Each interface is a plain class that the actor inherits (as Mopidy's listeners
are); each proxy class types a Pykka proxy of it with `pykka.typing`.
`TipListener` is the event interface: ChainKeeper tells every actor that
implements it when the tip changes, without knowing who they are.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from messages.internal import TipChanged
from net.address import Address

if TYPE_CHECKING:  # types only: the codec and chain rules import nothing from here
    from chain.block import Block
    from chain.sync import Staged
    from messages.wire import GetBlockReply, Gossip, GossipReply, StatsReply, WireMessage


class ActorInterface:
    """Base of every interface an actor offers: the only methods its mailbox dispatches.

    A supervised actor's callable surface is the set of public methods declared on
    the `ActorInterface` subclasses it inherits (`declared_methods`). A proxy refuses
    any other name where it is called (so a typo or `proxy.stop` fails in the
    caller, at once), and a call message carries the declared function itself,
    never its name as a string.
    """


def declared_methods(actor_class: type) -> dict[str, Any]:
    """`{name: interface function}` of every method `actor_class`'s interfaces declare."""
    cached = _DECLARED.get(actor_class)
    if cached is not None:
        return cached
    methods: dict[str, Any] = {}
    for klass in reversed(actor_class.__mro__):
        if klass is ActorInterface or not issubclass(klass, ActorInterface) or _is_actor(klass):
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and callable(value):
                methods[name] = value
    _DECLARED[actor_class] = methods
    return methods


def _is_actor(klass: type) -> bool:
    """An actor class (it has an inbox), as opposed to an interface it implements."""
    return issubclass(klass, pykka.Actor)


_DECLARED: dict[type, dict[str, Any]] = {}


class NodeActorApi(ActorInterface):
    """What every supervised actor answers: liveness, fault injection, ops details."""

    def ping(self) -> str:
        raise NotImplementedError

    def crash(self, reason: str = "fault injection") -> None:
        raise NotImplementedError

    def health_details(self) -> dict[str, Any]:
        raise NotImplementedError

    def stall(self, seconds: float) -> None:
        """Fault injection: keep this actor busy `seconds` (a message like any other)."""
        raise NotImplementedError


class MinerApi(ActorInterface):
    """MinerActor: fault injection on its worker process."""

    def kill_worker(self) -> int | None:
        """SIGKILL the worker process (a crash drill); its pid, or None without one."""
        raise NotImplementedError


class GatewayApi(ActorInterface):
    """MinerGateway: work for external miners."""

    def refresh_work(self) -> None:
        """Send every connected miner fresh work (a new timestamp and words)."""
        raise NotImplementedError


class TipListener(ActorInterface):
    """Told (never asked) when our chain's top changes; ChainKeeper is the only sender."""

    def on_tip_changed(self, event: TipChanged) -> None:
        raise NotImplementedError


class ChainApi(ActorInterface):
    """ChainKeeper: the chain's only writer; answers STATS and GET_BLOCK."""

    def tip(self) -> tuple[int, str | None]:
        raise NotImplementedError

    def get_blocks(self, start: int, limit: int) -> list[Block]:
        """Our blocks from `start`, at most `limit` (and at most 10,000: they are read from the store)."""
        raise NotImplementedError

    def all_hashes(self) -> Sequence[str]:
        """Our hashes by height: an immutable snapshot, 32 bytes a block (not a list of strings)."""
        raise NotImplementedError

    def find_block(self, block_hash: str) -> Block | None:
        """Our block with this hash (an index probe), or None."""
        raise NotImplementedError

    def pending_words(self, limit: int = 10) -> list[str]:
        raise NotImplementedError

    def word_count(self) -> int:
        raise NotImplementedError

    def on_stats_batch(self, requests: list[tuple[Address]]) -> None:
        raise NotImplementedError

    def on_get_block_batch(self, requests: list[tuple[int, Address]]) -> None:
        raise NotImplementedError

    def on_new_word(self, word: str) -> None:
        raise NotImplementedError

    def on_new_words(self, words: list[tuple[str, str]]) -> None:
        """(word, source IP) pairs that arrived together."""
        raise NotImplementedError

    def on_announce(self, block: Block, addr: Address) -> None:
        raise NotImplementedError

    def add_mined_block(self, block: Block) -> bool:
        raise NotImplementedError

    def apply_segment(self, fork_height: int, segment: Sequence[Block]) -> bool:
        raise NotImplementedError

    def stage_blocks(self, blocks: Sequence[Block], reset: bool = False) -> None:
        raise NotImplementedError

    def staging_summary(self) -> Staged | None:
        raise NotImplementedError

    def switch_to_staged(self, first: int, top: int, top_hash: str) -> bool:
        raise NotImplementedError

    def send_round_inputs(self, request_id: int) -> None:
        """Told: answer ConsensusRunner's `on_round_inputs(request_id, our hashes, staged run)`."""
        raise NotImplementedError

    def apply_segment_and_reply(self, request_id: int, fork_height: int, segment: Sequence[Block]) -> None:
        """Told: `apply_segment`, then ConsensusRunner's `on_segment_applied(request_id, ok)`."""
        raise NotImplementedError

    def switch_to_staged_and_reply(self, request_id: int, first: int, top: int, top_hash: str) -> None:
        """Told: `switch_to_staged`, then ConsensusRunner's `on_segment_applied(request_id, ok)`."""
        raise NotImplementedError


class DatagramApi(ActorInterface):
    """NetworkIO: sends datagrams (fire and forget)."""

    def send(self, message: WireMessage, addr: Address) -> None:
        raise NotImplementedError

    def send_many(self, messages: list[tuple[WireMessage, Address]]) -> None:
        raise NotImplementedError

    def validated_addresses(self) -> int:
        """How many IPs have proved their address (answered a STATS or GOSSIP we sent)."""
        raise NotImplementedError


class GossipApi(ActorInterface):
    """GossipManager: membership."""

    def on_gossip(self, gossip: Gossip, source: Address) -> None:
        raise NotImplementedError

    def on_gossip_reply(self, reply: GossipReply, source: Address) -> None:
        raise NotImplementedError

    def on_stats_answer(self, addr: Address) -> None:
        """Told by ConsensusRunner for each STATS_REPLY: an answer to our greeting promotes the address."""
        raise NotImplementedError

    def broadcast(self, message: WireMessage) -> None:
        raise NotImplementedError

    def relay(self, message: WireMessage, exclude: list[Address]) -> None:
        """Told by ChainKeeper: an ANNOUNCE of a block it just accepted, for a few random tried peers."""
        raise NotImplementedError

    def answer_stale(self, message: WireMessage, addr: Address) -> None:
        """Told by ChainKeeper: our tip, for a peer that announced a shorter branch (rate-limited per peer)."""
        raise NotImplementedError

    def peer_addresses(self) -> list[Address]:
        raise NotImplementedError

    def peer_table(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def send_peer_addresses(self, request_id: int) -> None:
        """Told: answer ConsensusRunner's `on_peer_addresses(request_id, peer_addresses())`."""
        raise NotImplementedError


class ConsensusApi(ActorInterface):
    """ConsensusRunner: chain selection and sync."""

    def on_consensus(self) -> None:
        raise NotImplementedError

    def on_unlinked_announce(self, block: Block, addr: Address) -> None:
        raise NotImplementedError

    def on_stats_reply(self, reply: StatsReply, addr: Address) -> None:
        raise NotImplementedError

    def on_get_block_replies(self, replies: list[tuple[GetBlockReply, Address]]) -> None:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    def claimed_heights(self) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def note_announce(self, height: int, top_hash: str, addr: Address) -> None:
        """Told by ChainKeeper: a peer's ANNOUNCE showed a chain of `height` blocks topped by `top_hash`."""
        raise NotImplementedError

    def on_round_inputs(self, request_id: int, our_hashes: Sequence[str], staged: Staged | None) -> None:
        """ChainKeeper's answer to `send_round_inputs`."""
        raise NotImplementedError

    def on_peer_addresses(self, request_id: int, peers: Sequence[Address]) -> None:
        """GossipManager's answer to `send_peer_addresses`."""
        raise NotImplementedError

    def on_segment_applied(self, request_id: int, ok: bool) -> None:
        """ChainKeeper's answer to `apply_segment_and_reply` / `switch_to_staged_and_reply`."""
        raise NotImplementedError


# ------------------------------------------------------------------ typed proxies


class NodeActorProxy(ActorMemberMixin, pykka.ActorProxy[NodeActorApi]):
    ping = proxy_method(NodeActorApi.ping)
    crash = proxy_method(NodeActorApi.crash)
    health_details = proxy_method(NodeActorApi.health_details)
    stall = proxy_method(NodeActorApi.stall)


class TipListenerProxy(ActorMemberMixin, pykka.ActorProxy[TipListener]):
    on_tip_changed = proxy_method(TipListener.on_tip_changed)


class ChainProxy(ActorMemberMixin, pykka.ActorProxy[ChainApi]):
    tip = proxy_method(ChainApi.tip)
    get_blocks = proxy_method(ChainApi.get_blocks)
    all_hashes = proxy_method(ChainApi.all_hashes)
    find_block = proxy_method(ChainApi.find_block)
    pending_words = proxy_method(ChainApi.pending_words)
    word_count = proxy_method(ChainApi.word_count)
    on_stats_batch = proxy_method(ChainApi.on_stats_batch)
    on_get_block_batch = proxy_method(ChainApi.on_get_block_batch)
    on_new_word = proxy_method(ChainApi.on_new_word)
    on_new_words = proxy_method(ChainApi.on_new_words)
    on_announce = proxy_method(ChainApi.on_announce)
    add_mined_block = proxy_method(ChainApi.add_mined_block)
    apply_segment = proxy_method(ChainApi.apply_segment)
    stage_blocks = proxy_method(ChainApi.stage_blocks)
    staging_summary = proxy_method(ChainApi.staging_summary)
    switch_to_staged = proxy_method(ChainApi.switch_to_staged)
    send_round_inputs = proxy_method(ChainApi.send_round_inputs)
    apply_segment_and_reply = proxy_method(ChainApi.apply_segment_and_reply)
    switch_to_staged_and_reply = proxy_method(ChainApi.switch_to_staged_and_reply)


class DatagramProxy(ActorMemberMixin, pykka.ActorProxy[DatagramApi]):
    send = proxy_method(DatagramApi.send)
    send_many = proxy_method(DatagramApi.send_many)
    validated_addresses = proxy_method(DatagramApi.validated_addresses)


class GossipProxy(ActorMemberMixin, pykka.ActorProxy[GossipApi]):
    on_gossip = proxy_method(GossipApi.on_gossip)
    on_gossip_reply = proxy_method(GossipApi.on_gossip_reply)
    broadcast = proxy_method(GossipApi.broadcast)
    relay = proxy_method(GossipApi.relay)
    answer_stale = proxy_method(GossipApi.answer_stale)
    peer_addresses = proxy_method(GossipApi.peer_addresses)
    peer_table = proxy_method(GossipApi.peer_table)
    send_peer_addresses = proxy_method(GossipApi.send_peer_addresses)


class ConsensusProxy(ActorMemberMixin, pykka.ActorProxy[ConsensusApi]):
    on_consensus = proxy_method(ConsensusApi.on_consensus)
    on_unlinked_announce = proxy_method(ConsensusApi.on_unlinked_announce)
    on_stats_reply = proxy_method(ConsensusApi.on_stats_reply)
    on_get_block_replies = proxy_method(ConsensusApi.on_get_block_replies)
    status = proxy_method(ConsensusApi.status)
    claimed_heights = proxy_method(ConsensusApi.claimed_heights)
    note_announce = proxy_method(ConsensusApi.note_announce)
    on_round_inputs = proxy_method(ConsensusApi.on_round_inputs)
    on_peer_addresses = proxy_method(ConsensusApi.on_peer_addresses)
    on_segment_applied = proxy_method(ConsensusApi.on_segment_applied)
