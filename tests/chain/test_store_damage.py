"""Every kind of stored damage is quarantined, never fatal (issue 18, item 1).

A real data dir (the project's own store) is damaged with raw SQL, then loaded
by ChainKeeper's load path: never an exception, exactly the good prefix below the
lowest damaged height is kept, every other row is in `quarantine` (nothing is
deleted), and the reason (one ERROR line) names the height and the damage.
"""
from __future__ import annotations

import logging
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from actors.chain_keeper import ChainKeeper
from chain.datadir import DataDir
from chain.store import DB_FILENAME, ChainStore
from config import NodeConfig
from runtime.context import NodeContext
from sim.chains import make_chain
from tests.helpers import wait_for

DIFFICULTY = 1
LENGTH = 30
CHAIN = make_chain(LENGTH, DIFFICULTY)
FORK = make_chain(LENGTH, DIFFICULTY, tag="fork")  # same heights, other links

TEXT_COLUMNS = ("hash", "mined_by", "messages", "nonce")
WIRE = {"hash": "hash must be", "mined_by": "minedBy must be", "nonce": "nonce must be", "timestamp": "timestamp must be"}

# kind -> (SQL applied to the row at height ?, words the reason must hold; None: per column)
DAMAGE = {
    "invalid UTF-8": ("UPDATE blocks SET {col} = CAST(CAST({col} AS BLOB) || X'FF' AS TEXT) WHERE height = ?", ["not valid UTF-8"]),
    "surrogate as UTF-8": ("UPDATE blocks SET {col} = CAST(X'EDA080' AS TEXT) WHERE height = ?", ["not valid UTF-8"]),
    "BLOB": ("UPDATE blocks SET {col} = CAST({col} AS BLOB) WHERE height = ?", None),
    "NULL": ("UPDATE blocks SET {col} = NULL WHERE height = ?", None),
    "invalid JSON": ("UPDATE blocks SET messages = '[\"b100\"}}' WHERE height = ?", ["messages is not valid JSON"]),
    "JSON number": ("UPDATE blocks SET messages = 7 WHERE height = ?", ["messages is JSON int, not a list"]),
    "JSON string": ("UPDATE blocks SET messages = '\"b1\"' WHERE height = ?", ["not a list"]),
    "JSON of numbers": ("UPDATE blocks SET messages = '[1, 2]' WHERE height = ?", ["messages must be strings"]),
    "deep JSON": ("UPDATE blocks SET messages = '" + "[" * 100_000 + "' WHERE height = ?", ["messages is not valid JSON"]),
    "timestamp text": ("UPDATE blocks SET timestamp = 'soon' WHERE height = ?", ["timestamp must be an int"]),
    "timestamp REAL": ("UPDATE blocks SET timestamp = 1.5 WHERE height = ?", ["timestamp must be an int"]),
    "timestamp 2**63": ("UPDATE blocks SET timestamp = 9223372036854775808 WHERE height = ?", ["timestamp must be an int"]),
    "timestamp negative": ("UPDATE blocks SET timestamp = -1 WHERE height = ?", ["timestamp out of range"]),
    "minedBy too long": ("UPDATE blocks SET mined_by = printf('%.300c', 'x') WHERE height = ?", ["minedBy longer than"]),
    "nonce changed": ("UPDATE blocks SET nonce = 'tampered' WHERE height = ?", ["hash does not match"]),
    "hash changed": ("UPDATE blocks SET hash = (CASE substr(hash, 1, 1) WHEN 'a' THEN 'b' ELSE 'a' END) || substr(hash, 2) "
                     "WHERE height = ?", ["hash does not match"]),
    "gap": ("DELETE FROM blocks WHERE height = ?", ["no stored block at height {h}"]),
    # No gap when the moved rows were the top ones: the stray row names itself (-1 - h).
    "negative height": ("UPDATE blocks SET height = -1 - height WHERE height = ?", ["negative heights", "{stray}"]),
    "broken link": (None, ["hash does not match"]),  # the row replaced by the fork's block at that height
}
COLUMN_KINDS = {"invalid UTF-8": TEXT_COLUMNS, "surrogate as UTF-8": TEXT_COLUMNS, "BLOB": TEXT_COLUMNS,
                "NULL": TEXT_COLUMNS + ("timestamp",)}
RAW = ("SELECT height, {cols} FROM {table}")
RAW_COLS = ", ".join(f"typeof({c}), hex({c})" for c in ("hash", "mined_by", "messages", "nonce", "timestamp"))


def _reason_words(kind: str, column: str | None, height: int) -> list[str]:
    words = DAMAGE[kind][1]
    if words is None:
        if column == "messages":
            words = [f"messages is stored as {kind}"]
        else:
            words = [WIRE[column]]
    return [w.format(h=height, stray=-1 - height) for w in words]


def build(data_dir: Path) -> None:
    DataDir.open(data_dir, DIFFICULTY).close()
    store = ChainStore(data_dir)
    store.replace_from(0, CHAIN)
    store.close()


def damage(data_dir: Path, damages: list[tuple[str, str | None, int]]) -> None:
    """Apply each (kind, column, height) with raw SQL; NULLs need the table rebuilt without NOT NULL."""
    db = sqlite3.connect(data_dir / DB_FILENAME, isolation_level=None)
    if any(kind == "NULL" for kind, _, _ in damages):
        db.executescript(
            "BEGIN; ALTER TABLE blocks RENAME TO blocks_strict;"
            "CREATE TABLE blocks (height INTEGER PRIMARY KEY, hash TEXT, mined_by TEXT, messages TEXT, nonce TEXT, timestamp INTEGER);"
            "INSERT INTO blocks SELECT * FROM blocks_strict; DROP TABLE blocks_strict; COMMIT;")
    for kind, column, height in damages:
        if kind == "broken link":
            b = FORK[height]
            db.execute("UPDATE blocks SET hash = ?, mined_by = ?, messages = ?, nonce = ?, timestamp = ? WHERE height = ?",
                       (b.hash, b.mined_by, f'["{b.messages[0]}"]', b.nonce, b.timestamp, height))
        else:
            db.execute(DAMAGE[kind][0].format(col=column), (height,))
    db.close()


def raw_rows(data_dir: Path, table: str) -> list[tuple]:
    db = sqlite3.connect(data_dir / DB_FILENAME)
    try:
        return db.execute(RAW.format(cols=RAW_COLS, table=table)).fetchall()
    finally:
        db.close()


def load(data_dir: Path) -> tuple[list, list[str]]:
    """ChainKeeper's own start (store, load, quarantine): its blocks and its ERROR lines."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("node.ChainKeeper")
    logger.addHandler(handler)
    try:
        keeper = ChainKeeper(NodeContext(NodeConfig(data_dir=data_dir, difficulty=DIFFICULTY)))
        keeper.on_start()
        blocks = keeper.get_blocks(0, keeper.height)
        keeper.release()
    finally:
        logger.removeHandler(handler)
    return blocks, [r.getMessage() for r in records]


def check(data_dir: Path, damages: list[tuple[str, str | None, int]]) -> None:
    build(data_dir)
    damage(data_dir, damages)
    before = raw_rows(data_dir, "blocks")
    earlier = Counter(raw_rows(data_dir, "quarantine"))  # set aside by an older start
    blocks, errors = load(data_dir)  # never an exception
    lowest = min(height for _, _, height in damages)
    assert blocks == CHAIN[:lowest]
    kept = raw_rows(data_dir, "blocks")
    set_aside = list((Counter(raw_rows(data_dir, "quarantine")) - earlier).elements())
    assert Counter(kept) + Counter(set_aside) == Counter(before)  # nothing deleted, nothing changed
    assert [row[0] for row in kept] == list(range(lowest))
    assert all(row[0] >= lowest or row[0] < 0 for row in set_aside)
    assert len(errors) == 1
    reasons = {r for (r,) in sqlite3.connect(data_dir / DB_FILENAME).execute(
        "SELECT DISTINCT reason FROM quarantine WHERE quarantined_at > 1.0")}
    assert len(reasons) == 1
    (reason,) = reasons
    assert reason in errors[0]
    if any(row[0] >= lowest for row in before):  # the lowest damage is seen where it is
        assert str(lowest) in reason
        at_lowest = [(kind, column) for kind, column, height in damages if height == lowest]
        assert any(all(word in reason for word in _reason_words(kind, column, lowest)) for kind, column in at_lowest), reason
    else:  # every row from `lowest` up was deleted or moved below 0: the stray rows are what shows
        assert "negative heights" in reason
    # A second start finds nothing more to set aside and serves the same prefix.
    again, errors = load(data_dir)
    assert again == CHAIN[:lowest] and errors == []


@st.composite
def damages(draw) -> list[tuple[str, str | None, int]]:
    out = []
    heights = draw(st.lists(st.integers(0, LENGTH - 1), min_size=1, max_size=3, unique=True))
    for height in heights:
        kind = draw(st.sampled_from(sorted(DAMAGE)))
        column = draw(st.sampled_from(COLUMN_KINDS[kind])) if kind in COLUMN_KINDS else None
        if kind == "broken link" and height == 0:
            kind = "nonce changed"  # another genesis is a valid chain of its own: block 0 has no link to break
        if kind == "gap" and height == LENGTH - 1:
            kind = "nonce changed"  # deleting the top row leaves a shorter valid chain, not a gap
        out.append((kind, column, height))
    return out


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damages())
def test_any_damage_is_quarantined_and_the_good_prefix_loads(found):
    with tempfile.TemporaryDirectory() as tmp:
        check(Path(tmp) / "d", found)


CASES = [(kind, column) for kind in sorted(DAMAGE) for column in (COLUMN_KINDS.get(kind) or (None,))]


@pytest.mark.parametrize("kind,column", CASES, ids=[f"{k}-{c}" if c else k for k, c in CASES])
def test_each_kind_of_damage(tmp_path, kind, column):
    check(tmp_path / "d", [(kind, column, 17)])


def test_a_quarantine_table_from_before_keeps_its_rows_and_takes_nulls(tmp_path):
    data_dir = tmp_path / "d"
    build(data_dir)
    db = sqlite3.connect(data_dir / DB_FILENAME, isolation_level=None)
    db.executescript(
        "DROP TABLE quarantine; CREATE TABLE quarantine (id INTEGER PRIMARY KEY AUTOINCREMENT, height INTEGER NOT NULL,"
        " hash TEXT NOT NULL, mined_by TEXT NOT NULL, messages TEXT NOT NULL, nonce TEXT NOT NULL,"
        " timestamp INTEGER NOT NULL, reason TEXT NOT NULL, quarantined_at REAL NOT NULL);"
        "INSERT INTO quarantine VALUES (5, 40, 'h', 'm', '[]', 'n', 1, 'old reason', 1.0);")
    db.close()
    check(data_dir, [("NULL", "mined_by", 9)])
    rows = sqlite3.connect(data_dir / DB_FILENAME).execute("SELECT id, height, reason FROM quarantine ORDER BY id").fetchall()
    assert rows[0] == (5, 40, "old reason") and len(rows) == 1 + LENGTH - 9


@pytest.mark.parametrize("sql", [
    "UPDATE blocks SET messages = '[\"b100\"}' WHERE height = 20",
    "UPDATE blocks SET messages = 20 WHERE height = 20",
    "UPDATE blocks SET mined_by = CAST(X'73696DFF' AS TEXT) WHERE height = 20",
], ids=["invalid JSON", "a number", "0xFF in minedBy"])
def test_the_node_starts_on_the_good_prefix(tmp_path, make_node, client, sql):
    """The issue's cases, through the whole node: up, serving blocks 0..19, the rest in quarantine."""
    data_dir = tmp_path / "d"
    build(data_dir)
    db = sqlite3.connect(data_dir / DB_FILENAME, isolation_level=None)
    db.execute(sql)
    db.close()
    node = make_node(data_dir=data_dir, difficulty=DIFFICULTY)
    reply = wait_for(lambda: client.ask(node.config.port, {"type": "STATS"}, timeout=0.3))
    assert reply["height"] == 20 and reply["hash"] == CHAIN[19].hash
    node.stop()
    set_aside = ChainStore(data_dir).quarantined()
    assert [block.height for block, _ in set_aside] == list(range(20, LENGTH))
    assert "stored block 20" in set_aside[0][1]


def test_a_queued_word_that_is_not_text_does_not_stop_the_start(tmp_path):
    data_dir = tmp_path / "d"
    build(data_dir)
    store = ChainStore(data_dir)
    store.add_words(["good", "bad"])
    store._db.execute("UPDATE words SET word = CAST(X'62FF' AS TEXT) WHERE word = 'bad'")
    store.close()
    keeper = ChainKeeper(NodeContext(NodeConfig(data_dir=data_dir, difficulty=DIFFICULTY)))
    keeper.on_start()
    assert keeper.get_blocks(0, keeper.height) == CHAIN and keeper.pending_words() == ["good"]
    keeper.release()
    assert raw_rows(data_dir, "blocks") and ChainStore(data_dir).word_count() == 2  # nothing deleted


def test_an_unreadable_staged_block_is_not_used(tmp_path):
    store = ChainStore(tmp_path / "d")
    store.stage(CHAIN[:10])
    assert store.staged_run() == (CHAIN[0], CHAIN[9]) and store.staged_block(9) == CHAIN[9]
    store._db.execute("UPDATE staging SET messages = CAST(X'5B22FF' AS TEXT) WHERE height = 9")
    assert store.staged_run() is None and store.staged_block(9) is None and store.staged_block(8) == CHAIN[8]
    store._db.execute("UPDATE staging SET messages = '{' WHERE height = 8")
    assert store.staged_block(8) is None
    store.close()
