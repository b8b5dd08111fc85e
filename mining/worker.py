"""The hash loop that runs in a miner's worker OS process, and its pipe protocol.

Python threads share one GIL, so every miner hashes in a process of its own. This
module is what such a process runs: it is imported by the node's MinerActor (via
`multiprocessing`, spawn context) and by the external miner client
(`run_node.py miner`), so both search the nonce space the same way. It imports
only the standard library and the kernel so a worker starts quickly and holds
little memory.

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
    ("kernel", name)                             first report: the hash kernel in use

Nonce layout, per work unit: ``tag + pad + outer + suffix``.

* ``tag`` is given by whoever hands out the work. Tags of concurrent workers must be
  *prefix-free* (no tag a prefix of another: e.g. ``"<index>-<random>"``), which
  makes their nonce spaces disjoint; a random part per work unit means a restarted
  worker does not redo nonces it already tried.
* ``pad`` ("0"s, at most 11) is chosen so that the varying ``suffix`` plus SHA-256
  padding fits in the last 64-byte block: each nonce then costs exactly one
  compression on top of the midstate.
* ``outer`` is 8 hex digits, ``suffix`` 3: together an 11-digit counter. For each
  outer value the midstate (prefix + tag + pad + outer) is computed once and only
  the last block is compressed per ``suffix``.

The search itself is a kernel (mining/kernel.py): the native one where it is
built (SHA-NI or portable C), else the hashlib loop; all find the same nonces.
The worker tells its parent which one it uses (``("kernel", name)``, its first
report). Batches are sized to take ~BATCH_SECONDS; between batches the worker
polls its inbox, so new work is picked up well within 100 ms without restarting
the process.

A worker starved of CPU (a cgroup CPU quota far below one core, a machine
overcommitted many times) gets the CPU in short turns with long waits between
them, and it can only report between batches. A batch grown to ~BATCH_SECONDS
while the worker happened to run uninterrupted then needs several turns, and the
worker stays silent for seconds although it does get CPU. So a batch that lost
the CPU for longer than a report interval marks the worker starved, and for
STARVED_HOLD seconds after that its batches stay at STARVED_BATCH nonces (~0.15 ms
of CPU with SHA-NI; the turns a hundredth of a core shared by eight to ten workers
gives are ~0.1 ms each, a fraction of a second apart), so the worker reports within
a turn or two of getting the CPU. Measured side by side, eight workers sharing a
hundredth of a core: 48% more reports and a quarter shorter silences (p99) than
batches that regrow, for 15% fewer hashes (each batch ends in a poll of the inbox
and, when starved, a report; at 1,024 nonces a batch it was 59% more reports for 30%
fewer hashes, not worth it). The sizing (BatchPacer) carries over from one work unit
to the next.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from multiprocessing.connection import Connection

from chain.block import MAX_NONCE_CHARS  # the one limit, from the chain rules
from mining.kernel import COUNTER_LIMIT, HASHLIB, Kernel, counter_text, select_kernel

OUTER_DIGITS = 8
SUFFIX_DIGITS = 3
BATCH = 16**SUFFIX_DIGITS  # hashes per outer value
LAST_SUFFIX_OFFSET = 64 - 9 - SUFFIX_DIGITS  # suffix + 9 padding bytes still fit one block
MAX_PAD = 63 - LAST_SUFFIX_OFFSET  # 11
MAX_TAG_CHARS = MAX_NONCE_CHARS - OUTER_DIGITS - SUFFIX_DIGITS - MAX_PAD  # 18
REPORT_INTERVAL = 0.1
WORKER_NICE = 10  # how much nicer than the node a local worker runs (see yield_to_the_node)
BATCH_SECONDS = 0.002  # a native batch's target length: short enough to switch work fast, long enough to amortise the call
MAX_NATIVE_BATCH = 1 << 22
STARVED_BATCH = BATCH  # a starved worker's batch: ~0.15 ms of CPU with SHA-NI (smaller ones cost it hashes, below)
STARVED_HOLD = 10.0  # seconds batches stay at STARVED_BATCH after one lost the CPU for longer than REPORT_INTERVAL


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


def next_batch_size(count: int, elapsed: float, cpu: float, starved: bool) -> int:
    """The next native batch's size, from the last one: `count` hashes in `elapsed`
    seconds of wall time, `cpu` of them on the CPU; `starved`: a batch lost the CPU
    for longer than a report interval within the last STARVED_HOLD seconds.

    Wall time is what is aimed at (~BATCH_SECONDS, growing at most 2x a batch, so one
    batch that ran fast by luck can't overshoot): it is what delays new work and
    reports. A starved worker's batches are STARVED_BATCH, less than one turn's worth
    of CPU, so that it reports in nearly every turn it gets (see the module docstring).
    """
    if starved or elapsed - cpu > REPORT_INTERVAL:
        return STARVED_BATCH
    if elapsed <= 0:
        return count
    scaled = int(count * min(2.0, BATCH_SECONDS / elapsed))
    return max(BATCH, min(MAX_NATIVE_BATCH, scaled // BATCH * BATCH))


class BatchPacer:
    """Sizes one worker's native batches, from one work unit to the next (new work comes
    every 2 s, and a starved worker must not start over at a batch too big for its turns)."""

    def __init__(self) -> None:
        self.size = 4 * BATCH
        self.starved_at: float | None = None  # when a batch last lost the CPU for longer than REPORT_INTERVAL

    def update(self, count: int, elapsed: float, cpu: float, ended: float) -> None:
        """A batch of `count` hashes ended at `ended` (perf_counter) after `elapsed` s, `cpu` s of it on the CPU."""
        if elapsed - cpu > REPORT_INTERVAL:
            self.starved_at = ended
        starved = self.starved_at is not None and ended - self.starved_at < STARVED_HOLD
        self.size = next_batch_size(count, elapsed, cpu, starved)


class Search:
    """One work unit's nonce search, in batches; counters run 0 .. 16**11 - 1 in order.

    The nonce for counter c is ``head + "%011x" % c`` (= outer, then suffix, as
    above). The hashlib kernel searches one outer value (BATCH nonces) a batch;
    a native kernel searches as many as take ~BATCH_SECONDS, measured as it goes.
    """

    def __init__(self, work_id: int, prefix: bytes, difficulty: int, tag: str, kernel: Kernel | None = None,
                 pacer: BatchPacer | None = None) -> None:
        if not 0 <= difficulty <= 64:
            raise BadWork("difficulty out of range")
        self.work_id = work_id
        self.difficulty = difficulty
        self.head = nonce_head(len(prefix), tag)
        self.kernel = kernel if kernel is not None else select_kernel()
        self._search = self.kernel.searcher(prefix + self.head.encode("ascii"), difficulty)
        self._pacer = (pacer if pacer is not None else BatchPacer()) if self.kernel.name != HASHLIB else None
        self.counter = 0  # the next counter to hash
        self.last_count = 0  # hashes done by the last batch

    @property
    def batch_size(self) -> int:
        return self._pacer.size if self._pacer is not None else BATCH

    @property
    def exhausted(self) -> bool:
        return self.counter >= COUNTER_LIMIT

    def batch(self) -> tuple[str, str] | None:
        """Hash the next batch of nonces; the first (nonce, hex hash) that meets the difficulty."""
        count = min(self.batch_size, COUNTER_LIMIT - self.counter)
        started = time.perf_counter()
        cpu_started = time.thread_time()  # this thread's CPU (a Ray worker runs the loop in a thread)
        tried, digest = self._search(self.counter, count)
        ended = time.perf_counter()
        elapsed = ended - started
        cpu = time.thread_time() - cpu_started
        self.counter += tried
        self.last_count = tried
        if digest is not None:
            return self.head + counter_text(self.counter - 1).decode(), digest.hex()
        if self._pacer is not None:
            self._pacer.update(count, elapsed, cpu, ended)
        return None


def ignore_group_signals() -> None:
    """Leave stopping to the parent: ignore SIGINT and SIGTERM sent to the whole process group.

    Ctrl-C in a terminal, `timeout`, and service managers signal every process of
    the group at once. A worker that died of that signal would look like a crash
    to its MinerActor (and be restarted) while the node is shutting down. The node
    stops its workers itself ("stop" over the pipe, then SIGKILL if need be), and a
    worker whose parent is gone sees EOF on its pipe and exits.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def yield_to_the_node() -> None:
    """Run the hash loop WORKER_NICE steps nicer than the node that started it.

    A worker never sleeps; the node's own threads (its socket reader, the actor that
    announces a block just found) sleep and wake. Where CPU is contended (every core
    mining, other programs, or Linux's per-session "autogroup" scheduling, which puts a
    node and its workers in one share), an equal-priority worker delays the node's
    wake-ups: in the network lab a miner's own ANNOUNCE left up to 6 s after its block
    was found. A lower priority costs mining nothing on idle cores.
    """
    try:
        os.nice(WORKER_NICE)
    except OSError:  # not permitted (already at the floor, a sandbox): mine at the node's priority
        pass


def run_worker(inbox: Connection, outbox: Connection, report_interval: float = REPORT_INTERVAL) -> None:
    """The worker process's main loop; returns when told to stop or the parent is gone."""
    if threading.current_thread() is threading.main_thread():  # a Ray worker runs this in a thread
        ignore_group_signals()
        yield_to_the_node()
    kernel = select_kernel()
    pacer = BatchPacer()  # batch sizing carries over from one work unit to the next
    search: Search | None = None
    hashed = 0
    last_report = time.monotonic()
    try:
        outbox.send(("kernel", kernel.name))
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
                        search = Search(work_id, prefix, difficulty, tag, kernel, pacer)
                    except BadWork as exc:
                        outbox.send(("bad_work", work_id, str(exc)))
                        search = None
                else:  # "idle" (and anything unknown: do no harm)
                    search = None
                continue
            found = search.batch()
            hashed += search.last_count
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
