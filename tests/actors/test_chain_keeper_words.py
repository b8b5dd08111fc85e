"""No NEW_WORD is lost (issue 18, item 2): a reorg puts back the queued words of the blocks it replaces.

ChainKeeper is driven directly (no actor system, no sockets) on a data dir at difficulty 1.
"""
from __future__ import annotations

import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.chain_keeper import ChainKeeper
from chain.store import ChainStore
from config import NodeConfig
from runtime.context import NodeContext
from sim.chains import make_chain, mine_block

DIFFICULTY = 1


class Quiet(ChainKeeper):
    def _send_many(self, messages):
        pass


def start(data_dir) -> Quiet:
    keeper = Quiet(NodeContext(NodeConfig(data_dir=data_dir, difficulty=DIFFICULTY)))
    keeper.on_start()
    return keeper


def restart(keeper: Quiet) -> Quiet:
    data_dir = keeper.ctx.config.data_dir
    keeper.release()
    return start(data_dir)


def chain_of(keeper: Quiet) -> list:
    return keeper.get_blocks(0, keeper.height)


def queue(keeper: Quiet) -> list[str]:
    return keeper.pending_words(100_000)


def counts(keeper: Quiet) -> tuple[int, int, int]:
    return keeper.word_count(), keeper.health_details()["words_queued"], keeper.store.word_count()


def extend(base, count, tag, messages=()):
    """`count` blocks on top of `base`; block i carries messages[i] if given, else a default message."""
    blocks = list(base)
    for i in range(count):
        carried = tuple(messages[i]) if i < len(messages) and messages[i] else (f"{tag} default",)
        blocks.append(mine_block(blocks[-1] if blocks else None, DIFFICULTY, mined_by=tag, messages=carried,
                                 timestamp=1_700_000_000 + len(blocks)))
    return blocks


def test_a_fork_that_replaces_our_block_puts_its_words_back_in_order(tmp_path):
    keeper = start(tmp_path)
    chain = make_chain(20, DIFFICULTY)  # blocks 0..19
    assert keeper.apply_segment(0, chain)
    keeper.on_new_words([("alpha", "10.0.0.1"), ("beta", "10.0.0.2"), ("gamma", "local")])
    seen = [keeper.word_count()]
    ours = mine_block(chain[-1], DIFFICULTY, mined_by="me", messages=tuple(queue(keeper)))
    assert ours.height == 20 and keeper.add_mined_block(ours)
    seen.append(keeper.word_count())
    keeper.on_new_words([("delta", "10.0.0.1")])  # queued while block 20 is ours
    assert queue(keeper) == ["delta"]
    fork = make_chain(20 + 23, DIFFICULTY, base=chain[:20], tag="peer")  # 23 blocks from 19: 20..42
    assert keeper.apply_segment(20, fork[20:])
    assert keeper.tip() == (43, fork[-1].hash)
    seen.append(keeper.word_count() - 1)  # without delta
    assert seen == [3, 0, 3]
    assert queue(keeper) == ["alpha", "beta", "gamma", "delta"]  # back in their old places
    assert counts(keeper) == (4, 4, 4)
    keeper = restart(keeper)
    assert queue(keeper) == ["alpha", "beta", "gamma", "delta"] and counts(keeper) == (4, 4, 4)
    keeper.release()


def test_a_staged_switch_puts_back_only_the_words_the_new_chain_lacks(tmp_path):
    keeper = start(tmp_path)
    chain = make_chain(10, DIFFICULTY)
    assert keeper.apply_segment(0, chain)
    keeper.on_new_words([(w, "10.0.0.1") for w in ("a", "b", "c", "d")])
    ours = extend(chain, 2, "me", [("a", "b"), ("c",)])
    assert keeper.add_mined_block(ours[10]) and keeper.add_mined_block(ours[11])
    assert queue(keeper) == ["d"]
    theirs = extend(chain, 5, "peer", [(), ("b", "d"), ()])  # carries b (ours) and d (still queued)
    keeper.stage_blocks(theirs[10:])
    assert keeper.switch_to_staged(10, 14, theirs[-1].hash)
    assert queue(keeper) == ["a", "c"] and counts(keeper) == (2, 2, 2)
    # The peer's chain is in turn replaced by one without b and d: they come back too, in queue order.
    again = extend(chain, 6, "third")
    assert keeper.apply_segment(10, again[10:])
    assert queue(keeper) == ["a", "b", "c", "d"]
    keeper = restart(keeper)
    assert queue(keeper) == ["a", "b", "c", "d"] and counts(keeper) == (4, 4, 4)
    keeper.release()


def test_words_of_a_quarantined_tail_are_queued_again_on_start(tmp_path):
    keeper = start(tmp_path)
    chain = make_chain(5, DIFFICULTY)
    assert keeper.apply_segment(0, chain)
    keeper.on_new_words([("x", "local"), ("y", "local")])
    top = mine_block(chain[-1], DIFFICULTY, mined_by="me", messages=("x", "y"))
    assert keeper.add_mined_block(top) and queue(keeper) == []
    keeper.release()
    store = ChainStore(tmp_path)
    store._db.execute("UPDATE blocks SET nonce = 'tampered' WHERE height = 5")
    store.close()
    keeper = start(tmp_path)
    assert keeper.tip()[0] == 5
    assert queue(keeper) == ["x", "y"] and counts(keeper) == (2, 2, 2)
    keeper.release()


def test_a_word_table_from_before_mined_at_is_migrated(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "chain.sqlite3")
    db.execute("CREATE TABLE words (id INTEGER PRIMARY KEY AUTOINCREMENT, word TEXT NOT NULL, added REAL NOT NULL)")
    db.executemany("INSERT INTO words (word, added) VALUES (?, 0)", [("old1",), ("old2",)])
    db.commit()
    db.close()
    keeper = start(tmp_path)
    assert queue(keeper) == ["old1", "old2"]
    keeper.release()


# ---------------------------------------------------------------- property: random reorg sequences

POOL = [f"w{i}" for i in range(12)]

step = st.one_of(
    st.tuples(st.just("queue"), st.lists(st.sampled_from(POOL), min_size=1, max_size=4)),
    st.tuples(st.just("mine"), st.integers(0, 4)),  # our miner takes up to n queued words
    st.tuples(st.just("peer"), st.lists(st.sampled_from(POOL), max_size=3)),  # a peer's block on top
    st.tuples(st.just("reorg"), st.integers(0, 8), st.integers(1, 4),
              st.lists(st.lists(st.sampled_from(POOL), max_size=3), max_size=4), st.booleans()),
    st.tuples(st.just("restart")),
)


def check(keeper: Quiet, ever_queued: set[str]) -> None:
    in_chain = {m for block in chain_of(keeper) for m in block.messages}
    waiting = queue(keeper)
    assert len(waiting) == len(set(waiting))
    lost = {w for w in ever_queued if w not in in_chain and w not in waiting}
    assert not lost, f"words lost: {sorted(lost)}"
    assert counts(keeper) == (len(waiting),) * 3
    assert set(keeper._queued) == set(waiting)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=14))
def test_no_queued_word_is_ever_lost_over_random_reorgs(steps):
    with tempfile.TemporaryDirectory() as data_dir:
        keeper = start(data_dir)
        assert keeper.apply_segment(0, make_chain(3, DIFFICULTY))
        ever_queued: set[str] = set()
        forks = 0
        try:
            for op, *args in steps:
                if op == "queue":
                    before = set(keeper._queued)
                    keeper.on_new_words([(w, "10.0.0.1") for w in args[0]])
                    ever_queued |= set(keeper._queued) - before
                elif op == "mine":
                    words = tuple(queue(keeper)[: args[0]])
                    top = mine_block(chain_of(keeper)[-1], DIFFICULTY, mined_by="me", messages=words or ("pow-node miner 0",),
                                     timestamp=1_700_000_000 + len(chain_of(keeper)))
                    assert keeper.add_mined_block(top)
                elif op == "peer":
                    top = extend(chain_of(keeper), 1, "peer", [tuple(args[0])])[-1]
                    assert keeper.add_mined_block(top)  # the same write as an announce
                elif op == "reorg":
                    depth, extra, messages, staged = args
                    height = len(chain_of(keeper))
                    fork = max(1, height - depth)
                    forks += 1
                    new = extend(chain_of(keeper)[:fork], height - fork + extra, f"fork{forks}", messages)[fork:]
                    if staged:
                        keeper.stage_blocks(new, reset=True)
                        assert keeper.switch_to_staged(fork, new[-1].height, new[-1].hash)
                    else:
                        assert keeper.apply_segment(fork, new)
                    assert chain_of(keeper)[fork:] == new
                else:
                    keeper = restart(keeper)
                check(keeper, ever_queued)
            keeper = restart(keeper)
            check(keeper, ever_queued)
        finally:
            keeper.release()
