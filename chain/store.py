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
from chain.wal_check import WalReport, check_wal

log = logging.getLogger("node.store")

QUARANTINE_COLUMNS = """
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    height         INTEGER NOT NULL,
    hash           TEXT,
    mined_by       TEXT,
    messages       TEXT,
    nonce          TEXT,
    timestamp      INTEGER,
    reason         TEXT NOT NULL,
    quarantined_at REAL NOT NULL"""

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
-- The NEW_WORD queue in order (id). A word in a block of our chain keeps its row, with that
-- block's height in `mined_at` (NULL: still queued), so a reorg that replaces the block puts it back.
CREATE TABLE IF NOT EXISTS words (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    word     TEXT NOT NULL,
    added    REAL NOT NULL,
    mined_at INTEGER
);
-- What the data dir holds (e.g. 'difficulty'): a start that disagrees is refused.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Stored blocks found invalid on load: moved here with the reason, never dropped.
-- The block columns take any value (a NULL too): a damaged row is kept exactly as it was.
CREATE TABLE IF NOT EXISTS quarantine (
{QUARANTINE_COLUMNS}
);
"""
SCHEMA = SCHEMA.replace("{QUARANTINE_COLUMNS}", QUARANTINE_COLUMNS.strip("\n"))
# Lookups by hash (the explorer's search, a peer's hash) are an index probe, not a scan. Created at
# open, so a data dir from before the index gets it once (a few seconds at a million blocks).
HASH_INDEX = "CREATE INDEX IF NOT EXISTS blocks_hash ON blocks (hash)"
DB_FILENAME = "chain.sqlite3"
SECOND_CONNECTION_CACHE_KIB = 48 * 1024


class StoreError(RuntimeError):
    """A write that would break the chain's shape (a gap, a wrong height)."""


class RowDamage(ValueError):
    """A stored row that cannot be read as a block at all (undecodable text, messages not a JSON list)."""


_BLOCK_COLUMNS = ("hash", "mined_by", "messages", "nonce", "timestamp")
_WIRE_NAMES = {"hash": "hash", "mined_by": "minedBy", "messages": "messages", "nonce": "nonce", "timestamp": "timestamp"}
# The same row, read so that nothing can fail in the driver: each column's storage class, and its
# text as raw bytes (Python's sqlite3 raises on text that is not UTF-8, naming no row).
_RAW_COLUMNS = ", ".join([f"CASE typeof({c}) WHEN 'text' THEN CAST({c} AS BLOB) ELSE {c} END" for c in _BLOCK_COLUMNS]
                         + [f"typeof({c})" for c in _BLOCK_COLUMNS])


def _row_to_block(row: tuple) -> Block:
    """A block from a stored row; RowDamage if `messages` is not a JSON list.

    Other wrong values (a NULL, a BLOB, a REAL timestamp) are kept as they are and
    refused by the chain rules (`check_block`), which name the field.
    """
    height, block_hash, mined_by, messages, nonce, timestamp = row
    if type(messages) is not str:
        raise RowDamage(f"messages is stored as {_storage_class(messages)}, not JSON text")
    try:
        parsed = json.loads(messages)
    except (ValueError, RecursionError) as exc:
        raise RowDamage(f"messages is not valid JSON ({str(exc)[:80]})") from None
    if type(parsed) is not list:
        raise RowDamage(f"messages is JSON {type(parsed).__name__}, not a list")
    return Block(height, mined_by, tuple(parsed), nonce, timestamp, block_hash)


def _storage_class(value: object) -> str:
    return {type(None): "NULL", bytes: "BLOB", int: "INTEGER", float: "REAL", str: "TEXT"}.get(type(value), type(value).__name__)


def _decode_raw(raw: tuple) -> tuple:
    """A row read with `_RAW_COLUMNS` as `_row_to_block` takes it; RowDamage for text that is not UTF-8."""
    height, values, kinds = raw[0], raw[1:6], raw[6:11]
    row = [height]
    for column, value, kind in zip(_BLOCK_COLUMNS, values, kinds):
        if kind == "text":
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RowDamage(f"{_WIRE_NAMES[column]} is not valid UTF-8 text (byte {value[exc.start]:#04x} at offset "
                                f"{exc.start} of {len(value)})") from None
        row.append(value)
    return tuple(row)


def _lenient_block(raw: tuple) -> Block:
    """For showing a quarantined row: a Block holding whatever the row holds (text that is not UTF-8 stays bytes)."""
    try:
        return _row_to_block(_decode_raw(raw))
    except RowDamage:
        values = [v.decode("utf-8", "surrogateescape") if k == "text" and isinstance(v, bytes) else v
                  for v, k in zip(raw[1:6], raw[6:11])]
        block_hash, mined_by, messages, nonce, timestamp = values
        return Block(raw[0], mined_by, messages, nonce, timestamp, block_hash)


def _ranges(heights: Sequence[int]) -> str:
    """[3, 4, 5, 9] -> '3..5, 9'."""
    runs: list[list[int]] = []
    for h in heights:
        if runs and h == runs[-1][1] + 1:
            runs[-1][1] = h
        else:
            runs.append([h, h])
    return ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in runs)


def _block_to_row(block: Block) -> tuple:
    return (block.height, block.hash, block.mined_by, json.dumps(list(block.messages), ensure_ascii=False), block.nonce, block.timestamp)


class ChainStore:
    """The chain and the NEW_WORD queue on disk."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / DB_FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        damaged_wal = self._keep_damaged_wal()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._relax_quarantine()
        self._migrate_words()
        self._db.execute(HASH_INDEX)
        if damaged_wal is not None:
            self._report_damaged_wal(*damaged_wal)

    @classmethod
    def second_connection(cls, path: Path) -> "ChainStore":
        """Another connection to an open store (same settings), for a long write on another thread.

        No schema work and no WAL check: the store's own connection did those. SQLite
        serialises writers; readers on the first connection keep seeing the last commit.
        """
        store = cls.__new__(cls)
        store.path = path
        store._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        store._db.execute("PRAGMA synchronous=FULL")
        # A long write touches the hash index at random places: a bigger page cache (freed with the connection).
        store._db.execute(f"PRAGMA cache_size=-{SECOND_CONNECTION_CACHE_KIB}")
        return store

    def _relax_quarantine(self) -> None:
        """A quarantine table from before damaged rows (a NULL) could be kept gets nullable block columns: one transaction."""
        strict = [name for _, name, _, notnull, _, _ in self._db.execute("PRAGMA table_info(quarantine)")
                  if notnull and name in _BLOCK_COLUMNS]
        if not strict:
            return
        columns = "id, height, hash, mined_by, messages, nonce, timestamp, reason, quarantined_at"
        with self._transaction():
            self._db.execute(f"CREATE TABLE quarantine_relaxed ({QUARANTINE_COLUMNS})")
            self._db.execute(f"INSERT INTO quarantine_relaxed ({columns}) SELECT {columns} FROM quarantine")
            self._db.execute("DROP TABLE quarantine")
            self._db.execute("ALTER TABLE quarantine_relaxed RENAME TO quarantine")

    def close(self) -> None:
        self._db.close()

    def interrupt(self) -> None:
        """Abort the statement running on this connection (from any thread): its transaction rolls back."""
        self._db.interrupt()

    def _keep_damaged_wal(self) -> tuple[WalReport, Path, Path] | None:
        """Before SQLite replays the WAL (and silently skips damaged frames): check it, keep a copy if damaged."""
        report = check_wal(self.path)
        if report.problem is None:
            return None
        wal = self.path.with_name(self.path.name + "-wal")
        kept = wal.with_name(f"{wal.name}.damaged-{int(time.time())}")
        try:
            shutil.copy2(wal, kept)
        except OSError as exc:
            kept = Path(f"(not copied: {exc})")
        return report, wal, kept

    def _report_damaged_wal(self, report: WalReport, wal: Path, kept: Path) -> None:
        """One ERROR line: what SQLite dropped, and which blocks the dropped pages held that are not stored now."""
        lost: list[int] = []
        if report.heights:
            held = {h for (h,) in self._db.execute(
                "SELECT height FROM blocks WHERE height BETWEEN ? AND ? UNION SELECT height FROM staging WHERE height BETWEEN ? AND ?",
                (report.heights[0], report.heights[-1]) * 2)}
            lost = [h for h in report.heights if h not in held]
        if lost:
            what = f"block {lost[0]} is" if len(lost) == 1 else f"blocks {_ranges(lost)} are"
            blocks = f"{what} lost (the stored chain now has {self.height()} blocks)"
        elif report.heights:
            blocks = "no block row is missing now (the dropped pages held rows that are also stored elsewhere)"
        else:
            blocks = "which blocks they held can't be told from what is left of them"
        log.error("write-ahead log %s is damaged: %s: %s; a copy is kept at %s", wal, report.problem, blocks, kept)

    # -------------------------------------------------------------- chain

    def load_chain(self) -> list[Block]:
        """All blocks in height order, cut at the first gap or unreadable row (there should be none)."""
        return self.load_checked()[0]

    def load_checked(self) -> tuple[list[Block], str | None]:
        """The stored blocks from height 0 up to the first damage, and that damage (None if none).

        Damage is a missing height (a gap), a row that can't be read as a block
        (text that is not UTF-8, `messages` not a JSON list), or rows at negative
        heights; the reason names the height. Never raises for what a row holds:
        wrong types are left to the chain rules. (Everything in memory: for tools
        and tests; the node reads in bounded chunks with `read_rows`.)
        """
        blocks, damage = self.read_rows(0, None)
        stray = self.stray_damage()
        if stray is not None:
            damage = stray if damage is None else f"{damage}; and {stray}"
        return blocks, damage

    def read_rows(self, start: int, limit: int | None) -> tuple[list[Block], str | None]:
        """Up to `limit` stored blocks from `start` up (all if None), cut at the first damage, and that damage.

        The rows must be `start`, `start + 1`, ...: a missing height is damage (a gap),
        as is a row that can't be read as a block. The usual case is one query; only a
        row the driver can't decode (text that is not UTF-8) costs a second, raw read.
        """
        where = "FROM blocks WHERE height >= ? ORDER BY height" + ("" if limit is None else " LIMIT ?")
        params = (start,) if limit is None else (start, limit)
        try:
            rows = self._db.execute(f"SELECT height, hash, mined_by, messages, nonce, timestamp {where}", params).fetchall()
            decode = None
        except sqlite3.OperationalError:  # "Could not decode to UTF-8 column ...": read it raw
            rows = self._db.execute(f"SELECT height, {_RAW_COLUMNS} {where}", params).fetchall()
            decode = _decode_raw
        blocks: list[Block] = []
        damage = None
        for row in rows:
            expected = start + len(blocks)
            if row[0] != expected:
                damage = f"no stored block at height {expected} (a gap in the stored chain)"
                break
            try:
                blocks.append(_row_to_block(row if decode is None else decode(row)))
            except RowDamage as exc:
                damage = f"stored block {row[0]} is unreadable: {exc}"
                break
        return blocks, damage

    def stray_damage(self) -> str | None:
        """Rows at negative heights, as a damage reason (None if there are none)."""
        stray = [h for (h,) in self._db.execute("SELECT height FROM blocks WHERE height < 0 ORDER BY height LIMIT 5")]
        if not stray:
            return None
        return f"stored rows at negative heights ({', '.join(map(str, stray))}) are out of range"

    def block_at(self, height: int) -> Block | None:
        """The stored block at `height`; None if there is none or it can't be read (damage is the loader's to report)."""
        row = self._db.execute(f"SELECT height, {_RAW_COLUMNS} FROM blocks WHERE height = ?", (height,)).fetchone()
        if row is None:
            return None
        try:
            return _row_to_block(_decode_raw(row))
        except RowDamage:
            return None

    def heights_of(self, block_hash: str) -> list[int]:
        """The heights of stored blocks with this hash (an index probe; one at most in a sound chain)."""
        return [int(h) for (h,) in self._db.execute("SELECT height FROM blocks WHERE hash = ? LIMIT 4", (block_hash,))]

    def top(self) -> tuple[int, object] | None:
        """(height, hash) of the highest stored row, or None if there is none."""
        row = self._db.execute("SELECT height, CAST(hash AS BLOB) FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), row[1])

    def staged_digests(self, first: int, top: int) -> bytes:
        """The raw 32-byte hashes of staged blocks `first`..`top`, concatenated; ValueError for a hash that is not one."""
        digests = bytearray()  # grown in place: no list of a million small objects to free at the end
        for (block_hash,) in self._db.execute("SELECT hash FROM staging WHERE height >= ? AND height <= ? ORDER BY height",
                                              (first, top)):
            if not isinstance(block_hash, str) or len(block_hash) != 64:
                raise ValueError(f"staged hash {block_hash!r:.80} is not a block hash")
            digests += bytes.fromhex(block_hash)
        return bytes(digests)

    def hashes(self, limit: int) -> list[str]:
        """The hashes of the first `limit` stored blocks (to judge a data dir that predates `meta`)."""
        return [h.decode("utf-8", "replace") if isinstance(h, bytes) else str(h)
                for (h,) in self._db.execute("SELECT CAST(hash AS BLOB) FROM blocks ORDER BY height LIMIT ?", (limit,))]

    def quarantine_from(self, height: int, reason: str, now: float | None = None) -> int:
        """Move every block at `height` and above (and any row at a negative height) to quarantine, with `reason`.

        One transaction. Nothing is deleted: an operator (or a later version) can
        look at what was set aside and why. Returns how many blocks were moved.
        """
        stamp = time.time() if now is None else now
        moved = 0
        with self._transaction():
            for where in ("height < 0", "height >= ?"):  # two ranges of the rowid (an OR of them would scan)
                params = () if where == "height < 0" else (height,)
                moved += self._db.execute(
                    "INSERT INTO quarantine (height, hash, mined_by, messages, nonce, timestamp, reason, quarantined_at) "
                    f"SELECT height, hash, mined_by, messages, nonce, timestamp, ?, ? FROM blocks WHERE {where} ORDER BY height",
                    (reason, stamp, *params),
                ).rowcount
                self._db.execute(f"DELETE FROM blocks WHERE {where}", params)
        return int(moved)

    def quarantined(self, limit: int = 100) -> list[tuple[Block, str]]:
        """Blocks set aside on load, oldest first, each with the reason (a damaged field as it is stored)."""
        rows = self._db.execute(
            f"SELECT height, {_RAW_COLUMNS}, reason FROM quarantine ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [(_lenient_block(row[:11]), str(row[11])) for row in rows]

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

    def replace_from(self, height: int, blocks: Sequence[Block]) -> tuple[list[str], list[str]]:
        """Drop every block at `height` and above, then store `blocks` from `height` up.

        One transaction: after a crash the store holds either the old chain or the
        new one. This is how an extension, a reorg and a full resync are all applied.
        The NEW_WORD queue follows in the same transaction (see `_settle_words`, whose
        (words now in a block, words back in the queue) this returns).
        """
        for offset, block in enumerate(blocks):
            if block.height != height + offset:
                raise StoreError(f"block at position {offset} has height {block.height}, expected {height + offset}")
        with self._transaction():
            self._check_below(height)
            self._db.execute("DELETE FROM blocks WHERE height >= ?", (height,))
            self._db.executemany(
                "INSERT INTO blocks (height, hash, mined_by, messages, nonce, timestamp) VALUES (?, ?, ?, ?, ?, ?)",
                [_block_to_row(block) for block in blocks],
            )
            return self._settle_words(height, ((block.height, block.messages) for block in blocks))

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
        low = self._staged("ORDER BY height")
        high = self._staged("ORDER BY height DESC")
        if low is None or high is None:
            return None
        (count,) = self._db.execute("SELECT COUNT(*) FROM staging").fetchone()
        if count != high.height - low.height + 1:
            return None
        return low, high

    def staged_block(self, height: int) -> Block | None:
        return self._staged("WHERE height = ?", (height,))

    def _staged(self, where: str, params: tuple = ()) -> Block | None:
        """One staged block; None if there is none or it can't be read (damage: the next sync stages afresh)."""
        row = self._db.execute(f"SELECT height, {_RAW_COLUMNS} FROM staging {where} LIMIT 1", params).fetchone()
        if row is None:
            return None
        try:
            return _row_to_block(_decode_raw(row))
        except RowDamage as exc:
            log.warning("staged block %d is unreadable (%s): not used, a sync stages afresh", row[0], exc)
            return None

    def clear_staging(self) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM staging")

    def switch_to_staged(self, first: int, top: int) -> tuple[list[str], list[str]]:
        """Our chain from `first` up becomes staged blocks `first`..`top`, and staging is emptied: one transaction.

        The NEW_WORD queue follows in the same transaction, as in `replace_from`.

        The caller has checked that the staged run covers that range and links to block `first - 1`.
        """
        with self._transaction():
            self._check_below(first)
            (staged,) = self._db.execute("SELECT COUNT(*) FROM staging WHERE height >= ? AND height <= ?", (first, top)).fetchone()
            if staged != top - first + 1:
                raise StoreError(f"staging lacks blocks between {first} and {top}")
            self._db.execute("DELETE FROM blocks WHERE height >= ?", (first,))
            self._db.execute(
                "INSERT INTO blocks (height, hash, mined_by, messages, nonce, timestamp) "
                "SELECT height, hash, mined_by, messages, nonce, timestamp FROM staging WHERE height >= ? AND height <= ?",
                (first, top),
            )
            settled = self._settle_words(first, self._staged_messages(first, top))
            self._db.execute("DELETE FROM staging")
        return settled

    # -------------------------------------------------------------- NEW_WORD queue

    def add_word(self, word: str) -> None:
        self.add_words([word])

    def add_words(self, words: Sequence[str]) -> None:
        """Queue several words in one transaction (a flood of NEW_WORDs costs one fsync per batch)."""
        now = time.time()
        with self._transaction():
            self._db.executemany("INSERT INTO words (word, added) VALUES (?, ?)", [(word, now) for word in words])

    def pending_words(self, limit: int) -> list[tuple[int, str]]:
        """The oldest `limit` words not yet mined, as (id, word); a stored word that is not text is skipped (and logged)."""
        try:
            return [(int(i), str(w)) for i, w in self._db.execute(
                "SELECT id, word FROM words WHERE mined_at IS NULL ORDER BY id LIMIT ?", (limit,))]
        except sqlite3.OperationalError:  # text that is not UTF-8: read raw, keep the readable words
            words = []
            for i, raw in self._db.execute("SELECT id, CAST(word AS BLOB) FROM words WHERE mined_at IS NULL ORDER BY id LIMIT ?", (limit,)):
                try:
                    words.append((int(i), bytes(raw).decode("utf-8")))
                except (UnicodeDecodeError, TypeError):
                    log.warning("queued word %d is not UTF-8 text (%r): left in the table, not mined", i, raw)
            return words

    def word_count(self) -> int:
        (count,) = self._db.execute("SELECT COUNT(*) FROM words WHERE mined_at IS NULL").fetchone()
        return int(count)

    def remove_words(self, words: Iterable[str]) -> None:
        """Drop one queued copy of each word (called once a block carrying them is stored)."""
        with self._transaction():
            for word in words:
                self._db.execute("DELETE FROM words WHERE id = (SELECT MIN(id) FROM words WHERE word = ? AND mined_at IS NULL)", (word,))

    def unmine_words_from(self, height: int) -> list[str]:
        """Words marked as in blocks at `height` and up go back to the queue (those blocks are no longer ours)."""
        with self._transaction():
            return self._return_words_from(height)

    def _migrate_words(self) -> None:
        """A words table from before `mined_at` gets the column (every row in it is still queued) and its index."""
        if "mined_at" not in [row[1] for row in self._db.execute("PRAGMA table_info(words)")]:
            self._db.execute("ALTER TABLE words ADD COLUMN mined_at INTEGER")
        self._db.execute("CREATE INDEX IF NOT EXISTS words_mined_at ON words (mined_at)")

    def _read_words(self, where: str, params: tuple = ()) -> list[tuple[int, str]]:
        """(id, word) in queue order; a word that is not UTF-8 text is left alone (pending_words logs it)."""
        words = []
        for i, raw in self._db.execute(f"SELECT id, CAST(word AS BLOB) FROM words WHERE {where} ORDER BY id", params):
            try:
                words.append((int(i), bytes(raw).decode("utf-8")))
            except (UnicodeDecodeError, TypeError):
                continue
        return words

    def _return_words_from(self, height: int) -> list[str]:
        """Inside a transaction: words in blocks from `height` up are queued again, in their old places.

        A word queued again while its block was ours keeps only its older row. Returns the words, in queue order.
        """
        back = [word for _, word in self._read_words("mined_at >= ?", (height,))]
        if back:
            self._db.execute("UPDATE words SET mined_at = NULL WHERE mined_at >= ?", (height,))
            self._db.execute("DELETE FROM words WHERE mined_at IS NULL AND id NOT IN "
                             "(SELECT MIN(id) FROM words WHERE mined_at IS NULL GROUP BY word)")
        return back

    def _settle_words(self, first: int, blocks: Iterable[tuple[int, Sequence[str]]]) -> tuple[list[str], list[str]]:
        """Inside the transaction that makes `blocks` ((height, messages), in height order) our chain from `first` up.

        The words of the replaced blocks go back to the queue, in their old places; then each queued
        word that one of the new blocks carries is marked with the height of the first such block (it
        stays in the table, out of the queue, until a reorg replaces that block). Returns (words now in
        a block, words back in the queue and not in a new block), each in order.
        """
        back = self._return_words_from(first)
        queued = {word: i for i, word in reversed(self._read_words("mined_at IS NULL"))}
        marks: list[tuple[int, int]] = []
        mined: list[str] = []
        if queued:
            for height, messages in blocks:
                for message in messages:
                    row = queued.pop(message, None) if isinstance(message, str) else None
                    if row is not None:
                        marks.append((height, row))
                        mined.append(message)
                if not queued:
                    break
            getattr(blocks, "close", lambda: None)()  # a cursor over staging: done with it before writing
            self._db.executemany("UPDATE words SET mined_at = ? WHERE id = ?", marks)
        taken = set(mined)
        return mined, [word for word in dict.fromkeys(back) if word not in taken]

    def _staged_messages(self, first: int, top: int) -> Iterable[tuple[int, Sequence[str]]]:
        """(height, messages) of staged blocks `first`..`top`; a row that can't be read carries none."""
        rows = self._db.execute("SELECT height, CAST(messages AS BLOB) FROM staging WHERE height >= ? AND height <= ? ORDER BY height",
                                (first, top))
        try:
            for height, raw in rows:
                try:
                    messages = json.loads(bytes(raw).decode("utf-8"))
                except (UnicodeDecodeError, TypeError, ValueError):
                    messages = []
                yield int(height), messages if isinstance(messages, list) else []
        finally:
            rows.close()

    # -------------------------------------------------------------- helpers

    def _check_below(self, height: int) -> None:
        """StoreError unless block `height - 1` is stored (an index probe, not a count of the chain).

        The rows below it were checked gap-free when the chain was loaded, and every
        write since kept them so: the block just below is what a write can get wrong.
        """
        if height < 0:
            raise StoreError(f"cannot write at height {height}")
        if height > 0 and self._db.execute("SELECT 1 FROM blocks WHERE height = ?", (height - 1,)).fetchone() is None:
            raise StoreError(f"cannot write at height {height}: block {height - 1} is not stored")

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
