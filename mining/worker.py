"""The hash loop that runs in a miner's worker OS process, and its pipe protocol.

Python threads share one GIL, so every miner hashes in a process of its own. This
module is what such a process runs: it is imported by the node's MinerActor (via
`multiprocessing`, spawn context) and by the external miner client
(`run_node.py miner`), so both search the nonce space the same way. It imports
only the standard library so a worker starts quickly and holds little memory.

Pipe protocol (two simplex `multiprocessing` Pipes of pickled tuples):

parent -> worker (`inbox`)
    ("work", work_id, prefix, difficulty, tag)   search this until told otherwise
    ("idle",)                                    stop hashing, wait for work
    ("stop",)                                    exit
worker -> parent (`outbox`)
    ("hashes", count)                            hashes done since the last report (~every 0.1 s)
    ("found", work_id, nonce, hash_hex)          a nonce meeting the difficulty; the worker then idles
    ("exhausted", work_id)                       the work's nonce space is used up; idles
    ("bad_work", work_id, reason)                the work can't be searched; idles

Nonce layout, per work unit: ``tag + pad + outer + suffix``.

* ``tag`` is given by whoever hands out the work. Tags of concurrent workers must be
  *prefix-free* (no tag a prefix of another: e.g. ``"<index>-<random>"``), which
  makes their nonce spaces disjoint; a random part per work unit means a restarted
  worker does not redo nonces it already tried.
* ``pad`` ("0"s, at most 11) is chosen so that the varying ``suffix`` plus SHA-256
  padding fits in the last 64-byte block: each nonce then costs exactly one
  compression on top of the midstate.
* ``outer`` is 8 hex digits; for each value the midstate (prefix + tag + pad +
  outer) is hashed once and copied per ``suffix`` (3 hex digits, 4096 per batch).

Between batches (~1-2 ms) the worker polls its inbox, so new work is picked up
well within 100 ms without restarting the process.
"""
from __future__ import annotations

import hashlib
import signal
import time
from multiprocessing.connection import Connection

OUTER_DIGITS = 8
SUFFIX_DIGITS = 3
BATCH = 16**SUFFIX_DIGITS  # hashes per outer value
SUFFIXES: tuple[bytes, ...] = tuple(b"%0*x" % (SUFFIX_DIGITS, i) for i in range(BATCH))
MAX_NONCE_CHARS = 40
LAST_SUFFIX_OFFSET = 64 - 9 - SUFFIX_DIGITS  # suffix + 9 padding bytes still fit one block
MAX_PAD = 63 - LAST_SUFFIX_OFFSET  # 11
MAX_TAG_CHARS = MAX_NONCE_CHARS - OUTER_DIGITS - SUFFIX_DIGITS - MAX_PAD  # 18
REPORT_INTERVAL = 0.1


class BadWork(ValueError):
    """Work the worker cannot search (a tag that is too long or not ASCII)."""


def nonce_head(prefix_len: int, tag: str) -> str:
    """``tag + pad``: what comes before the counters, padded for one compression per hash.

    SHA-256 works on 64-byte blocks; the final one also holds 9 bytes of padding. If
    the suffix would start past offset 52 of its block, suffix plus padding would
    spill into a second block, doubling the cost of every hash; padding the head so
    the counters start a fresh block avoids that.
    """
    if not tag.isascii() or len(tag) > MAX_TAG_CHARS:
        raise BadWork(f"tag must be ASCII and at most {MAX_TAG_CHARS} characters")
    offset = (prefix_len + len(tag) + OUTER_DIGITS) % 64  # where the suffix starts
    pad = 0 if offset <= LAST_SUFFIX_OFFSET else 64 - offset
    return tag + "0" * pad


def digest_meets(digest: bytes, difficulty: int) -> bool:
    """True when the digest's hex form ends with `difficulty` '0's, without making it."""
    whole, half = divmod(difficulty, 2)
    if whole and digest[len(digest) - whole :] != bytes(whole):
        return False
    return not half or digest[len(digest) - whole - 1] & 0x0F == 0


class Search:
    """One work unit's nonce search, in batches of BATCH hashes."""

    def __init__(self, work_id: int, prefix: bytes, difficulty: int, tag: str) -> None:
        if not 0 <= difficulty <= 64:
            raise BadWork("difficulty out of range")
        self.work_id = work_id
        self.difficulty = difficulty
        self.head = nonce_head(len(prefix), tag)
        self._base = hashlib.sha256(prefix + self.head.encode("ascii"))
        self.outer = 0

    @property
    def exhausted(self) -> bool:
        return self.outer >= 16**OUTER_DIGITS

    def batch(self) -> tuple[str, str] | None:
        """Hash the next BATCH nonces; the first (nonce, hex hash) that meets the difficulty."""
        outer = b"%0*x" % (OUTER_DIGITS, self.outer)
        self.outer += 1
        mid = self._base.copy()
        mid.update(outer)
        copy = mid.copy
        difficulty = self.difficulty
        if difficulty >= 2:
            # Hot loop: a hash whose last byte is not 0 can't end with two hex zeros.
            for suffix in SUFFIXES:
                h = copy()
                h.update(suffix)
                if not h.digest()[-1]:
                    digest = h.digest()
                    if digest_meets(digest, difficulty):
                        return self.head + outer.decode() + suffix.decode(), digest.hex()
        else:
            for suffix in SUFFIXES:
                h = copy()
                h.update(suffix)
                digest = h.digest()
                if digest_meets(digest, difficulty):
                    return self.head + outer.decode() + suffix.decode(), digest.hex()
        return None


def run_worker(inbox: Connection, outbox: Connection, report_interval: float = REPORT_INTERVAL) -> None:
    """The worker process's main loop; returns when told to stop or the parent is gone."""
    # Ctrl-C in a terminal signals the whole process group; the parent decides when
    # workers stop (it terminates them), so a worker ignores SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    search: Search | None = None
    hashed = 0
    last_report = time.monotonic()
    try:
        while True:
            if search is None or inbox.poll():
                if hashed:
                    outbox.send(("hashes", hashed))
                    hashed = 0
                message = inbox.recv()  # blocks only while idle; EOFError when the parent is gone
                kind = message[0]
                if kind == "stop":
                    return
                if kind == "work":
                    _, work_id, prefix, difficulty, tag = message
                    try:
                        search = Search(work_id, prefix, difficulty, tag)
                    except BadWork as exc:
                        outbox.send(("bad_work", work_id, str(exc)))
                        search = None
                else:  # "idle" (and anything unknown: do no harm)
                    search = None
                continue
            found = search.batch()
            hashed += BATCH
            if found is not None:
                outbox.send(("hashes", hashed))
                hashed = 0
                outbox.send(("found", search.work_id, *found))
                search = None  # every other nonce of this work would make the same (now stale) block
                last_report = time.monotonic()
                continue
            if search.exhausted:
                outbox.send(("exhausted", search.work_id))
                search = None
            now = time.monotonic()
            if now - last_report >= report_interval:
                outbox.send(("hashes", hashed))
                hashed = 0
                last_report = now
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        return  # the parent went away: nothing left to mine for
