"""ChainKeeper at scale, with a modest chain (issue 18, item 4): the mechanisms, not the speed.

* memory is an index (32 bytes a block) plus a bounded cache, never the blocks;
* the stored chain is checked in bounded batches after start, the checked prefix served meanwhile;
* a lookup by hash is an index probe in SQLite;
* a big switch to a staged chain runs on a thread while the actor keeps answering STATS;
* an error inside an apply fails that segment, not the actor (unless the store was written).

Speed and memory at a million blocks are measured in bench/bench_start.py and bench/bench_sync.py.
"""
from __future__ import annotations

import logging
import threading

import pytest

import actors.chain_keeper as chain_keeper_module
from actors.chain_keeper import CACHE_BLOCKS, TIP_WINDOW, ChainKeeper
from chain.hash_column import HashColumn
from chain.store import ChainStore
from config import NodeConfig
from messages.wire import StatsReply
from runtime.context import NodeContext
from sim.chains import make_chain
from tests.helpers import wait_for

DIFFICULTY = 1
LENGTH = 1200
CHAIN = make_chain(LENGTH, DIFFICULTY)


class Recording(ChainKeeper):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = []

    def _send_many(self, messages):
        self.sent.extend(messages)

    def sent_list(self):
        return list(self.sent)


def stored(data_dir, blocks=CHAIN):
    store = ChainStore(data_dir)
    store.replace_from(0, blocks)
    return store


def start(data_dir) -> Recording:
    keeper = Recording(NodeContext(NodeConfig(data_dir=data_dir, difficulty=DIFFICULTY)))
    keeper.on_start()
    return keeper


@pytest.fixture
def small_batches(monkeypatch):
    """Verification in batches of 100 after the first 100 (as 20,000 / 1,000 do at a million blocks)."""
    monkeypatch.setattr(chain_keeper_module, "START_VERIFY_BLOCKS", 100)
    monkeypatch.setattr(chain_keeper_module, "VERIFY_BATCH", 100)


def test_memory_is_the_hash_index_and_a_bounded_cache(tmp_path):
    stored(tmp_path).close()
    keeper = start(tmp_path)
    assert keeper.tip() == (LENGTH, CHAIN[-1].hash)
    assert isinstance(keeper._hashes, HashColumn) and keeper._hashes.nbytes() == 32 * LENGTH
    assert not any(isinstance(v, list) and len(v) >= LENGTH for v in vars(keeper).values())  # no list of blocks
    # Peers read every block (GET_BLOCK), twice: each is served from the store, the cache stays bounded.
    for _ in range(2):
        keeper.on_get_block_batch([(h, ("127.0.0.1", 9)) for h in range(LENGTH)])
    served = [reply.block for reply, _ in keeper.sent]
    assert served == CHAIN * 2
    assert keeper.cache_size() <= 2 * TIP_WINDOW + CACHE_BLOCKS
    assert keeper.get_blocks(0, LENGTH) == CHAIN and keeper.get_blocks(LENGTH - 3, 10) == CHAIN[-3:]
    keeper.release()


def test_a_row_changed_on_disk_after_the_check_is_not_served(tmp_path):
    stored(tmp_path).close()
    keeper = start(tmp_path)
    keeper._lru.clear()
    keeper._tip_cache.clear()
    keeper.store._db.execute("UPDATE blocks SET nonce = 'x' WHERE height = 5")
    assert keeper.block(5) is None and keeper.get_blocks(3, 5) == CHAIN[3:5]  # cut at the changed block
    assert keeper.block(6) == CHAIN[6]
    keeper.release()


def test_the_stored_chain_is_checked_in_batches_and_the_checked_prefix_served(tmp_path, small_batches, caplog):
    store = stored(tmp_path)
    store._db.execute("UPDATE blocks SET nonce = 'tampered' WHERE height = 1000")
    store.close()
    caplog.set_level(logging.ERROR, logger="node.ChainKeeper")
    keeper = start(tmp_path)
    assert keeper.tip() == (100, CHAIN[99].hash)
    assert keeper.health_details()["chain"] == "verifying" and keeper.health_details()["stored_blocks"] == LENGTH
    keeper.on_stats_batch([(("127.0.0.1", 9),)])
    assert keeper.sent[-1][0] == StatsReply(100, CHAIN[99].hash)
    # Nothing writes the blocks table meanwhile (the stored blocks above the prefix are not checked yet).
    assert not keeper.add_mined_block(CHAIN[100])
    assert not keeper.apply_segment(100, CHAIN[100:200])
    keeper.send_round_inputs(7)
    assert keeper._waiting_rounds == [7]  # answered once the check ends
    heights = []
    while keeper.health_details()["chain"] == "verifying":
        keeper.verify_more()
        heights.append(keeper.height)
    assert heights == [*range(200, 1001, 100), 1000]  # one batch a message; the last finds the damage at once
    assert keeper.tip() == (1000, CHAIN[999].hash) and keeper._waiting_rounds == []
    assert [b.height for b, _ in keeper.store.quarantined(1000)] == list(range(1000, LENGTH))
    assert keeper.store.height() == 1000
    logged = [r.getMessage() for r in caplog.records if "quarantine" in r.getMessage()]
    assert len(logged) == 1 and "stored block 1000" in logged[0] and "moved 200 stored blocks" in logged[0]
    keeper.release()


def test_a_lookup_by_hash_is_an_index_probe(tmp_path):
    stored(tmp_path).close()
    keeper = start(tmp_path)
    plan = " ".join(str(row) for row in keeper.store._db.execute(
        "EXPLAIN QUERY PLAN SELECT height FROM blocks WHERE hash = ? LIMIT 4", (CHAIN[7].hash,)))
    assert "blocks_hash" in plan and "SCAN" not in plan
    reads = []
    for name in ("read_rows", "load_range", "load_checked"):  # no scan of the chain on any path
        original = getattr(keeper.store, name)
        setattr(keeper.store, name, lambda *a, _o=original, _n=name: (reads.append(_n), _o(*a))[1])
    assert keeper.find_block(CHAIN[7].hash) == CHAIN[7]
    assert keeper.find_block("ab" * 32) is None and keeper.find_block("not a hash") is None
    assert reads == []
    keeper.release()


def test_an_error_inside_an_apply_fails_the_segment_not_the_actor(tmp_path, monkeypatch, caplog):
    stored(tmp_path, CHAIN[:10]).close()
    keeper = start(tmp_path)
    told = []
    monkeypatch.setattr(keeper, "_tell_applied", lambda request_id, ok: told.append((request_id, ok)))

    def broken(*args, **kwargs):
        raise TypeError("a bug in the rules")

    monkeypatch.setattr(chain_keeper_module, "check_chain", broken)
    with caplog.at_level(logging.ERROR, logger="node.ChainKeeper"):
        keeper.apply_segment_and_reply(1, 10, CHAIN[10:20])  # does not raise
    assert told == [(1, False)] and keeper.tip() == (10, CHAIN[9].hash)
    assert keeper.ctx.metrics.registry.get_sample_value("node_datagrams_dropped_total", {"reason": "apply_error"}) == 1
    assert any("segment refused" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    monkeypatch.setattr(keeper, "_tell_applied", lambda request_id, ok: told.append((request_id, ok)))

    # After the store was written, memory can't be trusted: the error is raised (the restart reloads).
    def after_write_bug(settled):
        raise TypeError("a bug after the write")

    monkeypatch.setattr(keeper, "_after_write", after_write_bug)
    with pytest.raises(TypeError):
        keeper.apply_segment_and_reply(2, 10, CHAIN[10:20])
    assert told[-1] == (2, False)
    keeper.release()
    assert ChainStore(tmp_path).height() == 20  # what the restart will load


def test_a_big_switch_runs_on_a_thread_and_stats_are_answered_meanwhile(tmp_path, monkeypatch):
    monkeypatch.setattr(chain_keeper_module, "INLINE_SWITCH_ROWS", 100)
    fork = make_chain(LENGTH + 50, DIFFICULTY, base=CHAIN[:200], tag="fork")
    store = stored(tmp_path)
    store.stage(fork[200:])
    store.close()
    entered, release = threading.Event(), threading.Event()
    original = chain_keeper_module._switch_rows
    switch_threads = []

    def held(store, first, top):
        switch_threads.append(threading.current_thread().name)
        entered.set()
        release.wait(30)
        return original(store, first, top)

    monkeypatch.setattr(chain_keeper_module, "_switch_rows", held)
    ref = Recording.start(NodeContext(NodeConfig(data_dir=tmp_path, difficulty=DIFFICULTY)))
    keeper = ref.proxy()
    try:
        keeper.on_attached().get(timeout=10)
        keeper.switch_to_staged_and_reply(5, 200, len(fork) - 1, fork[-1].hash).get(timeout=10)
        assert entered.wait(30)
        # The switch holds its transaction on its own thread: the actor answers from the old chain.
        assert keeper.tip().get(timeout=10) == (LENGTH, CHAIN[-1].hash)
        keeper.on_stats_batch([(("127.0.0.1", 9),)]).get(timeout=10)
        keeper.on_new_words([("held", "10.0.0.1")]).get(timeout=10)  # waits for the switch, not lost
        assert keeper.health_details().get(timeout=10)["chain"] == "switching"
        assert not keeper.add_mined_block(CHAIN[-1]).get(timeout=10)
        assert keeper.sent_list().get(timeout=10)[-1][0] == StatsReply(LENGTH, CHAIN[-1].hash)
        release.set()
        wait_for(lambda: keeper.tip().get(timeout=10) == (len(fork), fork[-1].hash), timeout=60)
        assert keeper.get_blocks(190, 20).get(timeout=10) == fork[190:210]
        assert keeper.word_count().get(timeout=10) == 1 and keeper.pending_words().get(timeout=10) == ["held"]
        assert switch_threads == ["ChainKeeper.switch"]
    finally:
        release.set()
        ref.stop()
    store = ChainStore(tmp_path)
    assert store.height() == len(fork) and store.block_at(len(fork) - 1) == fork[-1] and store.staged_run() is None
    store.close()


def test_a_long_damaged_tail_moves_to_quarantine_on_a_thread_while_the_prefix_is_served(tmp_path, monkeypatch, small_batches):
    monkeypatch.setattr(chain_keeper_module, "INLINE_SWITCH_ROWS", 100)
    store = stored(tmp_path)
    store._db.execute("UPDATE blocks SET nonce = 'tampered' WHERE height = 50")  # found inside on_start
    store.close()
    entered, release = threading.Event(), threading.Event()
    original = ChainStore.quarantine_from
    threads = []

    def held(self, *args, **kwargs):
        threads.append(threading.current_thread().name)
        entered.set()
        release.wait(30)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ChainStore, "quarantine_from", held)
    ref = Recording.start(NodeContext(NodeConfig(data_dir=tmp_path, difficulty=DIFFICULTY)))
    keeper = ref.proxy()
    try:
        assert keeper.tip().get(timeout=10) == (50, CHAIN[49].hash)
        assert not entered.is_set()  # not before we are attached (the start check comes first)
        keeper.on_attached().get(timeout=10)
        assert entered.wait(30)
        assert keeper.health_details().get(timeout=10)["chain"] == "verifying"
        keeper.on_stats_batch([(("127.0.0.1", 9),)]).get(timeout=10)
        assert keeper.sent_list().get(timeout=10)[-1][0] == StatsReply(50, CHAIN[49].hash)
        keeper.on_new_words([("held", "10.0.0.1")]).get(timeout=10)  # waits for the thread's transaction
        release.set()
        wait_for(lambda: keeper.health_details().get(timeout=10)["chain"] == "ready", timeout=60)
        assert keeper.tip().get(timeout=10) == (50, CHAIN[49].hash) and keeper.pending_words().get(timeout=10) == ["held"]
        assert threads == ["ChainKeeper.quarantine"]
    finally:
        release.set()
        ref.stop()
    store = ChainStore(tmp_path)
    assert store.height() == 50 and [b.height for b, _ in store.quarantined(2000)] == list(range(50, LENGTH))
    store.close()
