"""The data dir: locked while a node uses it, and it says what it holds.

* **Lock.** `node.lock` in the data dir holds an exclusive `flock` for as long
  as the node runs (the kernel drops it when the process dies, even on `kill -9`)
  and the pid of its holder, so a second node on the same dir is refused with
  "data dir ... is in use by pid N" instead of interleaving its blocks with the
  first one's.
* **What it holds.** The chain file's `meta` table records the difficulty the
  chain was built at. A start with another `--difficulty` would find every block
  invalid; it is refused (exit 2) with a line naming the stored difficulty, and
  nothing on disk changes. A data dir from before `meta` existed is judged by its
  blocks' hashes.
* **Unusable files are left alone.** A chain file that is not an SQLite database
  (or is a directory, or unreadable) is reported by name and never rewritten.
"""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from pathlib import Path

from chain.store import DB_FILENAME, ChainStore
from runtime.startup import EXIT_USAGE, StartupError

log = logging.getLogger("node.datadir")

LOCK_FILENAME = "node.lock"
META_DIFFICULTY = "difficulty"
SQLITE_MAGIC = b"SQLite format 3\x00"
# A data dir without `meta` is judged by this many of its first blocks.
LEGACY_SAMPLE = 1000


class DataDirError(StartupError):
    """The data dir (or its chain file) can't be used as it is."""


class DifficultyMismatch(DataDirError):
    """The data dir holds a chain at another difficulty than asked for."""

    exit_code = EXIT_USAGE


class DataDir:
    """A locked data dir whose chain file agrees with `difficulty`. `close()` unlocks it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def open(cls, path: str | Path, difficulty: int) -> "DataDir":
        """Create (if needed), lock and check the data dir; raise DataDirError with one line if not usable."""
        path = Path(path)
        _ensure_dir(path)
        fd = _lock(path)
        try:
            check_chain_file(path / DB_FILENAME, difficulty)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd=fd)

    def close(self) -> None:
        """Release the lock (the lock file stays: removing it would race a starting node)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> "DataDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ensure_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise DataDirError(f"data dir {path} is not a directory: pass another --data-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot create data dir {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise DataDirError(f"data dir {path} is not writable by this user: pass another --data-dir")


def _lock(path: Path) -> int:
    lock_path = path / LOCK_FILENAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DataDirError(f"cannot open the lock file {lock_path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        who = f"pid {holder}" if holder else "another process"
        raise DataDirError(f"data dir {path} is in use by {who} (another node): stop it, "
                           f"or pass another --data-dir") from None
    except OSError as exc:
        os.close(fd)
        raise DataDirError(f"cannot lock data dir {path}: {exc.strerror or exc}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def check_chain_file(db_path: Path, difficulty: int) -> None:
    """The chain file is SQLite and holds a chain at `difficulty` (recorded if it wasn't)."""
    if db_path.exists() or db_path.is_symlink():
        if not db_path.is_file():
            raise DataDirError(f"chain file {db_path} is not a regular file: move it aside or pass another --data-dir")
        try:
            with open(db_path, "rb") as handle:
                header = handle.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise DataDirError(f"cannot read chain file {db_path}: {exc.strerror or exc}") from None
        if header and header != SQLITE_MAGIC:
            raise DataDirError(f"chain file {db_path} is not an SQLite database (left untouched): "
                               f"move it aside or pass another --data-dir")
    try:
        store = ChainStore(db_path.parent)
    except sqlite3.Error as exc:
        raise DataDirError(f"chain file {db_path} can't be opened ({exc}; left untouched): "
                           f"move it aside or pass another --data-dir") from None
    try:
        _check_difficulty(store, db_path, difficulty)
    except sqlite3.Error as exc:
        raise DataDirError(f"chain file {db_path} can't be read ({exc}): move it aside or pass another --data-dir") from None
    finally:
        store.close()


def _check_difficulty(store: ChainStore, db_path: Path, difficulty: int) -> None:
    blocks = store.height()
    recorded = store.get_meta(META_DIFFICULTY)
    if recorded is not None and recorded.isdigit():
        stored = int(recorded)
        if stored == difficulty:
            return
        if blocks == 0:
            log.info("data dir %s held no blocks at difficulty %d; now difficulty %d", db_path.parent, stored, difficulty)
            store.set_meta(META_DIFFICULTY, str(difficulty))
            return
        raise DifficultyMismatch(
            f"data dir {db_path.parent} holds a chain of {blocks} blocks at difficulty {stored}, not {difficulty}: "
            f"start with --difficulty {stored}, or pass another --data-dir for difficulty {difficulty} (nothing was changed)")
    if blocks:
        # Recorded before the data dir said what it holds: the blocks' hashes tell.
        zeros = min(len(h) - len(h.rstrip("0")) for h in store.hashes(LEGACY_SAMPLE))
        if zeros < difficulty:
            raise DifficultyMismatch(
                f"data dir {db_path.parent} holds a chain of {blocks} blocks with as few as {zeros} trailing zeros "
                f"(difficulty {zeros} or less), not {difficulty}: start with --difficulty {zeros}, "
                f"or pass another --data-dir for difficulty {difficulty} (nothing was changed)")
    store.set_meta(META_DIFFICULTY, str(difficulty))
