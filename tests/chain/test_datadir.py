"""The data dir: locked while used, records its difficulty, never rewritten because of a flag."""
from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from chain.datadir import DataDir, DataDirError, DifficultyMismatch
from chain.store import DB_FILENAME, ChainStore
from sim.chains import make_chain


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_open_is_refused_naming_the_holder_pid(tmp_path):
    first = DataDir.open(tmp_path, 2)
    with pytest.raises(DataDirError) as refused:
        DataDir.open(tmp_path, 2)
    assert f"data dir {tmp_path} is in use by pid {os.getpid()}" in str(refused.value)
    first.close()
    DataDir.open(tmp_path, 2).close()  # free again once the holder closed it


def test_another_difficulty_is_refused_and_nothing_changes(tmp_path):
    DataDir.open(tmp_path, 2).close()
    chain = make_chain(12, 2)
    store = ChainStore(tmp_path)
    store.replace_from(0, chain)
    store.close()
    before = _digest(tmp_path / DB_FILENAME)
    with pytest.raises(DifficultyMismatch) as refused:
        DataDir.open(tmp_path, 8)
    message = str(refused.value)
    assert refused.value.exit_code == 2
    assert "12 blocks at difficulty 2" in message and "--difficulty 2" in message and "\n" not in message
    assert _digest(tmp_path / DB_FILENAME) == before
    DataDir.open(tmp_path, 2).close()
    assert ChainStore(tmp_path).load_chain() == chain


def test_an_empty_data_dir_may_change_difficulty(tmp_path):
    DataDir.open(tmp_path, 2).close()
    DataDir.open(tmp_path, 5).close()
    assert ChainStore(tmp_path).get_meta("difficulty") == "5"


def test_a_data_dir_from_before_meta_is_judged_by_its_hashes(tmp_path):
    chain = make_chain(20, 2)
    store = ChainStore(tmp_path)
    store.replace_from(0, chain)
    store._db.execute("DELETE FROM meta")
    store.close()
    zeros = min(len(b.hash) - len(b.hash.rstrip("0")) for b in chain)
    with pytest.raises(DifficultyMismatch) as refused:
        DataDir.open(tmp_path, 8)
    assert f"--difficulty {zeros}" in str(refused.value)
    DataDir.open(tmp_path, 2).close()
    assert ChainStore(tmp_path).get_meta("difficulty") == "2"


def test_a_chain_file_that_is_not_sqlite_is_named_and_left_untouched(tmp_path):
    path = tmp_path / DB_FILENAME
    path.write_bytes(os.urandom(4096))
    before = _digest(path)
    with pytest.raises(DataDirError) as refused:
        DataDir.open(tmp_path, 2)
    assert str(path) in str(refused.value) and "not an SQLite database" in str(refused.value)
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_FILENAME, "node.lock"]
    DataDir.open(tmp_path / "elsewhere", 2).close()  # the refusal released the lock file it took


def test_a_chain_file_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / DB_FILENAME).mkdir()
    with pytest.raises(DataDirError, match="is not a regular file"):
        DataDir.open(tmp_path, 2)


def test_a_data_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataDirError, match="is not a directory"):
        DataDir.open(tmp_path / "file", 2)


def test_quarantine_moves_the_tail_with_its_reason(tmp_path):
    chain = make_chain(10, 2)
    store = ChainStore(tmp_path)
    store.replace_from(0, chain)
    assert store.quarantine_from(6, "stored block 6 fails a rule: test", now=1.0) == 4
    assert store.load_chain() == chain[:6]
    set_aside = store.quarantined()
    assert [block for block, _ in set_aside] == chain[6:]
    assert {reason for _, reason in set_aside} == {"stored block 6 fails a rule: test"}
    rows = sqlite3.connect(tmp_path / DB_FILENAME).execute("SELECT COUNT(*) FROM quarantine").fetchone()
    assert rows == (4,)
