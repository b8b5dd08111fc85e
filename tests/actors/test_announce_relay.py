"""ANNOUNCE relay and the answer to a stale branch, actor by actor, without sockets.

ChainKeeper decides what to relay (a block that became our tip, once per hash, never
to peers known to have it) and when to answer with our tip (a peer announced a shorter
or equal branch); GossipManager decides to whom (random tried peers; the answer only
to a tried peer, rate-limited per peer). Both are driven here with fakes and an
injected clock and RNG.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any

from actors.chain_keeper import HOLDER_MEMORY, ChainKeeper
from actors.gossip_manager import (
    RELAY_FANOUT,
    STALE_ANSWER_INTERVAL,
    WELL_KNOWN_RETRY_FIRST,
    WELL_KNOWN_RETRY_MAX,
    GossipManager,
)
from config import NodeConfig
from messages.wire import Announce, Gossip, GossipReply
from runtime.context import NodeContext
from sim.chains import make_chain

DIFFICULTY = 2
SENDER = ("127.0.0.1", 6001)


class _Deferred:
    def __init__(self, calls: list[tuple[str, tuple[Any, ...]]], name: str) -> None:
        self.calls, self.name = calls, name

    def defer(self, *args: Any) -> None:
        self.calls.append((self.name, args))


class FakeGossip:
    """Stands in for GossipManager's proxy: records what ChainKeeper tells it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.relay = _Deferred(self.calls, "relay")
        self.answer_stale = _Deferred(self.calls, "answer_stale")
        self.broadcast = _Deferred(self.calls, "broadcast")

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [args for called, args in self.calls if called == name]


def make_keeper(tmp_path, monkeypatch) -> tuple[ChainKeeper, FakeGossip]:
    keeper = ChainKeeper(NodeContext(NodeConfig(data_dir=tmp_path, difficulty=DIFFICULTY)), clock=lambda: 0.0)
    keeper.on_start()
    gossip = FakeGossip()
    monkeypatch.setattr(keeper.ctx.registry, "gossip", lambda: gossip)
    return keeper, gossip


# ------------------------------------------------------------------ ChainKeeper: what is relayed


def test_an_accepted_announce_is_relayed_once_not_to_its_sender(tmp_path, monkeypatch):
    keeper, gossip = make_keeper(tmp_path, monkeypatch)
    chain = make_chain(4, DIFFICULTY)
    assert keeper.apply_segment(0, chain[:3])
    gossip.calls.clear()
    keeper.on_announce(chain[3], SENDER)
    assert keeper.height == 4
    assert gossip.of("relay") == [(Announce(chain[3]), [SENDER])]
    keeper.on_announce(chain[3], ("127.0.0.1", 6002))  # the same block from another peer: nothing more
    assert len(gossip.of("relay")) == 1
    keeper.release()


def test_a_block_failing_validation_is_never_relayed(tmp_path, monkeypatch):
    keeper, gossip = make_keeper(tmp_path, monkeypatch)
    chain = make_chain(3, DIFFICULTY)
    assert keeper.apply_segment(0, chain[:2])
    gossip.calls.clear()
    forged = dataclasses.replace(chain[2], nonce="not-the-nonce")  # the hash no longer matches
    keeper.on_announce(forged, SENDER)
    unmined = dataclasses.replace(chain[2], hash="f" * 64)  # no proof of work
    keeper.on_announce(unmined, SENDER)
    assert keeper.height == 2
    assert gossip.of("relay") == [] and gossip.of("answer_stale") == []
    keeper.release()


def test_a_sync_relays_only_its_new_tip_and_not_to_peers_that_announced_it(tmp_path, monkeypatch):
    keeper, gossip = make_keeper(tmp_path, monkeypatch)
    chain = make_chain(12, DIFFICULTY)
    assert keeper.apply_segment(0, chain[:2])
    gossip.calls.clear()
    # Two peers announce the top of a longer chain we can't link yet (consensus syncs it).
    holders = [("127.0.0.1", 7001), ("127.0.0.1", 7002)]
    for addr in holders:
        keeper.on_announce(chain[11], addr)
    assert gossip.of("relay") == []
    assert keeper.apply_segment(2, chain[2:])
    relays = gossip.of("relay")
    assert len(relays) == 1  # one block relayed for a sync of ten
    message, exclude = relays[0]
    assert message == Announce(chain[11]) and set(exclude) == set(holders)
    keeper.release()


def test_a_mined_block_is_broadcast_not_relayed_again(tmp_path, monkeypatch):
    keeper, gossip = make_keeper(tmp_path, monkeypatch)
    chain = make_chain(2, DIFFICULTY)
    assert keeper.apply_segment(0, chain[:1])
    gossip.calls.clear()
    assert keeper.add_mined_block(chain[1])
    assert gossip.of("broadcast") == [(Announce(chain[1]),)]
    keeper._relay(chain[1])  # as if it became the tip again (a reorg back to it)
    assert gossip.of("relay") == []
    keeper.release()


def test_holders_remembered_are_bounded(tmp_path, monkeypatch):
    keeper, _ = make_keeper(tmp_path, monkeypatch)
    block = make_chain(1, DIFFICULTY)[0]
    for i in range(HOLDER_MEMORY * 4):  # a flood of announces of blocks far above our tip
        keeper.on_announce(dataclasses.replace(block, height=100 + i, hash=f"{i:064x}"), SENDER)
    assert len(keeper._holders) == HOLDER_MEMORY
    keeper.release()


# ------------------------------------------------------------------ ChainKeeper: a stale branch


def test_a_stale_branch_announce_is_answered_with_our_tip(tmp_path, monkeypatch):
    keeper, gossip = make_keeper(tmp_path, monkeypatch)
    ours = make_chain(6, DIFFICULTY)
    theirs = make_chain(4, DIFFICULTY, base=ours[:2], tag="other-side")
    assert keeper.apply_segment(0, ours)
    gossip.calls.clear()
    keeper.on_announce(theirs[3], SENDER)  # their branch is 4 blocks long, ours 6
    assert gossip.of("answer_stale") == [(Announce(ours[5]), SENDER)]
    gossip.calls.clear()
    equal = make_chain(6, DIFFICULTY, base=ours[:2], tag="equal")
    keeper.on_announce(equal[5], SENDER)  # as long as ours, another branch: answered too
    assert gossip.of("answer_stale") == [(Announce(ours[5]), SENDER)]
    gossip.calls.clear()
    keeper.on_announce(ours[3], SENDER)  # a block of our own chain: only a claim, no answer
    keeper.on_announce(dataclasses.replace(theirs[3], hash="e" * 64), SENDER)  # can't be a mined block
    assert gossip.of("answer_stale") == [] and gossip.of("relay") == []
    assert keeper.height == 6
    keeper.release()


# ------------------------------------------------------------------ GossipManager: to whom


class RecordingGossip(GossipManager):
    """GossipManager whose sends and timers are recorded instead of going out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[Any, Any]] = []
        self.timers: list[tuple[float, Any, tuple[Any, ...]]] = []

    def _send(self, message: Any, addr: Any) -> None:
        self.sent.append((message, addr))

    def after(self, delay: float, method: Any, *args: Any) -> Any:
        self.timers.append((delay, method, args))
        return None


def make_gossip(tmp_path, now: list[float], **config: Any) -> RecordingGossip:
    ctx = NodeContext(NodeConfig(host="127.0.0.1", port=5000, name="me", data_dir=tmp_path, peer_timeout=60.0, **config))
    return RecordingGossip(ctx, clock=lambda: now[0], rng=random.Random(3))


def make_tried(gm: GossipManager, ports: range) -> list[tuple[str, int]]:
    addrs = [("127.0.0.1", port) for port in ports]
    for addr in addrs:
        gm.on_gossip_reply(GossipReply(*addr, f"p{addr[1]}"), addr)  # heard of
    gm.keep_alive()  # probed
    for addr in addrs:
        gm.on_gossip_reply(GossipReply(*addr, f"p{addr[1]}"), addr)  # answered: tried
    assert set(gm.tried) == set(addrs)
    gm.sent.clear()
    return addrs


def test_relay_goes_to_a_few_random_tried_peers_never_excluded_ones(tmp_path):
    now = [0.0]
    gm = make_gossip(tmp_path, now)
    addrs = make_tried(gm, range(6001, 6031))
    now[0] = 30.0  # long after our keep-alive: an answer now is not one to it
    gm.on_gossip_reply(GossipReply("127.0.0.9", 9000, "heard-of"), ("127.0.0.9", 9000))  # new table only
    assert ("127.0.0.9", 9000) in gm.new
    gm.sent.clear()
    message = Announce(make_chain(1, DIFFICULTY)[0])
    excluded = addrs[:5]
    for _ in range(50):
        gm.relay(message, excluded)
        targets = [addr for sent, addr in gm.sent if sent == message]
        assert len(targets) == RELAY_FANOUT == len(set(targets))
        assert set(targets) <= set(addrs) - set(excluded)
        gm.sent.clear()
    # Fewer eligible peers than the fan-out: each of them, once.
    gm.relay(message, addrs[3:])
    assert sorted(addr for _, addr in gm.sent) == addrs[:3]


def test_stale_answers_only_to_tried_peers_and_at_most_every_interval(tmp_path):
    now = [0.0]
    gm = make_gossip(tmp_path, now)
    addrs = make_tried(gm, range(6001, 6004))
    message = Announce(make_chain(1, DIFFICULTY)[0])
    gm.answer_stale(message, ("10.1.2.3", 4000))  # a forged or unknown source: never aimed there
    assert gm.sent == []
    for _ in range(20):
        gm.answer_stale(message, addrs[0])
    gm.answer_stale(message, addrs[1])
    assert gm.sent == [(message, addrs[0]), (message, addrs[1])]
    now[0] = STALE_ANSWER_INTERVAL - 0.1
    gm.answer_stale(message, addrs[0])
    assert len(gm.sent) == 2
    now[0] = STALE_ANSWER_INTERVAL + 0.1
    gm.answer_stale(message, addrs[0])
    assert gm.sent[-1] == (message, addrs[0]) and len(gm.sent) == 3


def test_stale_answer_table_is_bounded(tmp_path):
    now = [0.0]
    gm = make_gossip(tmp_path, now)
    addrs = make_tried(gm, range(6001, 6257))  # a full tried table
    message = Announce(make_chain(1, DIFFICULTY)[0])
    for step in range(4):
        now[0] = step * STALE_ANSWER_INTERVAL * 2
        for addr in addrs:
            gm.on_gossip(Gossip(*addr, f"alive-{step}-{addr[1]}", "p"), addr)  # keep them tried
            gm.answer_stale(message, addr)
    assert len(gm._stale_answered) <= 2 * len(addrs)


def test_well_known_peer_is_retried_with_backoff_until_one_answers(tmp_path):
    now = [0.0]
    gm = make_gossip(tmp_path, now)
    well_known = ("127.0.0.1", 7000)
    gm.well_known = [well_known]
    gm.expire()  # no peer tried: a retry is scheduled
    assert [delay for delay, _, _ in gm.timers] == [WELL_KNOWN_RETRY_FIRST]
    delays, ids = [], set()
    for _ in range(8):
        delay, method, args = gm.timers.pop()
        delays.append(delay)
        now[0] += delay
        method(*args)
        sent = [m for m, addr in gm.sent if addr == well_known and isinstance(m, Gossip)]
        ids.add(sent[-1].id)
    assert delays == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0, 10.0]
    assert len(ids) == 8  # a fresh id each time: a peer that saw a lost one answers the next
    assert max(delays) == WELL_KNOWN_RETRY_MAX
    # It answers: promoted to tried, and the retries stop.
    gm.on_gossip_reply(GossipReply(*well_known, "seed"), well_known)
    assert well_known in gm.tried
    delay, method, args = gm.timers.pop()
    gm.sent.clear()
    method(*args)
    assert gm.sent == [] and gm.timers == []
    gm.expire()
    assert gm.timers == []  # a tried peer: nothing scheduled
