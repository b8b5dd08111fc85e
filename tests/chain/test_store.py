"""SQLite storage: durable appends, atomic replacement, the word queue, kill -9."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from chain.block import check_chain
from chain.store import ChainStore, StoreError
from sim.chains import make_chain


def test_append_and_reload(tmp_path):
    chain = make_chain(5, 1)
    store = ChainStore(tmp_path)
    for block in chain:
        store.append(block)
    store.close()
    assert ChainStore(tmp_path).load_chain() == chain


def test_wal_mode(tmp_path):
    store = ChainStore(tmp_path)
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_gaps_are_refused(tmp_path):
    chain = make_chain(3, 1)
    store = ChainStore(tmp_path)
    store.append(chain[0])
    with pytest.raises(StoreError):
        store.append(chain[2])
    with pytest.raises(StoreError):
        store.replace_from(0, [chain[1]])
    assert store.load_chain() == chain[:1]


def test_replace_from_is_a_reorg(tmp_path):
    main = make_chain(10, 1)
    fork = make_chain(12, 1, base=main[:6], tag="fork")
    store = ChainStore(tmp_path)
    store.replace_from(0, main)
    store.replace_from(6, fork[6:])
    assert store.load_chain() == fork


def test_failed_replace_leaves_chain_unchanged(tmp_path):
    main = make_chain(10, 1)
    store = ChainStore(tmp_path)
    store.replace_from(0, main)
    bad = list(main[5:])
    bad.insert(2, main[1])  # wrong height in the middle
    with pytest.raises(StoreError):
        store.replace_from(5, bad)
    assert store.load_chain() == main


def test_word_queue_survives_reopen(tmp_path):
    store = ChainStore(tmp_path)
    for word in ["a", "b", "a", "c"]:
        store.add_word(word)
    store.remove_words(["a"])
    store.close()
    again = ChainStore(tmp_path)
    assert [w for _, w in again.pending_words(10)] == ["b", "a", "c"]


def test_kill_minus_nine_during_writes_keeps_a_valid_chain(tmp_path):
    """A writer process is killed at a random moment; what it reported stored is there."""
    chain = make_chain(400, 1)
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {os.getcwd()!r})
        from chain.store import ChainStore
        from sim.chains import make_chain
        chain = make_chain(400, 1)
        store = ChainStore({str(tmp_path)!r})
        for i, block in enumerate(chain):
            store.append(block)
            print(i, flush=True)
            if i % 50 == 0:
                store.replace_from(max(0, i - 5), chain[max(0, i - 5): i + 1])
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    last = -1
    for line in proc.stdout:  # type: ignore[union-attr]
        last = int(line)
        if last >= 150:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stored = ChainStore(tmp_path).load_chain()
    assert len(stored) >= last + 1
    check_chain(stored, 1)
    assert stored == chain[: len(stored)]
