"""Blocks out of and into a data dir, one JSON object a line (the export format).

* **Reading** (`open_readonly`, `iter_blocks`): a read-only SQLite connection of its
  own, never the data dir's lock, so it works while a node runs on the dir. Blocks
  come in height order from one read transaction: one consistent snapshot, however
  the node writes meanwhile (WAL readers don't block the writer, nor it them).
  Rows are converted here rather than through `ChainStore`: opening a `ChainStore`
  writes (schema, WAL mode, damaged-WAL copies), and a reader must not.
* **The line format** (`export_line`, `parse_line`): a block's fields under their
  wire names (`Block.to_wire`), compact JSON, UTF-8, so that export -> import ->
  export gives the same bytes.
* **Importing** (`import_blocks`): every line is checked against the chain rules
  (`check_block`, linking to the line before or to the stored block below it) at the
  data dir's difficulty; blocks already stored are skipped when identical (so an
  import is idempotent), new ones are appended through `ChainStore.replace_from` in
  batches. The first invalid line stops it: the valid blocks before it are kept,
  nothing after it is written, and `LineRefused` says which line and why. A stored
  chain that can't be read where the file overlaps it stops the import with
  `ArchiveError` (a node started on the dir quarantines the damage first).
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

from chain.block import Block, InvalidBlock, check_block, field_problem
from chain.store import DB_FILENAME

WIRE_KEYS = ("height", "minedBy", "messages", "nonce", "timestamp", "hash")
SQLITE_MAGIC = b"SQLite format 3\x00"
READ_BATCH = 1000
WRITE_BATCH = 1000
NO_LIMIT = 2**63 - 1


class ArchiveError(Exception):
    """The data dir can't be read as asked; `str(self)` is one line for the operator."""


class DamagedRow(ArchiveError):
    """A stored row that is not a block (or a missing height): where the readable chain ends."""

    def __init__(self, height: int, reason: str) -> None:
        super().__init__(f"stored block {height} is damaged ({reason})")
        self.height = height
        self.reason = reason


class LineRefused(Exception):
    """An import line that is not a valid next block; the blocks before it were kept."""

    def __init__(self, line_no: int, reason: str, result: "ImportResult") -> None:
        super().__init__(f"line {line_no}: {reason}")
        self.line_no = line_no
        self.reason = reason
        self.result = result


# ---------------------------------------------------------------- reading a data dir, read-only


def open_readonly(data_dir: str | Path) -> sqlite3.Connection:
    """A read-only connection to the data dir's chain file (no lock taken, nothing written)."""
    db_path = Path(data_dir) / DB_FILENAME
    if not db_path.is_file():
        raise ArchiveError(f"data dir {data_dir} holds no chain file ({DB_FILENAME}): check --data-dir")
    try:
        with open(db_path, "rb") as handle:
            header = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise ArchiveError(f"cannot read chain file {db_path}: {exc.strerror or exc}") from None
    if header != SQLITE_MAGIC:
        raise ArchiveError(f"chain file {db_path} is not an SQLite database")
    try:
        conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False, timeout=10)
        conn.text_factory = bytes  # decoded per field, so undecodable text names its block
        conn.execute("SELECT COUNT(*) FROM blocks").fetchone()
    except sqlite3.Error as exc:
        raise ArchiveError(f"chain file {db_path} can't be read: {exc}") from None
    return conn


def stored_difficulty(conn: sqlite3.Connection) -> int | None:
    """The difficulty the data dir records (None if it records none)."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'difficulty'").fetchone()
    except sqlite3.Error:
        return None
    if row is None:
        return None
    value = row[0].decode("ascii", "replace") if isinstance(row[0], bytes) else str(row[0])
    return int(value) if value.isdigit() else None


def iter_blocks(conn: sqlite3.Connection, start: int = 0, stop: int | None = None) -> Iterator[Block]:
    """Stored blocks `start` .. `stop - 1` in height order, from one snapshot.

    Ends early (raising DamagedRow) at a missing height or a row that is not a block.
    """
    conn.execute("BEGIN")  # one read transaction: every row from the same snapshot
    try:
        cursor = conn.execute(
            "SELECT height, hash, mined_by, messages, nonce, timestamp FROM blocks "
            "WHERE height >= ? AND height < ? ORDER BY height",
            (start, NO_LIMIT if stop is None else stop),
        )
        expected = start
        while rows := cursor.fetchmany(READ_BATCH):
            for row in rows:
                if row[0] != expected:
                    raise DamagedRow(expected, "missing")
                yield row_to_block(row)
                expected += 1
    finally:
        conn.execute("COMMIT")


def row_to_block(row: Sequence[object]) -> Block:
    """A `blocks` row read with `text_factory=bytes`, strictly: raise DamagedRow if it is not a block."""
    height, block_hash, mined_by, messages, nonce, timestamp = row
    if not isinstance(height, int):
        raise DamagedRow(-1, "height is not an integer")

    def text(value: object, name: str) -> str:
        if isinstance(value, str):
            return value
        if not isinstance(value, bytes):
            raise DamagedRow(height, f"{name} is not text")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise DamagedRow(height, f"{name} is not UTF-8") from None

    try:
        decoded = json.loads(text(messages, "messages"))
    except ValueError:
        raise DamagedRow(height, "messages is not JSON") from None
    if not isinstance(decoded, list) or not all(isinstance(m, str) for m in decoded):
        raise DamagedRow(height, "messages is not a list of strings")
    if not isinstance(timestamp, int):
        raise DamagedRow(height, "timestamp is not an integer")
    return Block(height, text(mined_by, "mined_by"), tuple(decoded), text(nonce, "nonce"), timestamp,
                 text(block_hash, "hash"))


# ---------------------------------------------------------------- the line format


def export_line(block: Block) -> bytes:
    """One line of an export: the block's wire fields, compact JSON, UTF-8, newline-terminated."""
    return json.dumps(block.to_wire(), separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def parse_line(raw: bytes) -> Block:
    """The block on one export line; raise InvalidBlock with the reason if it is not one."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidBlock("not UTF-8") from None
    except ValueError:
        raise InvalidBlock("not valid JSON") from None
    if not isinstance(obj, dict):
        raise InvalidBlock("not a JSON object")
    for key in WIRE_KEYS:
        if key not in obj:
            raise InvalidBlock(f"missing field {key!r}")
    for key in obj:
        if key not in WIRE_KEYS:
            raise InvalidBlock(f"unexpected field {str(key)[:40]!r}")
    messages = obj["messages"]
    block = Block(obj["height"], obj["minedBy"], tuple(messages) if isinstance(messages, list) else messages,
                  obj["nonce"], obj["timestamp"], obj["hash"])
    problem = field_problem(block)
    if problem:
        raise InvalidBlock(problem)
    return block


# ---------------------------------------------------------------- importing


class BlockStore(Protocol):
    """What an import needs of `chain.store.ChainStore` (its public methods)."""

    def height(self) -> int: ...

    def load_range(self, start: int, stop: int) -> list[Block]: ...

    def replace_from(self, height: int, blocks: Sequence[Block]) -> None: ...


@dataclass
class ImportResult:
    added: int = 0        # blocks appended
    already: int = 0      # lines identical to a stored block (skipped)
    first_added: int | None = None
    height: int = 0       # blocks stored when the import ended


def import_blocks(store: BlockStore, lines: Iterable[bytes], difficulty: int, batch: int = WRITE_BATCH) -> ImportResult:
    """Validate and store the blocks of `lines` (export lines; blank lines are skipped).

    Raises LineRefused at the first line that is not valid: what came before it is stored.
    """
    result = ImportResult(height=store.height())
    window: dict[int, Block] = {}  # stored blocks near the lines being compared
    pending: list[Block] = []

    def stored_block(height: int) -> Block:
        if height not in window:
            window.clear()
            stop = min(height + batch, result.height)
            try:
                window.update((b.height, b) for b in store.load_range(height, stop))
            except ValueError as exc:  # a damaged row (chain.store.RowDamage): the node quarantines it on start
                raise ArchiveError(f"stored blocks {height}..{stop - 1} can't all be read ({exc}): start a node on "
                                   f"the data dir once, so that it quarantines the damage, then import again") from None
        if height not in window:
            raise ArchiveError(f"stored block {height} is missing: start a node on the data dir once, "
                               f"so that it quarantines the damage, then import again")
        return window[height]

    def flush() -> None:
        if pending:
            store.replace_from(pending[0].height, pending)
            if result.first_added is None:
                result.first_added = pending[0].height
            result.added += len(pending)
            result.height += len(pending)
            pending.clear()

    prev: Block | None = None
    block: Block | None = None
    line_no = 0
    try:
        for line_no, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            block = None  # until this line parses
            block = parse_line(raw)
            if prev is not None and block.height != prev.height + 1:
                raise InvalidBlock(f"block {block.height} where block {prev.height + 1} was expected")
            if prev is None and block.height > result.height:
                raise InvalidBlock(f"block {block.height} does not follow the stored chain "
                                   f"(the data dir holds {result.height} blocks)")
            if prev is not None:
                prev_hash: str | None = prev.hash
            else:
                prev_hash = None if block.height == 0 else stored_block(block.height - 1).hash
            check_block(block, prev_hash, difficulty)
            if block.height < result.height:
                if stored_block(block.height) != block:
                    raise InvalidBlock(f"block {block.height} differs from the stored block {block.height} "
                                       f"(import only appends: import into an empty data dir instead)")
                result.already += 1
            else:
                pending.append(block)
                if len(pending) >= batch:
                    flush()
            prev = block
    except InvalidBlock as exc:
        flush()
        named = block is not None and not exc.reason.startswith("block ")
        raise LineRefused(line_no, f"block {block.height}: {exc.reason}" if named else exc.reason, result) from None
    finally:
        flush()  # valid blocks read before an interruption are kept too
    return result
