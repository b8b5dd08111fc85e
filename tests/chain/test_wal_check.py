"""A damaged write-ahead log is reported at start with what was dropped (issue 18, item 3).

The durability promise (README, "The data dir"): a committed block survives kill -9
and a power cut; what is lost only to damage below SQLite (a torn, truncated or
corrupt last WAL frame) is reported in one ERROR line with the frames, bytes and
block heights dropped.
"""
from __future__ import annotations

import logging
import shutil
import struct
from pathlib import Path

from chain.store import DB_FILENAME, ChainStore
from chain.wal_check import FRAME_HEADER_BYTES, WAL_HEADER_BYTES, block_rows_in_page, check_wal, check_wal_bytes
from sim.chains import make_chain

BLOCKS = 76
CHAIN = make_chain(BLOCKS, 1)


def wal_only_copy(tmp_path: Path) -> tuple[Path, Path]:
    """A data dir whose blocks are all in the WAL, as after kill -9 (copied while the writer still runs)."""
    live = tmp_path / "live"
    store = ChainStore(live)
    store._db.execute("PRAGMA wal_autocheckpoint=0")
    for block in CHAIN:
        store.append(block)
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in ("", "-wal"):
        shutil.copy(live / (DB_FILENAME + suffix), copy / (DB_FILENAME + suffix))
    store.close()
    return copy, copy / (DB_FILENAME + "-wal")


def frame_layout(data: bytes) -> tuple[int, list[int]]:
    """(frame size, commit field of each frame), read independently of wal_check."""
    (page_size,) = struct.unpack(">I", data[8:12])
    size = FRAME_HEADER_BYTES + page_size
    count = (len(data) - WAL_HEADER_BYTES) // size
    commits = [struct.unpack(">I", data[WAL_HEADER_BYTES + i * size + 4:WAL_HEADER_BYTES + i * size + 8])[0] for i in range(count)]
    return size, commits


def last_transaction(commits: list[int]) -> int:
    """How many frames the last committed transaction wrote."""
    earlier = [i for i, c in enumerate(commits[:-1]) if c]
    return len(commits) - 1 - (earlier[-1] if earlier else -1)


def open_logged(data_dir: Path, caplog) -> tuple[ChainStore, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="node.store"):
        store = ChainStore(data_dir)
    return store, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_intact_wal_is_not_reported(tmp_path, caplog):
    copy, wal = wal_only_copy(tmp_path)
    report = check_wal(copy / DB_FILENAME)
    assert report.problem is None and report.ignored == 0 and report.valid == report.frames
    store, errors = open_logged(copy, caplog)
    assert errors == [] and store.height() == BLOCKS
    store.close()


def test_a_truncated_wal_is_reported_with_the_frames_bytes_and_height_lost(tmp_path, caplog):
    copy, wal = wal_only_copy(tmp_path)
    data = wal.read_bytes()
    size, commits = frame_layout(data)
    assert commits[-1]  # the last frame commits the last block
    lost_frames = last_transaction(commits)
    wal.write_bytes(data[:-100])
    report = check_wal(copy / DB_FILENAME)
    assert report.frames == len(commits) - 1
    assert report.torn_bytes == size - 100
    assert report.ignored == lost_frames
    assert report.ignored_bytes == (lost_frames - 1) * size + size - 100
    assert report.valid == len(commits) - lost_frames
    assert BLOCKS - 1 in report.heights
    assert f"the last frame ({len(commits)}) is torn: {size - 100} of its {size} bytes" in report.problem
    store, errors = open_logged(copy, caplog)
    assert store.height() == BLOCKS - 1  # what SQLite kept ...
    assert len(errors) == 1  # ... and what it dropped, said once
    assert f"SQLite drops the {lost_frames} frame(s) ({report.ignored_bytes} bytes)" in errors[0]
    assert f"block {BLOCKS - 1} is lost (the stored chain now has {BLOCKS - 1} blocks)" in errors[0]
    store.close()
    assert list(copy.glob(DB_FILENAME + "-wal.damaged-*"))
    # Reported once: the next start finds a checkpointed store and says nothing.
    store, errors = open_logged(copy, caplog)
    assert errors == [] and store.height() == BLOCKS - 1
    store.close()


def test_a_bad_checksum_in_the_last_frame_is_reported(tmp_path, caplog):
    copy, wal = wal_only_copy(tmp_path)
    data = bytearray(wal.read_bytes())
    size, commits = frame_layout(bytes(data))
    lost_frames = last_transaction(commits)
    last = WAL_HEADER_BYTES + (len(commits) - 1) * size
    data[last + FRAME_HEADER_BYTES + size // 2] ^= 0x01  # one bit of the last page
    wal.write_bytes(bytes(data))
    report = check_wal_bytes(bytes(data))
    assert report.frames == len(commits) and report.torn_bytes == 0
    assert report.ignored == lost_frames and report.ignored_bytes == lost_frames * size
    assert f"frame {len(commits)} of {len(commits)} fails its checksum" in report.problem
    store, errors = open_logged(copy, caplog)
    assert store.height() == BLOCKS - 1
    assert len(errors) == 1 and "fails its checksum" in errors[0]
    assert f"SQLite drops the {lost_frames} frame(s)" in errors[0] and f"block {BLOCKS - 1} is lost" in errors[0]
    store.close()


def test_a_frame_cut_inside_its_header_is_reported_without_heights(tmp_path, caplog):
    copy, wal = wal_only_copy(tmp_path)
    data = wal.read_bytes()
    size, commits = frame_layout(data)
    # The last transaction's frame that holds the block rows (the hash index's pages may come after
    # it): cut 10 bytes into its header, so no frame that is left names a dropped height.
    first = len(commits) - last_transaction(commits)
    holding = [i for i in range(first, len(commits))
               if block_rows_in_page(2, data[WAL_HEADER_BYTES + i * size + FRAME_HEADER_BYTES:WAL_HEADER_BYTES + (i + 1) * size])]
    assert len(holding) == 1
    cut = holding[0]
    wal.write_bytes(data[:WAL_HEADER_BYTES + cut * size + 10])
    report = check_wal(copy / DB_FILENAME)
    assert report.torn_bytes == 10 and report.ignored == cut - first + 1 and report.heights == ()
    store, errors = open_logged(copy, caplog)
    assert store.height() == BLOCKS - 1
    assert len(errors) == 1 and "torn: 10 of its" in errors[0] and "can't be told" in errors[0]
    store.close()


def test_a_damaged_frame_further_back_drops_every_later_block(tmp_path, caplog):
    copy, wal = wal_only_copy(tmp_path)
    data = bytearray(wal.read_bytes())
    size, commits = frame_layout(bytes(data))
    broken = len(commits) - 10  # 0-based: frames broken.. are dropped, and the uncommitted ones before it
    data[WAL_HEADER_BYTES + broken * size + FRAME_HEADER_BYTES + 7] ^= 0x80
    wal.write_bytes(bytes(data))
    report = check_wal_bytes(bytes(data))
    earlier = [i for i, c in enumerate(commits[:broken]) if c]
    assert report.valid == earlier[-1] + 1
    assert report.ignored == len(commits) - report.valid
    store, errors = open_logged(copy, caplog)
    kept = store.height()
    assert kept < BLOCKS and len(errors) == 1
    assert f"blocks {kept}..{BLOCKS - 1} are lost (the stored chain now has {kept} blocks)" in errors[0]
    store.close()
