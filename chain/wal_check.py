"""Checks a SQLite write-ahead log before SQLite recovers it, so damage is reported.

SQLite replays a WAL up to its first frame whose checksum (or salt) is wrong and
silently ignores everything after it: committed blocks in a damaged WAL vanish
without a word. This reads the WAL file format (sqlite.org/fileformat2.html,
"The WAL file") and counts the frames of the current generation (salts matching
the header) that SQLite will ignore. Frames of an older generation (a WAL reused
after a checkpoint) are normal and not counted. A last frame cut short (a torn
write, a truncated file) loses its whole transaction: that is damage too, as is a
frame failing its checksum. The block rows in the lost frames' page images are
read (table-leaf pages only) so the caller can name the heights that are gone.
Whole frames after the last commit with valid checksums are a transaction that
never committed (never acknowledged): normal, not reported.

Pure apart from reading the file: returns a report, writes nothing.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

WAL_HEADER_BYTES = 32
FRAME_HEADER_BYTES = 24
MAGIC_LITTLE = 0x377F0682  # checksums over little-endian words
MAGIC_BIG = 0x377F0683  # checksums over big-endian words


@dataclass(frozen=True)
class WalReport:
    """What SQLite will make of a WAL: `ignored` current-generation frames are lost writes."""

    frames: int  # complete frames in the file
    valid: int  # frames SQLite will replay (up to the last valid commit)
    ignored: int  # frames of the current generation it will skip (damage), a torn last frame included
    problem: str | None  # None when nothing is lost
    torn_bytes: int = 0  # bytes of a last frame cut short (0: the file ends on a frame boundary)
    ignored_bytes: int = 0  # bytes of the skipped frames, the torn one included
    heights: tuple[int, ...] = ()  # block rows (by height) in the skipped frames' pages, where they can be read


def _checksum(data: bytes, big_endian: bool, s0: int = 0, s1: int = 0) -> tuple[int, int]:
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """SQLite's big-endian varint at `pos`: (value, next position); IndexError past the end."""
    value = 0
    for i in range(8):
        byte = data[pos + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    return (value << 8) | data[pos + 8], pos + 9


def block_rows_in_page(page_number: int, page: bytes) -> list[int]:
    """Heights of the block rows in a (possibly cut short) table-leaf page image.

    A block row is a record of six columns whose first is the rowid (the height,
    stored as NULL) and whose second is 64 characters of text (the hash): the
    `blocks` and `staging` tables. Cells past the end of a cut page are skipped.
    """
    base = 100 if page_number == 1 else 0
    heights = []
    try:
        if page[base] != 0x0D:
            return []
        (cells,) = struct.unpack(">H", page[base + 3:base + 5])
        for i in range(cells):
            (offset,) = struct.unpack(">H", page[base + 8 + 2 * i:base + 10 + 2 * i])
            if offset >= len(page):
                continue
            try:
                _size, pos = _varint(page, offset)
                rowid, pos = _varint(page, pos)
                header_size, start = _varint(page, pos)
                types, at = [], start
                while at < pos + header_size and len(types) < 7:
                    kind, at = _varint(page, at)
                    types.append(kind)
            except IndexError:
                continue
            if len(types) == 6 and types[0] == 0 and types[1] == 13 + 2 * 64:
                heights.append(rowid)
    except (IndexError, struct.error):
        return heights
    return heights


def check_wal_bytes(data: bytes) -> WalReport:
    """Walk the frames of a WAL image and say which ones SQLite would ignore (frames are numbered from 1)."""
    if len(data) < WAL_HEADER_BYTES:
        return WalReport(0, 0, 0, None)
    magic, _version, page_size, _seq, salt1, salt2, c0, c1 = struct.unpack(">8I", data[:WAL_HEADER_BYTES])
    if magic not in (MAGIC_LITTLE, MAGIC_BIG) or page_size < 512 or page_size & (page_size - 1):
        frames = (len(data) - WAL_HEADER_BYTES) // (FRAME_HEADER_BYTES + 512) if len(data) > WAL_HEADER_BYTES else 0
        return WalReport(0, 0, frames, "the WAL header is not valid: SQLite will ignore the whole file") if frames else WalReport(0, 0, 0, None)
    big = magic == MAGIC_BIG
    frame_bytes = FRAME_HEADER_BYTES + page_size
    total, torn = divmod(len(data) - WAL_HEADER_BYTES, frame_bytes)
    s0, s1 = _checksum(data[:24], big)
    if (s0, s1) != (c0, c1):
        return WalReport(total, 0, total, "the WAL header fails its checksum: SQLite will ignore the whole file") if total else WalReport(0, 0, 0, None)
    valid = 0
    index = 0
    broken = None
    for index in range(total):
        offset = WAL_HEADER_BYTES + index * frame_bytes
        header = data[offset:offset + FRAME_HEADER_BYTES]
        _page, commit, f_salt1, f_salt2, f0, f1 = struct.unpack(">6I", header)
        if (f_salt1, f_salt2) != (salt1, salt2):
            break  # an older generation from here on: normal, not damage
        s0, s1 = _checksum(header[:8], big, s0, s1)
        s0, s1 = _checksum(data[offset + FRAME_HEADER_BYTES:offset + frame_bytes], big, s0, s1)
        if (s0, s1) != (f0, f1):
            broken = index
            break
        if commit:
            valid = index + 1
    # A last frame cut short is of this generation unless its header says otherwise (a header
    # cut before its salts can't say: it counts, as it may have been a commit).
    tail = data[WAL_HEADER_BYTES + total * frame_bytes:]
    torn_current = bool(torn) and (len(tail) < 16 or struct.unpack(">2I", tail[8:16]) == (salt1, salt2))
    if broken is None and not torn_current:
        return WalReport(total, valid, 0, None)
    # SQLite replays up to the last valid commit: every later frame of this generation is lost
    # (those before the damage belong to the transaction it ends).
    lost = []
    for later in range(valid, total):
        offset = WAL_HEADER_BYTES + later * frame_bytes
        f_salts = struct.unpack(">2I", data[offset + 8:offset + 16])
        if f_salts == (salt1, salt2):
            lost.append((offset, frame_bytes))
    if torn_current:
        lost.append((WAL_HEADER_BYTES + total * frame_bytes, torn))
    heights: set[int] = set()
    for offset, size in lost:
        if size > FRAME_HEADER_BYTES:
            (page_number,) = struct.unpack(">I", data[offset:offset + 4])
            heights.update(block_rows_in_page(page_number, data[offset + FRAME_HEADER_BYTES:offset + size]))
    ignored = len(lost)
    lost_bytes = sum(size for _, size in lost)
    if broken is not None:
        what = f"frame {broken + 1} of {total} fails its checksum"
    else:
        commit = len(tail) >= 8 and struct.unpack(">I", tail[4:8])[0] != 0
        what = (f"the last frame ({total + 1}) is torn: {torn} of its {frame_bytes} bytes are there"
                + (", and it was a commit" if commit else ""))
    return WalReport(total, valid, ignored, f"{what}: SQLite drops the {ignored} frame(s) ({lost_bytes} bytes) "
                                            f"written after the last valid commit ({f'frame {valid}' if valid else 'none'})",
                     torn_bytes=torn, ignored_bytes=lost_bytes, heights=tuple(sorted(heights)))


def check_wal(db_path: Path) -> WalReport:
    """The report for `db_path`'s WAL (`<db>-wal`); no WAL or an unreadable one is not damage we can see."""
    wal = db_path.with_name(db_path.name + "-wal")
    try:
        data = wal.read_bytes()
    except OSError:
        return WalReport(0, 0, 0, None)
    return check_wal_bytes(data)
