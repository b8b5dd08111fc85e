"""Checks a SQLite write-ahead log before SQLite recovers it, so damage is reported.

SQLite replays a WAL up to its first frame whose checksum (or salt) is wrong and
silently ignores everything after it: committed blocks in a damaged WAL vanish
without a word. This reads the WAL file format (sqlite.org/fileformat2.html,
"The WAL file") and counts the frames of the current generation (salts matching
the header) that SQLite will ignore. Frames of an older generation (a WAL reused
after a checkpoint) are normal and not counted.

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
    ignored: int  # frames of the current generation it will skip (damage)
    problem: str | None  # None when nothing is lost


def _checksum(data: bytes, big_endian: bool, s0: int = 0, s1: int = 0) -> tuple[int, int]:
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def check_wal_bytes(data: bytes) -> WalReport:
    """Walk the frames of a WAL image and say which ones SQLite would ignore."""
    if len(data) < WAL_HEADER_BYTES:
        return WalReport(0, 0, 0, None)
    magic, _version, page_size, _seq, salt1, salt2, c0, c1 = struct.unpack(">8I", data[:WAL_HEADER_BYTES])
    if magic not in (MAGIC_LITTLE, MAGIC_BIG) or page_size < 512 or page_size & (page_size - 1):
        frames = (len(data) - WAL_HEADER_BYTES) // (FRAME_HEADER_BYTES + 512) if len(data) > WAL_HEADER_BYTES else 0
        return WalReport(0, 0, frames, "the WAL header is not valid: SQLite will ignore the whole file") if frames else WalReport(0, 0, 0, None)
    big = magic == MAGIC_BIG
    frame_bytes = FRAME_HEADER_BYTES + page_size
    total = (len(data) - WAL_HEADER_BYTES) // frame_bytes
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
    if broken is None:
        return WalReport(total, valid, 0, None)
    # Every later frame carrying the current salts was written in this generation too.
    ignored = 0
    for later in range(broken, total):
        offset = WAL_HEADER_BYTES + later * frame_bytes
        _page, _commit, f_salt1, f_salt2, _f0, _f1 = struct.unpack(">6I", data[offset:offset + FRAME_HEADER_BYTES])
        if (f_salt1, f_salt2) == (salt1, salt2):
            ignored += 1
    return WalReport(total, valid, ignored, f"frame {broken} of {total} fails its checksum: SQLite will ignore it and "
                                            f"the {ignored - 1} current frames after it")


def check_wal(db_path: Path) -> WalReport:
    """The report for `db_path`'s WAL (`<db>-wal`); no WAL or an unreadable one is not damage we can see."""
    wal = db_path.with_name(db_path.name + "-wal")
    try:
        data = wal.read_bytes()
    except OSError:
        return WalReport(0, 0, 0, None)
    return check_wal_bytes(data)
