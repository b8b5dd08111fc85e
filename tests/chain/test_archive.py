"""chain/archive.py and chain/backup.py: read-only export, line format, validated import, consistent backup."""
from __future__ import annotations

import json
import sqlite3

import pytest

from chain.archive import (
    ArchiveError,
    DamagedRow,
    LineRefused,
    export_line,
    import_blocks,
    iter_blocks,
    open_readonly,
    parse_line,
)
from chain.backup import backup_data_dir
from chain.block import InvalidBlock
from chain.datadir import LOCK_FILENAME, DataDir
from chain.store import DB_FILENAME, ChainStore
from sim.chains import make_chain

CHAIN = make_chain(25, 2)
FORK = make_chain(25, 2, base=CHAIN[:12], tag="fork")


def stored(path, blocks, difficulty: int = 2) -> None:
    """A data dir at `path` holding `blocks`, as a node leaves it (lock released)."""
    with DataDir.open(path, difficulty):
        store = ChainStore(path)
        try:
            if blocks:
                store.replace_from(0, blocks)
        finally:
            store.close()


def lines_of(blocks) -> list[bytes]:
    return [export_line(b) for b in blocks]


def read_all(path, start=0, stop=None):
    conn = open_readonly(path)
    try:
        return list(iter_blocks(conn, start, stop))
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path):
    with DataDir.open(tmp_path / "d", 2):
        s = ChainStore(tmp_path / "d")
        yield s
        s.close()


# ---------------------------------------------------------------- line format


def test_export_line_is_the_wire_format_and_parses_back():
    line = export_line(CHAIN[3])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == CHAIN[3].to_wire()
    assert list(json.loads(line)) == ["height", "minedBy", "messages", "nonce", "timestamp", "hash"]
    assert parse_line(line) == CHAIN[3]


@pytest.mark.parametrize("raw, reason", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"height": 0}', "missing field 'minedBy'"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_parse_line_names_what_is_wrong(raw, reason):
    with pytest.raises(InvalidBlock) as info:
        parse_line(raw)
    assert info.value.reason == reason


def test_parse_line_refuses_extra_fields_and_wrong_types():
    wire = CHAIN[1].to_wire()
    with pytest.raises(InvalidBlock, match="unexpected field 'type'"):
        parse_line(json.dumps({"type": "ANNOUNCE", **wire}).encode())
    with pytest.raises(InvalidBlock, match="timestamp must be an int"):
        parse_line(json.dumps({**wire, "timestamp": "1"}).encode())


# ---------------------------------------------------------------- reading


def test_iter_blocks_reads_ranges_without_the_lock(tmp_path):
    path = tmp_path / "d"
    stored(path, CHAIN)
    with DataDir.open(path, 2):  # held, as by a running node
        assert read_all(path) == CHAIN
        assert read_all(path, 5, 9) == CHAIN[5:9]
        assert read_all(path, 30) == []


def test_iter_blocks_is_one_snapshot_while_the_chain_is_replaced(tmp_path):
    path = tmp_path / "d"
    stored(path, CHAIN)
    conn = open_readonly(path)
    writer = ChainStore(path)
    try:
        blocks = iter_blocks(conn)
        first = next(blocks)
        writer.replace_from(12, FORK[12:])  # a reorg while the export runs
        rest = list(blocks)
    finally:
        conn.close()
        writer.close()
    assert [first, *rest] == CHAIN  # the chain as it was when reading began, not a mix
    assert read_all(path) == FORK


def test_iter_blocks_stops_at_a_damaged_row_naming_it(tmp_path):
    path = tmp_path / "d"
    stored(path, CHAIN)
    db = sqlite3.connect(path / DB_FILENAME)
    db.execute("UPDATE blocks SET messages = '[\"b7\"}' WHERE height = 7")
    db.commit()
    db.close()
    conn = open_readonly(path)
    got = []
    with pytest.raises(DamagedRow) as info:
        for block in iter_blocks(conn):
            got.append(block)
    conn.close()
    assert got == CHAIN[:7]
    assert info.value.height == 7 and "messages is not JSON" in str(info.value)


def test_open_readonly_refuses_a_dir_without_a_chain(tmp_path):
    with pytest.raises(ArchiveError, match="holds no chain file"):
        open_readonly(tmp_path)
    assert not (tmp_path / DB_FILENAME).exists()


# ---------------------------------------------------------------- importing


def test_import_into_an_empty_store_then_again_changes_nothing(store):
    first = import_blocks(store, lines_of(CHAIN), difficulty=2)
    assert (first.added, first.already, first.height) == (25, 0, 25)
    again = import_blocks(store, lines_of(CHAIN), difficulty=2)
    assert (again.added, again.already, again.height) == (0, 25, 25)
    assert store.load_range(0, 100) == CHAIN


def test_import_extending_the_stored_chain_appends(store):
    import_blocks(store, lines_of(CHAIN[:10]), difficulty=2)
    overlapping = import_blocks(store, lines_of(CHAIN[5:20]), difficulty=2, batch=4)
    assert (overlapping.added, overlapping.already, overlapping.first_added) == (10, 5, 10)
    tail = import_blocks(store, lines_of(CHAIN[20:]), difficulty=2)
    assert tail.added == 5
    assert store.load_range(0, 100) == CHAIN


def test_import_keeps_the_prefix_and_refuses_the_first_bad_line(store):
    lines = lines_of(CHAIN)
    lines[10] = lines[10].replace(b'"nonce":"', b'"nonce":"x')  # line 11: block 10, wrong hash
    with pytest.raises(LineRefused) as info:
        import_blocks(store, lines, difficulty=2, batch=3)
    assert info.value.line_no == 11
    assert info.value.reason == "block 10: hash does not match the block's contents and previous hash"
    assert info.value.result.added == 10
    assert store.load_range(0, 100) == CHAIN[:10]  # nothing after the bad line, the prefix kept


@pytest.mark.parametrize("blocks, difficulty, line_no, reason", [
    (CHAIN[:3] + CHAIN[4:6], 2, 4, "block 4 where block 3 was expected"),
    (CHAIN[3:6], 2, 1, "block 3 does not follow the stored chain (the data dir holds 0 blocks)"),
])
def test_import_refuses_what_does_not_link(store, blocks, difficulty, line_no, reason):
    with pytest.raises(LineRefused) as info:
        import_blocks(store, lines_of(blocks), difficulty=difficulty)
    assert info.value.line_no == line_no and info.value.reason.startswith(reason)


def test_import_checks_the_difficulty_it_is_given(store):
    easy = next(i for i, b in enumerate(CHAIN) if not b.hash.endswith("000"))
    with pytest.raises(LineRefused) as info:
        import_blocks(store, lines_of(CHAIN), difficulty=3)
    assert info.value.line_no == easy + 1
    assert info.value.reason == f"block {easy}: hash does not end with 3 zeros"
    assert store.height() == easy


def test_import_refuses_a_block_that_differs_from_the_stored_one(store):
    import_blocks(store, lines_of(CHAIN), difficulty=2)
    with pytest.raises(LineRefused) as info:
        import_blocks(store, lines_of(FORK), difficulty=2)
    assert info.value.line_no == 13 and "differs from the stored block 12" in info.value.reason
    assert store.load_range(0, 100) == CHAIN


def test_import_skips_blank_lines_but_counts_them():
    class Memory:
        def __init__(self):
            self.blocks = []

        def height(self):
            return len(self.blocks)

        def load_range(self, start, stop):
            return self.blocks[start:stop]

        def replace_from(self, height, blocks):
            self.blocks[height:] = list(blocks)

    memory = Memory()
    lines = [b"\n", *lines_of(CHAIN[:2]), b"  \n", b"oops\n"]
    with pytest.raises(LineRefused) as info:
        import_blocks(memory, lines, difficulty=2)
    assert info.value.line_no == 5 and info.value.reason == "not valid JSON"
    assert memory.blocks == CHAIN[:2]


# ---------------------------------------------------------------- backup


def test_backup_copies_the_chain_and_peers_never_the_lock(tmp_path):
    path, dest = tmp_path / "d", tmp_path / "backup"
    stored(path, CHAIN)
    (path / "peers.json").write_text("[]")
    with DataDir.open(path, 2):  # locked, as by a running node
        result = backup_data_dir(path, dest)
    assert (result.blocks, result.difficulty) == (25, 2)
    assert sorted(p.name for p in dest.iterdir()) == [DB_FILENAME, "peers.json"]
    assert not (dest / LOCK_FILENAME).exists()
    assert read_all(dest) == CHAIN
    with DataDir.open(dest, 2):  # a node could start on it: same difficulty, lockable
        pass


def test_backup_refuses_a_dest_that_is_not_empty(tmp_path):
    path, dest = tmp_path / "d", tmp_path / "backup"
    stored(path, CHAIN)
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ArchiveError, match="exists and is not empty"):
        backup_data_dir(path, dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert backup_data_dir(path, empty).blocks == 25
