"""The sync engine, scenario by scenario, on a simulated network with a virtual clock.

Every scenario runs twice: driven as the ConsensusRunner drives it (ticked only at
`next_deadline`, ChainKeeper's answer to an apply coming later as a message) and
ticked every 5 ms (a tick at any time, e.g. from a timer that became stale, must
be harmless).
"""
from __future__ import annotations

import copy
import dataclasses
import heapq
import random
from typing import Callable

import pytest

from chain.block import Block
from chain.sync import Apply, RoundOver, StartRound, SwitchStaged
from messages.wire import MAX_HEIGHT, Stats
from sim.chains import make_chain, mine_block
from tests.chain.sync_harness import DIFFICULTY, SimPeer
from tests.chain.sync_harness import Harness as PollingHarness

HONEST = [("127.0.0.1", 7000 + i) for i in range(4)]
LIAR = ("127.0.0.66", 6666)
STRANGER = ("127.0.0.99", 9999)
APPLY_DELAY = 0.05  # virtual seconds ChainKeeper takes to answer an apply


class DeadlineHarness(PollingHarness):
    """Ticks only when the engine's `next_deadline` comes, as the actor's one timer does,
    and answers Apply / SwitchStaged `APPLY_DELAY` later, as ChainKeeper's message does.

    Checks on the way what the actor relies on: a tick leaves nothing due (else its
    timer would spin), and no second apply is issued while one is out.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ticks = 0
        self.out: Apply | SwitchStaged | None = None
        self.hold = False  # True: the answer to an apply is lost (ChainKeeper down)
        self.probe: random.Random | None = None  # set: check ticks between deadlines (see `_probe`)
        self.missed: list[tuple[float, list]] = []

    def run(self, until: float, stop: Callable[["PollingHarness"], bool] | None = None) -> None:
        while self.now < until:
            if stop is not None and stop(self):
                return
            event = self._events[0][0] if self._events else float("inf")
            if self.probe is not None:
                self._probe(min(event, until))
            deadline = self.engine.next_deadline(self.now)
            due = float("inf") if deadline is None else max(deadline, self.now)
            if min(event, due) > until:
                self.now = until
                return
            if event <= due:
                at, _, kind, payload = heapq.heappop(self._events)
                self.now = max(self.now, at)
                self._deliver(kind, payload)
            else:
                self.now = due
                self.ticks += 1
                self.do(self.engine.tick(self.now))
                after = self.engine.next_deadline(self.now)
                assert after is None or after > self.now, f"still due after a tick at {self.now}: {after}"
            r = self.engine.round
            if r is not None and r.attempt is not None:
                a = r.attempt
                self.max_held = max(self.max_held, len(a.buffer) + a.req.inflight_count + len(a.linked))

    def _probe(self, until: float) -> None:
        """A tick at a random time before the exact next deadline (and the next arrival) must
        do nothing: else the actor, which ticks only at deadlines, would miss what it does."""
        due = self.engine._next_due(self.now)
        until = min(until, due if due is not None else float("inf")) - 1e-9
        if until > self.now and self.probe.random() < 0.3:
            at = self.now + (until - self.now) * self.probe.random()
            actions = copy.deepcopy(self.engine).tick(at)
            if actions:
                self.missed.append((at, actions))

    def do(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, (Apply, SwitchStaged)):
                assert self.out is None, "a second apply while the answer to one is out"
                assert self.engine.applying
                self.out = action
                if not self.hold:
                    self.inject(APPLY_DELAY, "call", (DeadlineHarness._answer,))
            else:
                super().do([action])

    def _answer(self) -> None:
        """ChainKeeper's answer: the tip notice first (`_apply` sets the tip), then whether it was applied."""
        action, self.out = self.out, None
        self.do(self.engine.on_applied(self.carry_out(action), self.now))

    def carry_out(self, action: Apply | SwitchStaged) -> bool:
        """What ChainKeeper does with an apply: True if our chain is now the synced one."""
        if isinstance(action, Apply):
            ok = self._apply(action.first, list(action.blocks), "memory")
        else:
            blocks = [self.staging.get(h) for h in range(action.first, action.top + 1)]
            ok = None not in blocks and blocks[-1].hash == action.top_hash and self._apply(action.first, blocks, "staged")
            if ok:
                self.staging.clear()
        return bool(ok)


Harness: type[PollingHarness] = DeadlineHarness


@pytest.fixture(autouse=True, params=["deadlines", "polling"])
def ticking(request, monkeypatch) -> str:
    """Which Harness the scenarios below get (they name it `Harness`)."""
    if request.param == "polling":
        monkeypatch.setitem(globals(), "Harness", PollingHarness)
    return request.param


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


@pytest.mark.parametrize("block_delay", [2.0, 3.0])
def test_backers_slow_to_serve_blocks_are_waited_for_not_set_aside(chain, block_delay):
    """Eight backers answer STATS in tens of ms but GET_BLOCK only after seconds (loaded
    machines). The claimed top is asked of all of them at once; before, each re-send of it
    struck every backer, all were set aside within a second as silent, and the chain was
    never fetched. Now each is struck at most once per its own timeout: the first try syncs."""
    peers = [SimPeer((f"127.0.1.{i + 1}", 9000), chain[:60], delay=0.03 + 0.02 * i, block_delay=block_delay)
             for i in range(8)]
    h = Harness(chain[:50], peers)
    h.start("announce")
    h.run(120, stop=lambda h: synced(h, chain[:60]))
    assert synced(h, chain[:60])
    assert h.results == [r for r in h.results if r.startswith("synced")]  # one attempt: nothing abandoned
    assert h.engine.round is None or not h.engine.round.set_aside


def test_a_slow_peer_is_paced_not_stormed(chain):
    slow = SimPeer(HONEST[0], chain, delay=0.3, serial=True)
    h = Harness(chain[:1400], [slow])
    h.start()
    h.run(120, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    assert len(slow.get_blocks) < 100 * 2  # requests at the rate it answers: a few duplicates, no storm
    assert h.now < 100 * 0.3 * 2.5


def test_no_such_block_fails_over_at_the_timeout(chain):
    """A "no such block" reply may be forged, so it ends nothing by itself: the requests that
    drew it go to the other peer when they time out, and the peer lacking them is set aside."""
    lacking = SimPeer(HONEST[0], chain, serve=lambda hgt: chain[hgt] if hgt >= 1450 else None, delay=0.001)
    h = Harness(chain[:1300], [lacking, SimPeer(HONEST[1], chain, delay=0.05)])
    h.start()
    h.run(30, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    assert HONEST[0] not in h.engine.banned  # lacking blocks is not a lie
    assert h.engine.null_replies > 0


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


def test_a_triggered_round_asks_its_announcer_and_a_sample_a_full_round_asks_everyone(chain):
    """With 100 peers, a round started by an ANNOUNCE asks the announcer first and 16 others;
    the timer's round asks the first 64 (STATS with every block to everyone was most of a node's traffic)."""
    peers = [(f"127.0.{i // 200}.{i % 200 + 1}", 9000) for i in range(100)]
    announcer = ("127.9.9.9", 9000)  # no peer of ours yet
    ours = [b.hash for b in chain[:100]]

    def asked(actions):
        return [addr for action in actions for _, addr in action.messages]

    h = Harness(chain[:100], [])
    h.engine.on_announce(announcer, 150, 0.0)
    started = h.engine.tick(0.5)
    assert started == [StartRound(started[0].reason, (announcer,))]
    first = asked(h.engine.start_round(started[0].reason, peers, ours, None, 0.5, extra=started[0].extra_peers))
    assert first == [announcer, *peers[: h.engine.s.triggered_stats_peers]]

    h = Harness(chain[:100], [])
    full = asked(h.engine.start_round("timer", peers, ours, None, 0.0))
    assert full == peers[: h.engine.s.max_stats_peers]
    h = Harness(chain[:100], [])
    h.engine.on_announce(announcer, 150, 0.0)
    assert h.engine.on_consensus(0.1) == [StartRound("CONSENSUS", (announcer,))]  # folded in: a full round now
    full = asked(h.engine.start_round("CONSENSUS", peers, ours, None, 0.1, extra=(announcer,)))
    assert full == [announcer, *peers[: h.engine.s.max_stats_peers - 1]]


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


# ---------------------------------------------------------------- deadlines and answers that come later

ONCE = pytest.mark.parametrize("ticking", ["deadlines"], indirect=True)  # the engine alone: no harness to vary


def near(deadline: float | None, due: float, grain: float = 0.005) -> bool:
    """`deadline` is `due` rounded up to the tick grid (strictly after it)."""
    return deadline is not None and due < deadline <= due + grain + 1e-6


@ONCE
def test_an_idle_engine_needs_no_tick_until_a_trigger_is_due(chain):
    h = DeadlineHarness(chain[:100], [])
    e = h.engine
    assert e.next_deadline(0.0) is None
    e.on_announce(HONEST[0], 500, 1.0)
    due = e.next_deadline(1.0)
    assert near(due, 1.0 + e.s.trigger_delay)
    assert e.tick(due - 0.01) == []
    assert [type(a) for a in e.tick(due)] == [StartRound]
    assert e.next_deadline(due) is None


@ONCE
def test_collecting_wakes_for_the_stats_resend_and_the_end_of_the_collection(chain):
    h = DeadlineHarness(chain[:100], [])
    e = h.engine
    e.start_round("test", [HONEST[0]], [b.hash for b in chain[:100]], None, 0.0)
    due = e.next_deadline(0.0)
    assert near(due, e.s.stats_resend_seconds)
    assert e.tick(due - 0.01) == []
    resent = e.tick(due)
    assert [m for action in resent for m, _ in action.messages] == [Stats()]
    times = [due]
    while e.round is not None:
        times.append(e.next_deadline(times[-1]))
        out = e.tick(times[-1])
    assert out == [RoundOver("nothing better")]
    assert near(times[-1], e.s.collect_seconds) and len(times) == 4  # re-sends at 0.25, 0.5, 0.75; ends at 1.0


@ONCE
def test_a_request_is_re_sent_at_its_timeout_not_before(chain):
    silent = SimPeer(HONEST[0], chain, serve=lambda hgt: "silent")
    h = DeadlineHarness(chain[:1490], [silent])
    h.start()
    h.run(1.0, stop=lambda h: len(silent.get_blocks) >= 1)
    timeout_at = h.engine.round.attempt.req.next_deadline()
    h.run(5.0, stop=lambda h: len(silent.get_blocks) >= 2)
    assert silent.get_blocks == [1499, 1499]
    assert near(h.now, timeout_at)  # re-sent at its timeout, on the tick grid: not before, not a poll's period later
    assert h.ticks <= 2  # the time a hedge would be due (nobody to hedge with), the timeout


@ONCE
@pytest.mark.parametrize("scenario", ["lossy", "slow", "lossy extension"])
def test_between_deadlines_a_tick_would_do_nothing(chain, scenario):
    """`next_deadline` misses nothing a 5 ms poll would have done: the early re-sends and
    hedges near the frontier, the timeouts, the stall and progress times."""
    peers = {"lossy": lambda: honest(chain, 2, loss=0.2),
             "slow": lambda: [SimPeer(HONEST[0], chain, delay=0.3, serial=True)],
             "lossy extension": lambda: honest(chain, 3, loss=0.3)}[scenario]()
    h = DeadlineHarness({"lossy": [], "slow": chain[:1400], "lossy extension": chain[:1300]}[scenario], peers)
    h.probe = random.Random(5)
    h.start()
    h.run(120, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    assert h.missed == []


@ONCE
def test_a_round_waiting_on_a_slow_peer_ticks_only_at_its_deadlines(chain):
    """What the 5 ms poll was for (retransmission timers) now comes from the deadlines:
    the same requests, with a tick only when one is due."""
    slow = SimPeer(HONEST[0], chain, delay=0.3, serial=True)
    h = DeadlineHarness(chain[:1400], [slow])
    h.start()
    h.run(120, stop=lambda h: synced(h, chain))
    assert synced(h, chain)
    assert len(slow.get_blocks) < 100 * 2
    assert h.ticks * 20 < h.now / 0.005  # a 5 ms poll would have ticked 20 times as often, at least


@ONCE
def test_a_lost_apply_answer_is_given_up_on_and_a_late_one_changes_nothing(chain):
    h = DeadlineHarness(chain[:1450], honest(chain, 2))
    h.hold = True
    h.start()
    h.run(10, stop=lambda h: h.out is not None)
    e, lost = h.engine, h.out
    assert isinstance(lost, Apply) and e.applying
    assert e.next_deadline(h.now) is None  # only the answer (or the actor's give-up) moves it now
    assert e.tick(h.now + e.s.round_seconds + 1) == [] and e.applying  # not even the round deadline
    # The actor's deadline passes: "not applied".
    given_up = e.on_applied(False, h.now + 120, "ChainKeeper did not answer the apply")
    assert given_up[0] == RoundOver("ChainKeeper did not answer the apply") and isinstance(given_up[1], StartRound)
    assert not e.applying and e.last_result == "ChainKeeper did not answer the apply"
    # ChainKeeper applies it after all: its tip notice comes first (carry_out sets the tip), then the answer.
    assert h.carry_out(lost)
    assert e.on_applied(True, h.now + 121) == []
    assert e.last_result == "ChainKeeper did not answer the apply" and e.our_len == len(chain)
    h.do(given_up[1:])  # the re-run the give-up asked for: nothing left to fetch
    h.run(h.now + 10, stop=lambda h: h.engine.round is None)
    assert h.results[-1] == "our chain is the best valid one"
    assert h.applied == [("memory", 1450, 50)]


@ONCE
def test_while_an_apply_is_out_nothing_issues_another(chain):
    longer = make_chain(1600, DIFFICULTY, base=chain, tag="longer")
    h = DeadlineHarness(chain[:1450], honest(chain, 2))
    h.hold = True
    h.start()
    h.run(10, stop=lambda h: h.out is not None)
    e, now = h.engine, h.now
    outputs = [
        e.on_consensus(now),
        e.on_announce(HONEST[2], 1599, now),
        e.on_stats(HONEST[3], 1600, longer[-1].hash, now),
        e.start_round("timer", [HONEST[3]], [b.hash for b in chain[:1450]], None, now),
        e.set_tip(1451, now),
        e.tick(now + 5),
    ]
    assert not [a for out in outputs for a in out if isinstance(a, (Apply, SwitchStaged, StartRound))]
    assert e.applying
    done = e.on_applied(True, now + 6)
    assert done[0] == RoundOver(done[0].result) and done[0].result.startswith("synced to height 1500")
    assert [type(a) for a in done[1:]] == [StartRound]  # the triggers seen meanwhile: one round, after
