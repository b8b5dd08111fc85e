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


class NodeActorApi:
    """What every supervised actor answers: liveness, fault injection, ops details."""

    def ping(self) -> str:
        raise NotImplementedError

    def crash(self, reason: str = "fault injection") -> None:
        raise NotImplementedError

    def health_details(self) -> dict[str, Any]:
        raise NotImplementedError


class TipListener:
    """Told (never asked) when our chain's top changes; ChainKeeper is the only sender."""

    def on_tip_changed(self, event: TipChanged) -> None:
        raise NotImplementedError


class ChainApi:
    """ChainKeeper: the chain's only writer; answers STATS and GET_BLOCK."""

    def tip(self) -> tuple[int, str | None]:
        raise NotImplementedError

    def get_blocks(self, start: int, limit: int) -> list[Block]:
        raise NotImplementedError

    def all_hashes(self) -> list[str]:
        raise NotImplementedError

    def find_block(self, block_hash: str) -> Block | None:
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


class DatagramApi:
    """NetworkIO: sends datagrams (fire and forget)."""

    def send(self, message: WireMessage, addr: Address) -> None:
        raise NotImplementedError

    def send_many(self, messages: list[tuple[WireMessage, Address]]) -> None:
        raise NotImplementedError


class GossipApi:
    """GossipManager: membership."""

    def on_gossip(self, gossip: Gossip, source: Address) -> None:
        raise NotImplementedError

    def on_gossip_reply(self, reply: GossipReply, source: Address) -> None:
        raise NotImplementedError

    def broadcast(self, message: WireMessage) -> None:
        raise NotImplementedError

    def peer_addresses(self) -> list[Address]:
        raise NotImplementedError

    def peer_table(self) -> list[dict[str, Any]]:
        raise NotImplementedError


class ConsensusApi:
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


# ------------------------------------------------------------------ typed proxies


class NodeActorProxy(ActorMemberMixin, pykka.ActorProxy[NodeActorApi]):
    ping = proxy_method(NodeActorApi.ping)
    crash = proxy_method(NodeActorApi.crash)
    health_details = proxy_method(NodeActorApi.health_details)


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


class DatagramProxy(ActorMemberMixin, pykka.ActorProxy[DatagramApi]):
    send = proxy_method(DatagramApi.send)
    send_many = proxy_method(DatagramApi.send_many)


class GossipProxy(ActorMemberMixin, pykka.ActorProxy[GossipApi]):
    on_gossip = proxy_method(GossipApi.on_gossip)
    on_gossip_reply = proxy_method(GossipApi.on_gossip_reply)
    broadcast = proxy_method(GossipApi.broadcast)
    peer_addresses = proxy_method(GossipApi.peer_addresses)
    peer_table = proxy_method(GossipApi.peer_table)


class ConsensusProxy(ActorMemberMixin, pykka.ActorProxy[ConsensusApi]):
    on_consensus = proxy_method(ConsensusApi.on_consensus)
    on_unlinked_announce = proxy_method(ConsensusApi.on_unlinked_announce)
    on_stats_reply = proxy_method(ConsensusApi.on_stats_reply)
    on_get_block_replies = proxy_method(ConsensusApi.on_get_block_replies)
    status = proxy_method(ConsensusApi.status)
    claimed_heights = proxy_method(ConsensusApi.claimed_heights)
