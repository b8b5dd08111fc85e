"""Durable chain storage: SQLite in WAL mode, one file in the data dir.

Only the ChainKeeper writes it. Every write is one transaction with
`synchronous=FULL`, so a block the keeper has stored survives `kill -9` (and a
power cut), and a reorg either happens whole or not at all.
"""
from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Sequence

from chain.block import Block
from chain.wal_check import check_wal

log = logging.getLogger("node.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    height    INTEGER PRIMARY KEY,
    hash      TEXT NOT NULL,
    mined_by  TEXT NOT NULL,
    messages  TEXT NOT NULL,   -- JSON list of strings
    nonce     TEXT NOT NULL,
    timestamp INTEGER NOT NULL
);
-- A chain being synced, linked and checked, not yet ours: filled in segments (one
-- transaction each, so a crash keeps them) and moved into `blocks` in one transaction.
CREATE TABLE IF NOT EXISTS staging (
    height    INTEGER PRIMARY KEY,
    hash      TEXT NOT NULL,
    mined_by  TEXT NOT NULL,
    messages  TEXT NOT NULL,
    nonce     TEXT NOT NULL,
    timestamp INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS words (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    word  TEXT NOT NULL,
    added REAL NOT NULL
);
-- What the data dir holds (e.g. 'difficulty'): a start that disagrees is refused.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Stored blocks found invalid on load: moved here with the reason, never dropped.
CREATE TABLE IF NOT EXISTS quarantine (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    height         INTEGER NOT NULL,
    hash           TEXT NOT NULL,
    mined_by       TEXT NOT NULL,
    messages       TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    timestamp      INTEGER NOT NULL,
    reason         TEXT NOT NULL,
    quarantined_at REAL NOT NULL
);
"""
DB_FILENAME = "chain.sqlite3"


class StoreError(RuntimeError):
    """A write that would break the chain's shape (a gap, a wrong height)."""


def _row_to_block(row: tuple) -> Block:
    height, block_hash, mined_by, messages, nonce, timestamp = row
    return Block(height, mined_by, tuple(json.loads(messages)), nonce, timestamp, block_hash)


def _block_to_row(block: Block) -> tuple:
    return (block.height, block.hash, block.mined_by, json.dumps(list(block.messages), ensure_ascii=False), block.nonce, block.timestamp)


class ChainStore:
    """The chain and the NEW_WORD queue on disk."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / DB_FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._report_damaged_wal()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _report_damaged_wal(self) -> None:
        """Before SQLite replays the WAL (and silently skips damaged frames): say so, keep a copy."""
        report = check_wal(self.path)
        if report.problem is None:
            return
        wal = self.path.with_name(self.path.name + "-wal")
        kept = wal.with_name(f"{wal.name}.damaged-{int(time.time())}")
        try:
            shutil.copy2(wal, kept)
        except OSError as exc:
            kept = Path(f"(not copied: {exc})")
        log.error("write-ahead log %s is damaged: %s; %d writes (frames) will not be loaded; a copy is kept at %s",
                  wal, report.problem, report.ignored, kept)

    # -------------------------------------------------------------- chain

    def load_chain(self) -> list[Block]:
        """All blocks in height order, cut at the first gap (there should be none)."""
        rows = self._db.execute(
            "SELECT height, hash, mined_by, messages, nonce, timestamp FROM blocks ORDER BY height"
        ).fetchall()
        blocks = []
        for row in rows:
            if row[0] != len(blocks):
                break
            blocks.append(_row_to_block(row))
        return blocks

    def hashes(self, limit: int) -> list[str]:
        """The hashes of the first `limit` stored blocks (to judge a data dir that predates `meta`)."""
        return [str(h) for (h,) in self._db.execute("SELECT hash FROM blocks ORDER BY height LIMIT ?", (limit,))]

    def quarantine_from(self, height: int, reason: str, now: float | None = None) -> int:
        """Move every block at `height` and above to the quarantine table, with `reason`.

        One transaction. Nothing is deleted: an operator (or a later version) can
        look at what was set aside and why. Returns how many blocks were moved.
        """
        stamp = time.time() if now is None else now
        with self._transaction():
            moved = self._db.execute(
                "INSERT INTO quarantine (height, hash, mined_by, messages, nonce, timestamp, reason, quarantined_at) "
                "SELECT height, hash, mined_by, messages, nonce, timestamp, ?, ? FROM blocks WHERE height >= ? ORDER BY height",
                (reason, stamp, height),
            ).rowcount
            self._db.execute("DELETE FROM blocks WHERE height >= ?", (height,))
        return int(moved)

    def quarantined(self, limit: int = 100) -> list[tuple[Block, str]]:
        """Blocks set aside on load, oldest first, each with the reason."""
        rows = self._db.execute(
            "SELECT height, hash, mined_by, messages, nonce, timestamp, reason FROM quarantine ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [(_row_to_block(row[:6]), str(row[6])) for row in rows]

    # -------------------------------------------------------------- meta

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def height(self) -> int:
        """Number of rows in the blocks table (more than `len(load_chain())` if there is a gap)."""
        (count,) = self._db.execute("SELECT COUNT(*) FROM blocks").fetchone()
        return int(count)

    def append(self, block: Block) -> None:
        """Store one block on top; durable when this returns."""
        self.replace_from(block.height, [block])

    def replace_from(self, height: int, blocks: Sequence[Block]) -> None:
        """Drop every block at `height` and above, then store `blocks` from `height` up.

        One transaction: after a crash the store holds either the old chain or the
        new one. This is how an extension, a reorg and a full resync are all applied.
        """
        for offset, block in enumerate(blocks):
            if block.height != height + offset:
                raise StoreError(f"block at position {offset} has height {block.height}, expected {height + offset}")
        with self._transaction():
            (count,) = self._db.execute("SELECT COUNT(*) FROM blocks WHERE height < ?", (height,)).fetchone()
            if count != height:
                raise StoreError(f"cannot write at height {height}: only {count} blocks below it")
            self._db.execute("DELETE FROM blocks WHERE height >= ?", (height,))
            self._db.executemany(
                "INSERT INTO blocks (height, hash, mined_by, messages, nonce, timestamp) VALUES (?, ?, ?, ?, ?, ?)",
                [_block_to_row(block) for block in blocks],
            )

    def load_range(self, start: int, stop: int) -> list[Block]:
        """Blocks `start` .. `stop - 1` in height order."""
        rows = self._db.execute(
            "SELECT height, hash, mined_by, messages, nonce, timestamp FROM blocks WHERE height >= ? AND height < ? ORDER BY height",
            (start, stop),
        ).fetchall()
        return [_row_to_block(row) for row in rows]

    # -------------------------------------------------------------- staging (a sync in progress)

    def stage(self, blocks: Sequence[Block], reset: bool = False) -> None:
        """Store linked blocks of a chain being synced (one transaction); `reset` drops what was staged."""
        with self._transaction():
            if reset:
                self._db.execute("DELETE FROM staging")
            self._db.executemany(
                "INSERT OR REPLACE INTO staging (height, hash, mined_by, messages, nonce, timestamp) VALUES (?, ?, ?, ?, ?, ?)",
                [_block_to_row(block) for block in blocks],
            )

    def staged_run(self) -> tuple[Block, Block] | None:
        """(lowest, highest) staged block if the staging table holds one gap-free run, else None."""
        low = self._db.execute("SELECT height, hash, mined_by, messages, nonce, timestamp FROM staging ORDER BY height LIMIT 1").fetchone()
        high = self._db.execute("SELECT height, hash, mined_by, messages, nonce, timestamp FROM staging ORDER BY height DESC LIMIT 1").fetchone()
        if low is None or high is None:
            return None
        (count,) = self._db.execute("SELECT COUNT(*) FROM staging").fetchone()
        if count != high[0] - low[0] + 1:
            return None
        return _row_to_block(low), _row_to_block(high)

    def staged_block(self, height: int) -> Block | None:
        row = self._db.execute("SELECT height, hash, mined_by, messages, nonce, timestamp FROM staging WHERE height = ?", (height,)).fetchone()
        return _row_to_block(row) if row else None

    def clear_staging(self) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM staging")

    def switch_to_staged(self, first: int, top: int) -> None:
        """Our chain from `first` up becomes staged blocks `first`..`top`, and staging is emptied: one transaction.

        The caller has checked that the staged run covers that range and links to block `first - 1`.
        """
        with self._transaction():
            (count,) = self._db.execute("SELECT COUNT(*) FROM blocks WHERE height < ?", (first,)).fetchone()
            if count != first:
                raise StoreError(f"cannot write at height {first}: only {count} blocks below it")
            (staged,) = self._db.execute("SELECT COUNT(*) FROM staging WHERE height >= ? AND height <= ?", (first, top)).fetchone()
            if staged != top - first + 1:
                raise StoreError(f"staging lacks blocks between {first} and {top}")
            self._db.execute("DELETE FROM blocks WHERE height >= ?", (first,))
            self._db.execute(
                "INSERT INTO blocks (height, hash, mined_by, messages, nonce, timestamp) "
                "SELECT height, hash, mined_by, messages, nonce, timestamp FROM staging WHERE height >= ? AND height <= ?",
                (first, top),
            )
            self._db.execute("DELETE FROM staging")

    # -------------------------------------------------------------- NEW_WORD queue

    def add_word(self, word: str) -> None:
        self.add_words([word])

    def add_words(self, words: Sequence[str]) -> None:
        """Queue several words in one transaction (a flood of NEW_WORDs costs one fsync per batch)."""
        now = time.time()
        with self._transaction():
            self._db.executemany("INSERT INTO words (word, added) VALUES (?, ?)", [(word, now) for word in words])

    def pending_words(self, limit: int) -> list[tuple[int, str]]:
        """The oldest `limit` words not yet mined, as (id, word)."""
        return [(int(i), str(w)) for i, w in self._db.execute("SELECT id, word FROM words ORDER BY id LIMIT ?", (limit,))]

    def word_count(self) -> int:
        (count,) = self._db.execute("SELECT COUNT(*) FROM words").fetchone()
        return int(count)

    def remove_words(self, words: Iterable[str]) -> None:
        """Drop one queued copy of each word (called once a block carrying them is stored)."""
        with self._transaction():
            for word in words:
                self._db.execute("DELETE FROM words WHERE id = (SELECT MIN(id) FROM words WHERE word = ?)", (word,))

    # -------------------------------------------------------------- helpers

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
