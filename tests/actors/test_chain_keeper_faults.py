"""ChainKeeper under a NEW_WORD flood and on a full disk (issue 11), without sockets."""
from __future__ import annotations

import logging
import shutil
import sqlite3

from actors.chain_keeper import MAX_WORDS_PER_SOURCE, STORE_RETRY_FIRST, ChainKeeper
from chain.store import DB_FILENAME, ChainStore
from chain.wal_check import check_wal, check_wal_bytes
from config import NodeConfig
from runtime.context import NodeContext
from sim.chains import make_chain


class Recording(ChainKeeper):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = []

    def _send_many(self, messages):
        self.sent.extend(messages)


def make(tmp_path, now):
    keeper = Recording(NodeContext(NodeConfig(data_dir=tmp_path, difficulty=2)), clock=lambda: now[0])
    keeper.on_start()
    return keeper


def dropped(keeper, reason):
    return keeper.ctx.metrics.registry.get_sample_value("node_datagrams_dropped_total", {"reason": reason}) or 0.0


def test_one_source_gets_a_bounded_share_and_duplicates_are_dropped(tmp_path, monkeypatch):
    keeper = make(tmp_path, [0.0])
    writes = []
    original = keeper.store.add_words
    monkeypatch.setattr(keeper.store, "add_words", lambda words: (writes.append(len(words)), original(words)))
    keeper.on_new_words([(f"w{i}", "10.0.0.1") for i in range(2000)])
    assert keeper.word_count() == MAX_WORDS_PER_SOURCE
    assert writes == [MAX_WORDS_PER_SOURCE]  # one transaction for the batch
    assert dropped(keeper, "word_share_exceeded") == 2000 - MAX_WORDS_PER_SOURCE
    keeper.on_new_words([("w1", "10.0.0.2"), ("fresh", "10.0.0.2"), ("fresh", "10.0.0.3")])
    assert keeper.word_count() == MAX_WORDS_PER_SOURCE + 1  # another source still gets in
    assert dropped(keeper, "duplicate_word") == 2
    assert keeper.store.word_count() == keeper.word_count()
    keeper.release()


def test_a_full_disk_stops_writes_with_one_error_and_keeps_serving(tmp_path, caplog):
    now = [0.0]
    keeper = make(tmp_path, now)
    chain = make_chain(6, 2)
    assert keeper.apply_segment(0, chain[:3])
    db = keeper.store._db
    # SQLite now refuses every write (as on a full disk, an OperationalError from the
    # engine itself); a real full filesystem is measured in bench/bench_storage_full.py.
    db.execute("PRAGMA query_only=ON")
    with caplog.at_level(logging.DEBUG, logger="node.ChainKeeper"):
        for i in range(5):
            keeper.on_new_words([(f"word{i}-" + "y" * 12, "10.0.0.1")])
            assert not keeper.add_mined_block(chain[3])
            now[0] += 0.5
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "writes stopped" in errors[0].getMessage()
    assert keeper.tip() == (3, chain[2].hash)  # nothing half-written
    assert keeper.storage_state()["writable"] is False
    keeper.on_stats_batch([(("127.0.0.1", 9),)])
    keeper.on_get_block_batch([(2, ("127.0.0.1", 9))])
    assert [type(m).__name__ for m, _ in keeper.sent] == ["StatsReply", "GetBlockReply"]
    assert keeper.sent[1][0].block == chain[2]
    # Space is back: the next write after the backoff goes through.
    db.execute("PRAGMA query_only=OFF")
    now[0] += 60.0
    assert keeper.add_mined_block(chain[3])
    assert keeper.tip()[0] == 4 and keeper.storage_state()["writable"] is True
    keeper.release()
    assert ChainStore(tmp_path).height() == 4


def test_storage_retries_back_off(tmp_path):
    now = [0.0]
    keeper = make(tmp_path, now)
    calls = []

    def failing(store):
        calls.append(now[0])
        raise sqlite3.OperationalError("database or disk is full")

    for step in range(40):
        now[0] = step * 0.25
        keeper._storage_try(failing)
    # 1 s, 2 s, 4 s ... between attempts, not one attempt per write.
    assert calls[:3] == [0.0, STORE_RETRY_FIRST, STORE_RETRY_FIRST * 3]
    assert len(calls) == 4
    keeper.release()


def test_a_damaged_wal_is_reported_not_loaded_silently(tmp_path, caplog):
    live = tmp_path / "live"
    store = ChainStore(live)
    store._db.execute("PRAGMA wal_autocheckpoint=0")
    chain = make_chain(40, 2)
    for block in chain:
        store.append(block)
    # A copy while the writer is still running: the blocks are in the WAL only.
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in ("", "-wal"):
        shutil.copy(live / (DB_FILENAME + suffix), copy / (DB_FILENAME + suffix))
    store.close()
    wal = copy / (DB_FILENAME + "-wal")
    assert check_wal(copy / DB_FILENAME).problem is None
    data = bytearray(wal.read_bytes())
    frame = 24 + 4096
    data[32 + 3 * frame + 100] ^= 0xFF  # one byte of the 4th frame's page
    wal.write_bytes(bytes(data))
    report = check_wal_bytes(bytes(data))
    assert report.problem and report.ignored >= report.frames - 3
    with caplog.at_level(logging.ERROR, logger="node.store"):
        damaged = ChainStore(copy)
    assert any("damaged" in r.getMessage() for r in caplog.records)
    assert list(copy.glob(DB_FILENAME + "-wal.damaged-*"))  # kept for the operator
    assert damaged.height() < 40  # SQLite did drop the blocks: that is what we reported
    damaged.close()


def test_a_value_the_store_cannot_take_is_dropped_without_stopping_writes(tmp_path):
    """Defence in depth behind the codec: a lone surrogate reaching SQLite costs that write only."""
    keeper = make(tmp_path, [0.0])
    keeper.on_new_words([("\ud800", "10.0.0.1")])  # refused by the keeper's own check
    assert dropped(keeper, "bad_word") == 1
    assert not keeper._storage_try(lambda store: store.add_words(["\ud800"]))  # straight to SQLite: UnicodeEncodeError
    assert dropped(keeper, "store_rejected") == 1
    assert keeper.storage_state()["writable"] is True
    keeper.on_new_words([("fine", "10.0.0.1")])
    assert keeper.word_count() == 1
    keeper.release()


def test_abandoning_a_keeper_hung_inside_sqlite_interrupts_it_and_leaves_the_connection(tmp_path):
    """A hung ChainKeeper is abandoned from the supervisor's thread while its own thread may be
    inside SQLite: closing the connection there would crash the process, so the running
    statement is interrupted (it rolls back) and the connection stays open."""
    import threading

    keeper = make(tmp_path, [0.0])
    db = keeper.store._db
    started, outcome = threading.Event(), []

    def endless_query() -> None:
        started.set()
        try:
            db.execute("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n").fetchone()
            outcome.append("finished")
        except sqlite3.OperationalError as exc:
            outcome.append(str(exc))

    hung = threading.Thread(target=endless_query, daemon=True)
    hung.start()
    started.wait()
    while hung.is_alive():
        keeper._release_abandoned()  # as the supervisor does, repeatedly until the statement is cut
        hung.join(timeout=0.05)
    assert outcome == ["interrupted"]
    assert keeper.store is not None
    assert keeper.store.word_count() == keeper.word_count()  # the connection still works
    keeper.release()
