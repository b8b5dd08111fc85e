"""ConsensusRunner's messages, with fake ChainKeeper, GossipManager and NetworkIO actors.

An injected clock drives the node's timer service by hand (no timer thread), the
"network" answers in-process (no sockets), and the tests wait on conditions, never
for a fixed time. What is checked is the actor's protocol: it asks nobody (every
request is told and answered by a message), gives up on an answer that never
comes at a deadline, ignores one that comes after it, and keeps one one-shot
timer at the engine's next deadline instead of polling.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, Sequence

import pykka
import pytest

from actors.consensus_runner import APPLY_TIMEOUT, ConsensusRunner
from messages.internal import Attached
from chain.block import Block
from config import NodeConfig
from messages.internal import TipChanged
from messages.wire import GetBlock, GetBlockReply, Stats, StatsReply
from net.address import Address
from runtime.context import NodeContext, tell
from runtime.interfaces import ChainApi, DatagramApi, GossipApi
from runtime.timers import TimerHandle, TimerService
from sim.chains import make_chain
from tests.helpers import wait_for

PEER: Address = ("127.0.0.1", 7001)
OURS = 40  # blocks we hold; the peer holds CHAIN_LENGTH of the same chain
CHAIN_LENGTH = 60


@pytest.fixture(scope="module")
def chain() -> list[Block]:
    return make_chain(CHAIN_LENGTH, 1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingTimers(TimerService):
    """The node's timer service, run by hand, remembering every timer set and when it is due."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock, thread=False)
        self.clock = clock
        self.made: list[tuple[str, float, float, TimerHandle]] = []  # (kind, interval, first due, handle)

    def every(self, interval: float, callback: Callable[[], Any]) -> TimerHandle:
        handle = super().every(interval, callback)
        self.made.append(("every", interval, self.clock.now + interval, handle))
        return handle

    def after(self, delay: float, callback: Callable[[], Any]) -> TimerHandle:
        handle = super().after(delay, callback)
        self.made.append(("after", delay, self.clock.now + max(0.0, delay), handle))
        return handle

    def pending_once(self) -> list[float]:
        return sorted(due for kind, _, due, h in self.made if kind == "after" and not h.cancelled)


class Keeper:
    """What the fake ChainKeeper holds and was told (the test reads it)."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = list(blocks)
        self.calls: list[str] = []
        self.hold = threading.Event()  # set: applies wait in `held` for `release`
        self.held: list[tuple[int, int, list[Block]]] = []


class FakeChain(pykka.ThreadingActor, ChainApi):
    """ChainKeeper's side of the protocol: told requests, answers told back. Its ask-style
    methods are not implemented (the interface's raise): ConsensusRunner must not use them."""

    def __init__(self, ctx: NodeContext, state: Keeper) -> None:
        super().__init__()
        self.ctx = ctx
        self.state = state

    def send_round_inputs(self, request_id: int) -> None:
        self.state.calls.append("send_round_inputs")
        hashes = [b.hash for b in self.state.blocks]
        tell(self.ctx.registry.consensus(), lambda c: c.on_round_inputs.defer(request_id, hashes, None))

    def stage_blocks(self, blocks: Sequence[Block], reset: bool = False) -> None:
        self.state.calls.append("stage_blocks")

    def apply_segment_and_reply(self, request_id: int, fork_height: int, segment: Sequence[Block]) -> None:
        self.state.calls.append("apply_segment_and_reply")
        self.state.held.append((request_id, fork_height, list(segment)))
        if not self.state.hold.is_set():
            self.release(len(self.state.held) - 1)

    def release(self, index: int) -> None:
        """Apply held request `index` now: the tip notice first, then the answer (as ChainKeeper does)."""
        blocks = self.state.blocks
        request_id, first, segment = self.state.held[index]
        ok = first <= len(blocks) < first + len(segment)
        if ok:
            blocks[first:] = segment
            event = TipChanged(len(blocks), blocks[-1].hash)
            tell(self.ctx.registry.consensus(), lambda c: c.on_tip_changed.defer(event))
        tell(self.ctx.registry.consensus(), lambda c: c.on_segment_applied.defer(request_id, ok))


class FakeGossip(pykka.ThreadingActor, GossipApi):
    def __init__(self, ctx: NodeContext, peers: list[Address]) -> None:
        super().__init__()
        self.ctx = ctx
        self.peers = peers
        self.answered: list[Address] = []

    def on_stats_answer(self, addr: Address) -> None:
        self.answered.append(addr)

    def send_peer_addresses(self, request_id: int) -> None:
        peers = list(self.peers)
        tell(self.ctx.registry.consensus(), lambda c: c.on_peer_addresses.defer(request_id, peers))


class Peers:
    """The peers' chain, whether they answer, and what was sent to them (the test reads it)."""

    def __init__(self, chain: list[Block]) -> None:
        self.chain = chain
        self.silent = threading.Event()
        self.sent: list[tuple[Any, Address]] = []


class FakeNetwork(pykka.ThreadingActor, DatagramApi):
    """The peers, in-process: STATS and GET_BLOCK answered from their chain unless silent."""

    def __init__(self, ctx: NodeContext, state: Peers) -> None:
        super().__init__()
        self.ctx = ctx
        self.state = state

    def send_many(self, messages: list[tuple[Any, Address]]) -> None:
        self.state.sent += messages
        consensus = self.ctx.registry.consensus()
        chain = self.state.chain
        for message, addr in messages:
            if self.state.silent.is_set():
                continue
            if isinstance(message, Stats):
                reply = StatsReply(len(chain), chain[-1].hash)
                tell(consensus, lambda c: c.on_stats_reply.defer(reply, addr))
            elif isinstance(message, GetBlock):
                replies = [(GetBlockReply(chain[message.height]), addr)]
                tell(consensus, lambda c: c.on_get_block_replies.defer(replies))


class World:
    """A ConsensusRunner among the fakes, on a hand-driven clock."""

    def __init__(self, tmp_path: Any, chain: list[Block], hold_applies: bool = False) -> None:
        self.clock = Clock()
        self.timers = RecordingTimers(self.clock)
        self.ctx = NodeContext(NodeConfig(data_dir=tmp_path, difficulty=1, consensus_interval=3600.0), timers=self.timers)
        self.keeper, self.network = Keeper(chain[:OURS]), Peers(chain)
        if hold_applies:
            self.keeper.hold.set()
        self.chain_ref = FakeChain.start(self.ctx, self.keeper)
        self.gossip_ref = FakeGossip.start(self.ctx, [PEER])
        self.network_ref = FakeNetwork.start(self.ctx, self.network)
        for name, ref in (("ChainKeeper", self.chain_ref), ("GossipManager", self.gossip_ref), ("NetworkIO", self.network_ref)):
            self.ctx.registry.set(name, ref)
        self.runner_ref = ConsensusRunner.start(self.ctx, clock=self.clock)
        self.ctx.registry.set("ConsensusRunner", self.runner_ref)
        self.runner = self.ctx.registry.proxy("ConsensusRunner")
        self.runner_ref.tell(Attached())  # as the supervisor does once it listed the instance: the join round
        wait_for(lambda: "send_round_inputs" in self.keeper.calls)

    def advance(self, seconds: float) -> None:
        """Move the clock, fire what is due, and let the runner handle what that told it."""
        self.clock.now += seconds
        self.timers.run_due(self.clock.now)
        self.status()

    def status(self) -> dict[str, Any]:
        """An ask from the test (not an actor): it queues behind what the runner was told before."""
        return self.runner.status().get(timeout=10)

    def release(self, index: int) -> None:
        """ChainKeeper carries out held apply `index` now (in its own thread, as it would)."""
        self.chain_ref.proxy().release(index).get(timeout=10)

    def result(self) -> str | None:
        return self.status()["last_result"]

    def stop(self) -> None:
        for ref in (self.runner_ref, self.network_ref, self.gossip_ref, self.chain_ref):
            ref.stop()
        self.timers.close()


@pytest.fixture
def world(request, tmp_path, chain) -> Iterator[World]:
    """A World; `@pytest.mark.parametrize("world", [True], indirect=True)` holds every apply's answer."""
    w = World(tmp_path, chain, hold_applies=getattr(request, "param", False))
    yield w
    w.stop()


def test_a_round_completes_with_every_answer_a_message(world, chain):
    wait_for(lambda: (world.result() or "").startswith(f"synced to height {CHAIN_LENGTH}"))
    assert world.keeper.blocks == chain
    assert world.keeper.calls == ["send_round_inputs", "apply_segment_and_reply"]  # told only; nothing asked
    assert {type(m) for m, _ in world.network.sent} == {Stats, GetBlock}
    # Each STATS_REPLY is told on to GossipManager (an answer to its greeting promotes the address there).
    assert PEER in world.gossip_ref.proxy().answered.get(timeout=10)
    assert world.status()["running"] is False
    assert world.timers.pending_once() == []  # idle: no tick pending at all


@pytest.mark.parametrize("world", [True], indirect=True, ids=["answers held"])
def test_a_lost_apply_answer_times_out_and_a_late_one_is_ignored(world, chain):
    wait_for(lambda: len(world.keeper.held) == 1)
    status = world.status()
    assert status["running"] and status["stage"] == "apply"
    told_at = world.clock.now
    pending = world.timers.pending_once()
    assert len(pending) == 1  # one tick pending; it may be an earlier deadline's, gone meanwhile ...
    world.advance(pending[0] - world.clock.now)
    assert world.timers.pending_once() == [pytest.approx(told_at + APPLY_TIMEOUT)]  # ... then the give-up's
    world.advance(told_at + APPLY_TIMEOUT - 1.0 - world.clock.now)
    assert world.status()["stage"] == "apply"  # still waiting: generous, a switch can take seconds
    world.advance(1.0)
    # Given up: the engine heard "not applied" and re-ran the round, which applies again (held too).
    wait_for(lambda: len(world.keeper.held) == 2)
    assert world.result() == f"ChainKeeper did not answer the apply of {CHAIN_LENGTH - OURS} blocks from height {OURS}"
    # The first apply happens after all: its tip notice, then its (stale) answer.
    world.release(0)
    assert world.keeper.blocks == chain
    status = world.status()
    assert status["stage"] == "apply" and status["last_result"].startswith("ChainKeeper did not answer")
    # The second one is refused (our chain is that long already); the re-run finds nothing better.
    world.release(1)
    wait_for(lambda: world.result() == "our chain is the best valid one")
    assert world.keeper.calls.count("apply_segment_and_reply") == 2
    assert "apply_segment" not in world.keeper.calls


def test_no_fast_ticker_during_a_round_only_one_timer_at_the_next_deadline(world, chain):
    wait_for(lambda: (world.result() or "").startswith("synced"))  # the join round
    world.network.silent.set()  # STATS go unanswered now: a round that only time moves
    world.runner.on_consensus.defer()
    wait_for(lambda: world.status()["running"])
    ticks = 0
    while world.status()["running"]:
        pending = world.timers.pending_once()
        assert len(pending) == 1, pending  # ONE tick pending, at the engine's (or the runner's) next deadline
        world.advance(max(0.0, pending[0] - world.clock.now))
        ticks += 1
        assert ticks < 100, "ticking as if polled"
    assert world.result() == "nothing better"  # the STATS collection ended without an answer
    assert all(interval >= 1.0 for kind, interval, _, _ in world.timers.made if kind == "every")
    assert ticks <= 6  # STATS re-sends at 0.25 s steps, the end of the collection: not one per 5 ms


def test_a_consensus_storm_runs_one_round_now_and_one_after_the_gap(world, chain):
    """500 CONSENSUS at once: one round at once, one waiting (run a gap later, with no
    further CONSENSUS), the rest coalesced: the STATS sent follow the round period."""
    from actors.consensus_runner import CONSENSUS_ROUND_GAP

    wait_for(lambda: (world.result() or "").startswith("synced"))  # the join round
    world.network.sent.clear()
    rounds_before = world.status()["rounds"]

    def stats_sent() -> int:
        return sum(1 for m, _ in list(world.network.sent) if isinstance(m, Stats))

    for _ in range(500):
        world.runner.on_consensus.defer()
    wait_for(lambda: world.status()["rounds"] == rounds_before + 1 and not world.status()["running"])
    assert stats_sent() == 1  # one peer, one round
    world.advance(CONSENSUS_ROUND_GAP - 0.5)
    assert world.status()["rounds"] == rounds_before + 1
    world.advance(0.5)
    wait_for(lambda: world.status()["rounds"] == rounds_before + 2 and not world.status()["running"])
    assert stats_sent() == 2
    world.advance(3 * CONSENSUS_ROUND_GAP)
    assert world.status()["rounds"] == rounds_before + 2 and stats_sent() == 2  # nothing was left waiting
    world.runner.on_consensus.defer()  # a gap has passed: the next CONSENSUS runs at once
    wait_for(lambda: world.status()["rounds"] == rounds_before + 3)
