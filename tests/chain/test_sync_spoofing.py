"""Forged replies and dropped forks, against the sync engine alone (virtual time).

An off-path attacker knows which peer we sync from and sends GET_BLOCK_REPLYs with
that peer's exact address: all-null "no such block" replies, or false blocks racing
the peer's own answers. Only a real answer is evidence: the peer is never set aside
or blamed for them, and the sync is at most twice as slow (in virtual time: this
harness has no wall clock). And a peer's second, longer fork, announced soon after
the first, is followed.
"""
from __future__ import annotations

import dataclasses

import pytest

from chain.block import Block
from sim.chains import make_chain
from tests.chain.sync_harness import DIFFICULTY, Harness, SimPeer

PEER = ("127.0.0.1", 7000)
OTHER = ("127.0.0.2", 7001)
FLOOD_INTERVAL = 0.005  # 200 datagrams a second


@pytest.fixture(scope="module")
def chain() -> list[Block]:
    return make_chain(300, DIFFICULTY)


def catch_up(chain, spoof=None, seed: int = 0, **peer) -> Harness:
    """A node at 20 blocks syncing 280 more from one peer; `spoof(h)` runs every 5 ms meanwhile."""
    h = Harness(chain[:20], [SimPeer(PEER, chain, delay=peer.pop("delay", 0.01), **peer)], seed=seed)

    def flood(h: Harness) -> None:
        spoof(h)
        h.inject(FLOOD_INTERVAL, "call", (flood,))

    if spoof is not None:
        h.inject(0.0, "call", (flood,))
    h.start()
    h.run(120, stop=lambda h: h.synced_to(chain))
    return h


def null_flood(h: Harness) -> None:
    h.do(h.engine.on_block(PEER, None, h.now))


@pytest.mark.parametrize("seed", range(3))
def test_spoofed_nulls_at_200_per_second_cost_at_most_twice_the_time(chain, seed):
    baseline = catch_up(chain, seed=seed)
    attacked = catch_up(chain, null_flood, seed=seed)
    assert baseline.synced_to(chain) and attacked.synced_to(chain)
    assert attacked.now <= 2 * baseline.now, (attacked.now, baseline.now, attacked.results)
    assert attacked.results[-1].startswith("synced to height 300")  # in the first round: never set aside
    assert attacked.engine.null_replies > 0


def test_spoofed_nulls_on_a_lossy_link_do_not_set_the_peer_aside(chain):
    """A lost request times out; the nulls around it prove nothing while the peer answers the rest."""
    h = catch_up(chain, null_flood, seed=4, loss=0.1)
    assert h.synced_to(chain)
    assert not any("abandoned" in r or "retry" in r for r in h.results), h.results


@pytest.mark.parametrize("seed", range(3))
def test_forged_blocks_racing_the_peer_get_it_neither_blamed_nor_set_aside(chain, seed):
    """Every GET_BLOCK the peer (20-40 ms away) is sent is answered first by a forgery with its
    address: the same height, false contents (or a false hash), 15 ms after the request."""
    forged = {b.height: dataclasses.replace(b, messages=("forged",)) for b in chain}
    wrong_hash = {b.height: dataclasses.replace(b, hash="0" * 64) for b in chain}

    def baseline_run():
        return catch_up(chain, seed=seed, delay=0.03)

    h = Harness(chain[:20], [SimPeer(PEER, chain, delay=0.03)], seed=seed)
    peer = h.peers[PEER]
    original = peer.block

    def serve(height):
        fake = forged if height % 2 else wrong_hash
        h.inject(0.015, "block", (PEER, fake[height]))  # races the peer's own answer (sent with `delay` 20-45 ms)
        return original(height)

    peer.block = serve
    h.start()
    h.run(120, stop=lambda h: h.synced_to(chain))
    assert h.synced_to(chain)
    assert PEER not in h.engine.banned
    assert h.results[-1].startswith("synced to height 300"), h.results
    assert h.engine.rejected_replies > 0
    assert h.now <= 2 * baseline_run().now


def test_unsolicited_replies_are_dropped_and_counted(chain):
    h = Harness(chain[:20], [SimPeer(PEER, chain)])
    e = h.engine
    assert e.on_block(PEER, None, 0.0) == [] and e.on_block(PEER, chain[25], 0.0) == []  # no round yet
    h.start()
    h.run(0.3, stop=lambda h: h.engine.round.attempt is not None)
    before = e.ignored_replies
    e.on_block(PEER, chain[5], h.now)  # a height nobody asked for
    e.on_block(OTHER, chain[299], h.now)  # a height in flight, from a stranger
    assert e.ignored_replies == before + 2
    assert e.status(h.now)["ignored_replies"] == before + 2
    h.run(30, stop=lambda h: h.synced_to(chain))
    assert h.synced_to(chain)


def test_a_null_before_any_request_is_unsolicited_and_costs_the_peer_nothing(chain):
    """While STATS are collected nothing is in flight: a forged null then is dropped and counted."""
    h = Harness(chain[:20], [SimPeer(PEER, chain)])
    h.start()
    assert h.engine.round is not None and h.engine.round.stage == "collect"
    before = h.engine.ignored_replies
    for _ in range(50):
        h.do(h.engine.on_block(PEER, None, h.now))
    assert h.engine.ignored_replies == before + 50 and h.engine.null_replies == 0
    h.run(30, stop=lambda h: h.synced_to(chain))
    assert h.synced_to(chain)
    assert len(h.results) == 1 and h.results[0].startswith("synced to height 300 (280 blocks")  # one round, nothing set aside


def test_a_dead_peer_is_still_set_aside_under_a_spoofed_null_flood(chain):
    """The flood must not keep a peer that stopped answering in the attempt: its
    requests time out after its nulls, and it goes; the other peer finishes the sync."""
    dead = {"on": False}
    h = Harness(chain[:20], [SimPeer(PEER, chain, serve=lambda hgt: "silent" if dead["on"] else chain[hgt]),
                             SimPeer(OTHER, chain, delay=0.05)])

    def flood(h: Harness) -> None:
        null_flood(h)
        h.inject(FLOOD_INTERVAL, "call", (flood,))

    def die(h: Harness) -> None:
        dead["on"] = True

    h.inject(0.0, "call", (flood,))
    h.inject(0.2, "call", (die,))
    h.start()
    h.run(120, stop=lambda h: h.synced_to(chain))
    assert h.synced_to(chain)
    assert h.results[-1].startswith("synced to height 300"), h.results


def test_a_peer_lacking_blocks_is_set_aside_once_its_requests_time_out(chain):
    """Its nulls are its own here: the requests that drew them time out unanswered, twice."""
    lacking = SimPeer(PEER, chain, serve=lambda hgt: chain[hgt] if hgt >= 250 else None, delay=0.001)
    h = Harness(chain[:20], [lacking, SimPeer(OTHER, chain, delay=0.05)])
    h.start()
    h.run(60, stop=lambda h: h.synced_to(chain) or PEER in h.engine.round.set_aside)
    assert PEER in h.engine.round.set_aside and PEER not in h.engine.banned
    h.run(60, stop=lambda h: h.synced_to(chain))
    assert h.synced_to(chain)


# ---------------------------------------------------------------- longer forks


def test_a_second_longer_fork_from_the_same_peer_soon_after_is_followed(chain):
    """41 blocks announced and taken; 2 s later the same peer announces 45 (another fork): followed."""
    base = chain[:30]
    fork41 = make_chain(41, DIFFICULTY, base=base, tag="f41")
    fork45 = make_chain(45, DIFFICULTY, base=base, tag="f45")
    peer = SimPeer(PEER, fork41)
    h = Harness(base, [peer])

    def announce(blocks):
        def go(h: Harness) -> None:
            peer.blocks = blocks
            h.do(h.engine.on_announce(PEER, blocks[-1].height, h.now))
        return go

    h.inject(0.0, "call", (announce(fork41),))
    h.run(2, stop=lambda h: h.synced_to(fork41))
    assert h.synced_to(fork41)
    h.inject(2.0 - h.now, "call", (announce(fork45),))
    h.run(12, stop=lambda h: h.synced_to(fork45))
    assert h.synced_to(fork45), h.results
    assert h.now <= 2.0 + 10.0


def test_a_longer_claim_during_an_attempt_is_followed_when_it_ends(chain):
    """The peer we fetch 41 blocks from says, mid-attempt, that it now has 45: after the 41 are
    in, a round follows at once (not after the per-peer gap, not at the next periodic round)."""
    base = chain[:30]
    fork41 = make_chain(41, DIFFICULTY, base=base, tag="g41")
    fork45 = make_chain(45, DIFFICULTY, base=fork41, tag="g45")
    peer = SimPeer(PEER, fork41, delay=0.1, serial=True)
    h = Harness(base, [peer])
    h.do(h.engine.on_announce(PEER, 40, 0.0))

    def grow(h: Harness) -> None:
        peer.blocks = fork45
        h.do(h.engine.on_stats(PEER, 45, fork45[-1].hash, h.now))
        h.do(h.engine.on_announce(PEER, 44, h.now))

    h.run(5, stop=lambda h: h.engine.round is not None and h.engine.round.attempt is not None)
    h.inject(0.3, "call", (grow,))
    arrived = h.now + 0.3
    h.run(60, stop=lambda h: h.synced_to(fork45))
    assert h.synced_to(fork45), h.results
    assert h.now <= arrived + 10.0
    assert h.applied[0][2] == 11  # the 41-block chain was taken first (its attempt was not dropped)


def test_a_repeated_claim_of_the_same_length_is_still_rate_limited(chain):
    h = Harness(chain[:100], [])
    e = h.engine
    e.on_announce(PEER, 150, 0.0)
    assert [type(a).__name__ for a in e.tick(0.5)] == ["StartRound"]
    e.round = None  # as if that round ended
    assert e.on_announce(PEER, 150, 1.0) == [] and e.tick(2.0) == []
    e.on_announce(PEER, 151, 2.5)  # longer: never dropped
    assert [type(a).__name__ for a in e.tick(3.0)] == ["StartRound"]


def test_an_announced_chain_is_followed_even_if_its_peer_is_too_busy_to_answer_stats(chain):
    """The round an announce starts takes the announce as the peer's claim when its STATS_REPLY
    doesn't come within the collection (a peer whose queue is full of our GET_BLOCKs)."""
    base = chain[:30]
    fork = make_chain(45, DIFFICULTY, base=base, tag="busy")
    peer = SimPeer(PEER, fork, answer_stats=False)
    h = Harness(base, [peer])
    h.do(h.engine.on_announce(PEER, 44, 0.0, fork[-1].hash))
    h.run(30, stop=lambda h: h.synced_to(fork))
    assert h.synced_to(fork), h.results
    assert peer.stats_asked > 0  # it was asked, and never answered
