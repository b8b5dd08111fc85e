"""The sync engine, scenario by scenario, on a simulated network with a virtual clock."""
from __future__ import annotations

import dataclasses

import pytest

from chain.block import Block
from messages.wire import MAX_HEIGHT
from sim.chains import make_chain, mine_block
from tests.chain.sync_harness import DIFFICULTY, Harness, SimPeer

HONEST = [("127.0.0.1", 7000 + i) for i in range(4)]
LIAR = ("127.0.0.66", 6666)
STRANGER = ("127.0.0.99", 9999)


@pytest.fixture(scope="module")
def chain() -> list[Block]:
    return make_chain(1500, DIFFICULTY)


def honest(chain, n=2, **kw):
    return [SimPeer(HONEST[i], chain, **kw) for i in range(n)]


def synced(h: Harness, blocks) -> bool:
    return h.synced_to(blocks)


def test_fresh_sync_is_windowed_staged_and_linked(chain):
    h = Harness([], honest(chain, 2, loss=0.2))
    h.start()
    h.run(60, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    assert h.applied == [("staged", 0, 1500)]  # one switch from staging, after linked segments
    assert h.stage_writes >= 2
    assert h.max_held <= 1024 + 512 + 8  # the window plus one staging segment, whatever the length


def test_extension_costs_only_the_new_blocks(chain):
    h = Harness(chain[:1450], honest(chain, 2))
    h.start()
    h.run(10, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    asked = [x for p in h.peers.values() for x in p.get_blocks]
    assert min(asked) >= 1440 and len(asked) < 50 + 20  # a few fast retransmits: replies here reorder a lot
    assert h.applied == [("memory", 1450, 50)]


def test_reorg_onto_a_longer_fork_without_a_fork_search(chain):
    fork = make_chain(1510, DIFFICULTY, base=chain[:1490], tag="fork")
    h = Harness(chain, honest(fork, 2, loss=0.2))
    h.start()
    h.run(10, stop=lambda h: synced(h, fork))
    assert synced(h, fork)
    asked = [x for p in h.peers.values() for x in p.get_blocks]
    assert len([x for x in asked if x < 1490]) < 40


def test_a_huge_claim_with_a_fake_top_block_costs_a_few_requests_and_a_ban(chain):
    top = 10**18
    fake_top = mine_block(Block(top - 2, "x", ("x",), "0", 1, "f" * 63 + "0"), DIFFICULTY, mined_by="liar")
    liar = SimPeer(LIAR, [], claim=(top, fake_top.hash), serve=lambda hgt: fake_top if hgt == top - 1 else dataclasses.replace(chain[5], height=hgt))
    h = Harness(chain[:1000], [liar, *honest(chain, 2)])
    h.start()
    h.run(30, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    assert len(liar.get_blocks) < 64  # its congestion window, not its claim
    assert LIAR in h.engine.banned
    assert h.max_held < 1100


def test_the_largest_height_is_handled_without_floats(chain):
    fake = SimPeer(LIAR, [], claim=(MAX_HEIGHT, "0" * 64), serve=lambda hgt: None)
    h = Harness(chain[:1490], [fake, *honest(chain, 1)])
    h.start()
    h.run(2, stop=lambda h: h.engine.round is not None and h.engine.round.attempt is not None)
    status = h.engine.status(h.now)
    assert status["target_height"] == MAX_HEIGHT and isinstance(status["total"], int)
    h.progress = h.engine.progress_line(h.now)
    h.run(30, stop=lambda h: synced(h, chain))
    assert synced(h, chain)


@pytest.mark.parametrize("seed", range(8))
def test_a_probe_liar_never_keeps_us_off_the_honest_chain(chain, seed):
    """It agrees with the honest claim but answers heights below our top with our own (public) blocks."""
    ours = make_chain(1200, DIFFICULTY, base=chain[:1000], tag="ours")
    liar = SimPeer(LIAR, chain, serve=lambda hgt: ours[hgt] if hgt < len(ours) else chain[hgt])
    h = Harness(ours, [liar, *honest(chain, 1, loss=0.1)], seed=seed)
    h.start()
    h.run(30, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    assert HONEST[0] not in h.engine.banned
    assert not h.engine.bad_chains


def test_a_liar_with_false_contents_under_a_true_hash_is_the_one_blamed(chain):
    """Block contents that don't hash to the (true) hash field make an honest neighbour fail to link."""
    def serve(hgt):
        return dataclasses.replace(chain[hgt], messages=("forged",)) if hgt < len(chain) else None
    liar = SimPeer(LIAR, chain, serve=serve)
    h = Harness(chain[:1300], [liar, *honest(chain, 2)])
    h.start()
    h.run(30, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    assert LIAR in h.engine.banned
    assert not any(p in h.engine.banned for p in HONEST)


def test_forged_replies_from_a_stranger_are_ignored(chain):
    h = Harness(chain[:200], honest(chain, 2))
    forged = [dataclasses.replace(b, messages=("forged",)) for b in chain]

    def flood(h):
        for height in range(200, 1500, 7):
            h.do(h.engine.on_block(STRANGER, forged[height], h.now))
            h.do(h.engine.on_block((HONEST[0][0], 1), forged[height], h.now))  # same host, another port
        if h.now < 5:
            h.inject(0.05, "call", (flood,))

    h.start()
    h.inject(0.05, "call", (flood,))
    h.run(30, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    assert not h.engine.banned and not h.engine.bad_chains
    assert h.engine.ignored_replies > 0


def test_silent_claimers_are_set_aside_fast(chain):
    longer = make_chain(1600, DIFFICULTY, base=chain, tag="phantom")
    silent = [SimPeer(("127.0.1.%d" % i, 8000 + i), longer, serve=lambda hgt: "silent") for i in range(12)]
    h = Harness(chain[:1000], [*silent, *honest(chain, 1)])
    h.start()
    h.run(60, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    assert h.now < 10
    assert all(len(p.get_blocks) <= 12 for p in silent)  # a handful each, then set aside


def test_a_slow_peer_is_paced_not_stormed(chain):
    slow = SimPeer(HONEST[0], chain, delay=0.3, serial=True)
    h = Harness(chain[:1400], [slow])
    h.start()
    h.run(120, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    assert len(slow.get_blocks) < 100 * 2  # requests at the rate it answers: a few duplicates, no storm
    assert h.now < 100 * 0.3 * 2.5


def test_no_such_block_fails_over_at_once(chain):
    lacking = SimPeer(HONEST[0], chain, serve=lambda hgt: chain[hgt] if hgt >= 1450 else None, delay=0.001)
    h = Harness(chain[:1300], [lacking, SimPeer(HONEST[1], chain, delay=0.05)])
    h.start()
    h.run(30, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    assert HONEST[0] not in h.engine.banned  # lacking blocks is not a lie


def test_a_peer_whose_chain_changes_mid_sync_is_re_asked_not_banned(chain):
    other = make_chain(1600, DIFFICULTY, base=chain[:1200], tag="other")
    mover = SimPeer(HONEST[0], chain)
    h = Harness(chain[:1000], [mover, SimPeer(HONEST[1], chain, delay=0.02)])

    def reorg(h):
        mover.blocks = other  # it now serves (and claims) another chain

    h.start()
    h.inject(1.1, "call", (reorg,))
    h.run(30, stop=lambda h: synced(h, chain) or synced(h, other))
    assert synced(h, chain) or synced(h, other)
    assert HONEST[0] not in h.engine.banned


def test_a_chain_whose_linked_blocks_lack_the_work_is_marked_bad(chain):
    weak = make_chain(1300, 0, base=chain[:1000], tag="weak")  # linked, but no proof of work
    weak[-1] = mine_block(weak[-2], DIFFICULTY, mined_by="top")  # only its top has it
    h = Harness(chain[:1000], [SimPeer(LIAR, weak), *honest(chain[:1100], 1)])
    h.start()
    h.run(30, stop=lambda h: synced(h, chain[:1100]))
    assert synced(h, chain[:1100])
    assert weak[-1].hash in h.engine.bad_chains


def test_progress_survives_a_crash_by_resuming_from_staging(chain):
    first = Harness([], honest(chain, 2))
    first.start()
    first.run(30, stop=lambda h: len(h.staging) >= 1000)
    assert first.chain == [] and len(first.staging) >= 1000  # nothing applied yet, much staged
    # A new engine (after kill -9) with what the staging table kept:
    peers = honest(chain, 2)
    second = Harness([], peers, staging=first.staging)
    second.start()
    second.run(30, stop=lambda h: synced(h, chain))
    assert synced(second, chain)
    asked = [x for p in peers for x in p.get_blocks]
    assert max(asked) < 1500 - 1000 + 10


def test_a_grown_chain_reaches_what_was_staged(chain):
    staged = {b.height: b for b in chain[600:1400]}
    peers = honest(chain, 2)
    h = Harness([], peers, staging=staged, window=64)
    h.start()
    h.run(30, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    asked = set(x for p in peers for x in p.get_blocks)
    assert not asked & set(range(610, 1330))  # what the window had not reached when the jump came


def test_a_longer_chain_seen_in_a_stats_reply_starts_a_round_soon(chain):
    h = Harness(chain[:100], [])
    actions = h.engine.on_stats(HONEST[0], 150, chain[149].hash, 0.0)
    assert actions == []
    assert h.engine.tick(0.1) == []
    started = h.engine.tick(0.5)
    assert [type(a).__name__ for a in started] == ["StartRound"] and started[0].extra_peers == (HONEST[0],)
    # Rate-limited per peer: the same peer again soon is not another round.
    h.engine.on_stats(HONEST[0], 150, chain[149].hash, 1.0)
    assert h.engine.tick(2.0) == []
    # Not longer than ours: nothing.
    h.engine.on_stats(HONEST[1], 100, chain[99].hash, 3.0)
    assert h.engine.tick(4.0) == []


def test_an_announce_above_our_tip_starts_a_round_soon(chain):
    h = Harness(chain[:100], [])
    h.engine.on_announce(HONEST[0], 500, 0.0)
    assert [type(a).__name__ for a in h.engine.tick(0.4)] == ["StartRound"]
    assert h.engine.on_announce(HONEST[1], 50, 1.0) == [] and h.engine.tick(2.0) == []


def test_a_sync_that_stalls_is_retried_and_resumes_from_what_was_staged(chain):
    """A peer that stops answering mid-sync (a dead link, a restart) costs the attempt,
    not the sync: the round says so, a retry follows by itself, and the retry asks
    only for what was not staged yet."""
    outage = {"on": False}
    peer = SimPeer(HONEST[0], chain, serve=lambda hgt: "silent" if outage["on"] else chain[hgt])
    h = Harness([], [peer])
    h.start()
    h.run(0.5, stop=lambda h: h.stage_writes >= 1)
    assert h.stage_writes >= 1 and not synced(h, chain)
    outage["on"] = True
    h.run(h.now + 12)
    assert any("no longer chain fetched" in r and "retrying in 5s" in r for r in h.results), h.results
    assert not synced(h, chain)
    staged_low = min(h.staging)
    outage["on"] = False
    asked_before = len(peer.get_blocks)
    h.run(h.now + 30, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    assert any(r.startswith("start:retry after an abandoned sync") for r in h.results), h.results
    assert any(r.startswith(f"synced to height {len(chain)} ({len(chain)} blocks") for r in h.results), h.results
    assert all(x < staged_low + 8 for x in peer.get_blocks[asked_before:] if x != len(chain) - 1)


def test_a_claimer_that_never_serves_is_retried_with_growing_delays(chain):
    longer = make_chain(1510, DIFFICULTY, base=chain, tag="phantom")
    claimer = SimPeer(HONEST[0], longer, serve=lambda hgt: "silent")
    h = Harness(chain, [claimer])
    h.start()
    h.run(200)
    retries = [r for r in h.results if r.startswith("start:retry")]
    assert 3 <= len(retries) <= 6  # 5, 10, 20, 40, 80 s apart (plus each attempt's own stall), not every few seconds
    assert len(chain) == len(h.chain)


def test_peers_in_step_with_us_cost_no_fetch_and_no_retry(chain):
    """Regression (seen in the demo): peers claiming our own length and top were also tried as a
    top-index claim one block longer; every GET_BLOCK of that height came back empty, each round
    ended "abandoned" and was retried with backoff, with a WARNING each time."""
    h = Harness(chain[:300], honest(chain[:300], 2))
    h.start()
    h.run(10)
    assert h.results == ["our chain is the best valid one"]
    assert all(p.get_blocks == [] for p in h.peers.values())
    assert h.engine.wakeup_due() is None  # no retry round pending


def test_a_peer_that_reports_its_top_index_is_still_followed(chain):
    """The other reading of a claim of our own length: a chain one longer whose peers count from 0."""
    longer = chain[:301]
    peers = [SimPeer(HONEST[i], longer, claim=(300, longer[-1].hash)) for i in range(2)]
    h = Harness(chain[:300], peers)
    h.start()
    h.run(10, stop=lambda h: synced(h, longer))
    assert synced(h, longer)
