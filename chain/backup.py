"""A consistent copy of a data dir, made while a node may be running on it.

The chain file is copied with SQLite's online backup API in one step, from a
read-only connection: one read transaction, so the copy is the chain as it was
at one instant (a block the node stores meanwhile is either wholly in it or not
at all), and the node's writes are never blocked (WAL). The data dir's lock is
neither taken nor copied. The other files a node keeps there (`peers.json`) are
copied as they are; they are replaced atomically by the node, so each copy is whole.
The copy is written under a temporary name and renamed into place once complete,
so an interrupted backup never leaves a chain file that looks whole.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from chain.archive import ArchiveError, open_readonly, stored_difficulty
from chain.datadir import LOCK_FILENAME
from chain.store import DB_FILENAME

PARTIAL_SUFFIX = ".partial"


@dataclass
class BackupResult:
    blocks: int
    difficulty: int | None
    files: list[str]


def backup_data_dir(source: str | Path, dest: str | Path) -> BackupResult:
    """Copy the data dir `source` into `dest` (a new or empty directory); raise ArchiveError with one line if not."""
    source, dest = Path(source), Path(dest)
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir():
            raise ArchiveError(f"{dest} exists and is not a directory: pass a new or empty directory")
        if any(dest.iterdir()):
            raise ArchiveError(f"{dest} exists and is not empty: pass a new or empty directory")
    if source.resolve() == dest.resolve():
        raise ArchiveError(f"{dest} is the data dir itself: pass a new or empty directory")
    src = open_readonly(source)
    created = not dest.exists()
    partial = dest / (DB_FILENAME + PARTIAL_SUFFIX)
    try:
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchiveError(f"cannot create {dest}: {exc.strerror or exc}") from None
        try:
            _copy_chain(src, partial)
            os.replace(partial, dest / DB_FILENAME)
            copied = [DB_FILENAME] + _copy_other_files(source, dest)
            _fsync_dir(dest)
        except (OSError, sqlite3.Error) as exc:
            _remove_partial(dest, partial, created)
            raise ArchiveError(f"backup to {dest} failed: {getattr(exc, 'strerror', None) or exc}") from None
        except BaseException:
            _remove_partial(dest, partial, created)
            raise
    finally:
        src.close()
    check = open_readonly(dest)
    try:
        (blocks,) = check.execute("SELECT COUNT(*) FROM blocks").fetchone()
        difficulty = stored_difficulty(check)
    finally:
        check.close()
    return BackupResult(int(blocks), difficulty, copied)


def _copy_chain(src: sqlite3.Connection, target: Path) -> None:
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        src.backup(dst)  # pages=-1: the whole file in one step, from one snapshot
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file; the node turns WAL on when it opens it
        (verdict,) = dst.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise sqlite3.DatabaseError(f"the copy fails SQLite's quick_check: {verdict}")
    finally:
        dst.close()
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())


def _copy_other_files(source: Path, dest: Path) -> list[str]:
    """The data dir's other regular files: not the lock, not the chain file's own (WAL, damaged copies), no temporaries."""
    copied = []
    for path in sorted(source.iterdir()):
        name = path.name
        if name == LOCK_FILENAME or name.startswith(DB_FILENAME) or name.endswith(".tmp") or not path.is_file():
            continue
        try:
            shutil.copy2(path, dest / name)
        except FileNotFoundError:  # replaced or removed by the node just now
            continue
        copied.append(name)
    return copied


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_partial(dest: Path, partial: Path, created: bool) -> None:
    """Undo what this backup wrote (only its own files)."""
    for leftover in (partial, partial.with_name(partial.name + "-journal"), dest / DB_FILENAME):
        try:
            leftover.unlink()
        except OSError:
            pass
    if created:
        shutil.rmtree(dest, ignore_errors=True)
