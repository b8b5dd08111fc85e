"""MinerActor: drives one worker that runs the hash loop (a local process, or a Ray actor).

The actor is the worker's supervisor-facing half. It builds work (the block's
fixed prefix, hashed once by the worker, plus a nonce tag of its own), sends it
over a pipe, and turns what the worker reports into hash-rate figures and, for a
found nonce, a block it verifies and hands to ChainKeeper (which stores it, then
announces it).

Why it is shaped like this:

* One process per actor (multiprocessing, *spawn* context): hashing in threads
  would share one GIL; spawn (not fork) because the node is full of threads whose
  locks a forked child would inherit in unknown states.
* The actor never blocks on the pipe. A reader thread blocks on it and `tell`s
  the actor what arrives; when the worker dies (kill -9) the reader sees EOF at
  once, and a 0.25 s ticker checks the process too (and that a worker with work
  keeps reporting: one silent for STALL_TIMEOUT is judged, and killed if hung).
  Silence alone is not a hang: a local worker is killed only on evidence (its
  process state and the CPU it used while silent, mining/stall.py), so one that is
  merely starved of CPU (a tiny cgroup quota, an overloaded machine) is kept; a
  Ray worker, whose process may be elsewhere, is judged by silence. Either way the actor raises
  `WorkerDied` inside a told message, so Pykka calls `on_failure`, the supervisor
  counts a MinerActor restart, and the new instance starts a new worker.
* Work is rebuilt on every tip change and every REFRESH_INTERVAL seconds, so the
  timestamp stays current and NEW_WORDs that arrived meanwhile get in.
* Where the worker runs is a backend (mining/worker_backends.py): a local process,
  or with `--ray-address` a Ray actor reached through a local bridge process. Both
  look the same from here (a child process and two pipes), so a Ray worker's death
  is a WorkerDied and a supervisor restart like a local one. A cluster that can't
  be reached is not a crash: the miner stays up, reports itself degraded with the
  reason, and retries with exponential backoff (no restart storm that would end
  the node).
"""
from __future__ import annotations

import secrets
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable, TypeVar

import psutil
import pykka

from actors.base import NodeActor
from runtime.context import NodeContext
from runtime.interfaces import ChainProxy, MinerApi, TipListener
from mining.kernel import warn_if_not_native
from mining.stall import SPIN_CPU_SECONDS, STARVED, STARVED_LIMIT, STARVED_TOO_LONG, judge_silence
from mining.worker_backends import ProcessWorker, RayWorker, WorkerBackend
from chain.block import (
    MAX_MESSAGE_CHARS,
    MAX_MESSAGES,
    MAX_NONCE_CHARS,
    MAX_TIMESTAMP,
    Block,
    InvalidBlock,
    check_block,
    hash_prefix,
    python_reply_bytes,
)
from messages.internal import TipChanged
from messages.wire import MAX_SENT_BLOCK_BYTES, fits_in_a_reply

T = TypeVar("T")

ASK_TIMEOUT = 1.0  # well under the supervisor's liveness timeout: a slow ChainKeeper must not make us look hung
REFRESH_INTERVAL = 2.0  # seconds between work rebuilds without a tip change (timestamp, new words)
CHECK_INTERVAL = 0.25  # how often the worker process is checked for death (the pipe's EOF is usually first)
RATE_WINDOW = 3.0  # seconds of hash reports the hash rate is averaged over
KEPT_WORK = 4  # recent work units a found nonce may still belong to
STALL_TIMEOUT = 10.0  # a worker with work reports every 0.1 s; this much silence and it is judged (mining/stall.py)
CONNECT_TIMEOUT = 90.0  # a Ray bridge that neither starts its worker nor says why in this long is given up on
RETRY_FIRST = 1.0  # backoff for an unreachable Ray cluster: 1 s, doubling...
RETRY_MAX = 30.0  # ...up to this
# A worker ignores SIGINT/SIGTERM once it runs (they are for the node, sent to the whole process
# group by Ctrl-C, `timeout` or a service manager), so dying of one means it was still starting.
GROUP_SIGNAL_EXITS = {-signal.SIGINT, -signal.SIGTERM}
QUIET_REPLACEMENTS = 3  # such deaths in a row replaced in place; one more is a WorkerDied


class WorkerDied(RuntimeError):
    """The worker process is gone; raised inside the actor so the supervisor restarts it."""


@dataclass(frozen=True, slots=True)
class WorkerProbe:
    """What the stall judgement needs from a silent worker's process."""

    status: str  # psutil's status(): running, sleeping, stopped, zombie...
    cpu_seconds: float  # user + system CPU the process has used so far


def probe_worker(process: psutil.Process) -> WorkerProbe | None:
    """Read a worker's state and CPU time (two reads of /proc); None if it can't be read."""
    try:
        with process.oneshot():
            times = process.cpu_times()
            return WorkerProbe(process.status(), times.user + times.system)
    except psutil.Error:
        return None


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """What a found nonce is combined with to make the block."""

    work_id: int
    height: int
    prev_hash: str | None
    mined_by: str
    messages: tuple[str, ...]
    timestamp: int


# Messages from the reader thread to the actor (told, never asked). Each names the
# worker it came from: reports of a worker already replaced are ignored.
@dataclass(frozen=True, slots=True)
class _Hashes:
    worker: WorkerBackend
    count: int


@dataclass(frozen=True, slots=True)
class _Found:
    worker: WorkerBackend
    work_id: int
    nonce: str
    hash: str


@dataclass(frozen=True, slots=True)
class _WorkerIdle:
    worker: WorkerBackend
    work_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class _Kernel:
    worker: WorkerBackend
    name: str


@dataclass(frozen=True, slots=True)
class _WorkerExited:
    worker: WorkerBackend


@dataclass(frozen=True, slots=True)
class _RayEvent:
    """A Ray bridge's own report: ray_started / ray_pending / ray_unavailable / ray_died."""

    worker: WorkerBackend
    kind: str
    args: tuple[Any, ...]


def fits_however_reencoded(height: int, mined_by: str, messages: tuple[str, ...]) -> bool:
    """True when a block with these fields, whatever nonce and timestamp it ends up
    with, stays within MAX_SENT_BLOCK_BYTES both as we send it (compact UTF-8) and as
    a Python peer serves it again (`json.dumps` defaults: `\\uXXXX` escapes, spaced
    separators), the larger of the two."""
    if not fits_in_a_reply(height, mined_by, messages):
        return False
    worst = Block(height, mined_by, messages, "x" * MAX_NONCE_CHARS, MAX_TIMESTAMP - 1, "0" * 64)
    return python_reply_bytes(worst) <= MAX_SENT_BLOCK_BYTES


def usable_words(words: list[str], default: str, mined_by: str = "", height: int = 0) -> tuple[str, ...]:
    """Up to MAX_MESSAGES queued words a block may carry, else the default message.

    ChainKeeper only queues non-empty words of at most 20 characters; this also
    drops what can't be UTF-8 encoded (a lone surrogate from JSON), which would
    otherwise make every block we build unhashable, and stops before the block
    would no longer fit a 1,024-byte datagram as a GET_BLOCK_REPLY, however a peer
    re-encodes it (`fits_however_reencoded`: words of non-ASCII characters grow
    to 6 or 12 bytes each when escaped); the words left stay queued for the next
    block.
    """
    kept = []
    for word in words:
        if not isinstance(word, str) or not word or len(word) > MAX_MESSAGE_CHARS:
            continue
        try:
            word.encode("utf-8")
        except UnicodeEncodeError:
            continue
        if not fits_however_reencoded(height, mined_by, (*kept, word)):
            break
        kept.append(word)
        if len(kept) == MAX_MESSAGES:
            break
    return tuple(kept) or (default,)


class MinerActor(NodeActor, MinerApi, TipListener):
    """One miner: owns one worker (local process or Ray actor); public protocol below."""
    # Expendable: a hung miner is abandoned (its worker process killed) and replaced.
    # Starting a worker process takes seconds on a loaded machine.
    message_budget = 30.0

    def __init__(self, ctx: NodeContext, name: str, index: int) -> None:
        super().__init__(ctx, name)
        self.index = index
        self.default_message = f"pow-node miner {index}"[:MAX_MESSAGE_CHARS]
        self._label = str(index)
        self._ray_address: str | None = getattr(ctx.config, "ray_address", None)
        self._backend = "ray" if self._ray_address else "process"
        self._hashrate_gauge = ctx.metrics.miner_hashrate.labels(miner=self._label, backend=self._backend)
        self._hashes_counter = ctx.metrics.miner_hashes.labels(miner=self._label, backend=self._backend)
        self._worker: WorkerBackend | None = None
        self._ps: psutil.Process | None = None
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()
        self._released = False
        self._work_id = 0
        self._works: dict[int, WorkUnit] = {}
        self._current: WorkUnit | None = None  # what the worker is searching now (None: idle)
        self._hashes_total = 0
        self._blocks_found = 0
        self._samples: deque[tuple[float, int]] = deque()
        self._last_heard = time.monotonic()  # last report from the worker (or when it got work)
        self._worker_started = time.monotonic()
        self._death_reason: str | None = None  # what a Ray bridge said before it exited
        self._degraded: str | None = None  # why this miner can't mine now (an unreachable cluster)
        self._pending: str | None = None  # the worker waits to be placed
        self._retry_at: float | None = None
        self._retry_delay = RETRY_FIRST
        self._kernel: str | None = None  # the hash kernel the worker reported
        self._worker_reported = False  # the current worker has sent a report (it is past its start-up)
        self._quiet_replacements = 0
        # While a silent local worker is judged: its CPU seconds when silence passed STALL_TIMEOUT,
        # so the CPU it uses while silent can be told; None while it reports.
        self._silence_cpu: float | None = None
        self._starved_logged = False  # this silence's "starved, kept" was logged

    # ---------------------------------------------------------- lifecycle

    def on_start(self) -> None:
        # Pykka does not call on_failure/on_stop when on_start raises: free the worker here.
        try:
            self._start_worker()
            self.every(CHECK_INTERVAL, self.check_worker)
            self.every(REFRESH_INTERVAL, self.refresh_work)
            self.refresh_work()
        except BaseException:
            self._cancel_timers()
            self.release()
            raise

    def _start_worker(self) -> None:
        warn_if_not_native(self.log)  # once per node process (a Ray worker reports its own kernel)
        if self._ray_address:
            worker: WorkerBackend = RayWorker(self.index, self._ray_address)
            self.log.info("Ray bridge pid %d started for cluster %s", worker.child_pid, self._ray_address)
        else:
            worker = ProcessWorker(self.index)
            self.log.info("worker pid %d started", worker.pid)
        self._worker = worker
        self._worker_reported = False
        self._worker_started = self._last_heard = time.monotonic()
        self._end_silence()
        self._samples.append((time.monotonic(), self._hashes_total))
        self._watch_pid(worker.local_pid)
        assert worker.from_worker is not None
        self._reader = threading.Thread(
            target=_read_reports, args=(worker.from_worker, self.actor_ref, worker, self._stopping),
            name=f"{self.name}-reader", daemon=True,
        )
        self._reader.start()

    def _watch_pid(self, pid: int | None) -> None:
        """One psutil.Process per worker (the first cpu_percent() is always 0.0: prime it now)."""
        self._ps = None
        if pid is None:
            return
        try:
            self._ps = psutil.Process(pid)
            self._ps.cpu_percent(None)
        except psutil.Error:
            self._ps = None

    def release(self) -> None:
        """Stop the worker: ask, terminate, wait, kill. Idempotent."""
        if self._released:
            return
        self._released = True
        self._stopping.set()
        self._stop_worker()
        self._hashrate_gauge.set(0)

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not threading.current_thread():
            reader.join(1.0)
        self._ps = None
        self._current = None

    # ---------------------------------------------------------- public protocol

    def on_tip_changed(self, event: TipChanged) -> None:
        """ChainKeeper's tip moved: mine on top of it at once."""
        current = self._current
        if current is not None and (current.height, current.prev_hash) == (event.height, event.hash):
            return  # already mining on this tip (e.g. we announced the block ourselves)
        self._new_work(event.height, event.hash)

    def refresh_work(self) -> None:
        """Rebuild work from ChainKeeper's tip: a fresh timestamp and the current words."""
        if self._worker is None or not self._worker.ready:
            return  # nothing to search with yet; work is sent once the worker is up
        tip = self._ask_chain(lambda chain: chain.tip())
        if tip is None:
            return  # ChainKeeper is down or busy; its TipChanged after a restart will bring work
        height, top = tip
        self._new_work(height, top)

    def check_worker(self) -> None:
        """Raise WorkerDied if the worker has exited or stopped reporting (ticker; backs up the pipe's EOF).

        Also starts a new Ray bridge when a retry after an unreachable cluster is due.
        """
        if self._stopping.is_set():
            return
        worker = self._worker
        now = time.monotonic()
        if worker is None:
            if self._retry_at is not None and now >= self._retry_at:
                self._retry_at = None
                self._start_worker()
            return
        if worker.exitcode is not None:
            if self._replaced_quietly(worker, worker.exitcode):
                return
            raise WorkerDied(self._death_reason or f"worker pid {worker.child_pid} exited with code {worker.exitcode}")
        if not worker.ready:
            if self._pending is None and now - self._worker_started > CONNECT_TIMEOUT:
                self._cluster_unavailable(f"no answer from the Ray cluster at {self._ray_address} in {CONNECT_TIMEOUT:.0f}s")
            return
        silent = now - self._last_heard
        if self._current is None or silent <= STALL_TIMEOUT:
            self._end_silence()
            return
        if worker.kind == "ray":
            # The Ray worker's process may be on another machine: silence is all we can see.
            worker.hard_kill()
            worker.kill()
            raise WorkerDied(f"worker pid {worker.pid} stalled: no report for {silent:.1f}s")
        self._judge_silence(worker, silent)

    def _judge_silence(self, worker: WorkerBackend, silent: float) -> None:
        """A local worker silent past STALL_TIMEOUT: kill it if it is hung, keep it if it is only starved."""
        probe = probe_worker(self._ps) if self._ps is not None else None
        cpu_used: float | None = None
        if probe is not None:
            if self._silence_cpu is None:
                self._silence_cpu = probe.cpu_seconds
            cpu_used = probe.cpu_seconds - self._silence_cpu
        verdict = judge_silence(silent, STALL_TIMEOUT, probe.status if probe is not None else None, cpu_used,
                                SPIN_CPU_SECONDS, STARVED_LIMIT)
        if verdict.kind == STARVED:
            if not self._starved_logged:
                self._starved_logged = True
                self.log.info("worker pid %s kept: %s", worker.pid, verdict.reason)
            return
        if not verdict.replace:
            return
        worker.hard_kill()  # SIGKILL works on a stopped process; terminate would wait for SIGCONT
        if verdict.kind == STARVED_TOO_LONG:
            # Not evidence of a hang, a bound on waiting: say so, so it is not read as one.
            self.log.warning("worker pid %s replaced although not seen hung: %s", worker.pid, verdict.reason)
            raise WorkerDied(f"worker pid {worker.pid} replaced: {verdict.reason}")
        raise WorkerDied(f"worker pid {worker.pid} stalled: {verdict.reason}")

    def _end_silence(self) -> None:
        self._silence_cpu = None
        self._starved_logged = False

    def kill_worker(self) -> int | None:
        """SIGKILL our worker (fault injection); the death is then handled as a real one."""
        worker = self._worker
        pid = worker.kill() if worker is not None else None
        if pid is not None:
            self.log.warning("worker pid %d killed (fault injection)", pid)
        return pid

    def health_details(self) -> dict[str, Any]:
        """The miner's part of /health: backend, where the worker runs, pid, hash rate, CPU and memory."""
        worker = self._worker
        cpu_percent: float | None = None
        rss_bytes: int | None = None
        if self._ps is not None:
            try:
                cpu_percent = self._ps.cpu_percent(None)
                rss_bytes = self._ps.memory_info().rss
            except psutil.Error:
                pass
        details: dict[str, Any] = {"backend": self._backend}
        if self._backend == "ray":
            details.update({"ray_node": None, "ray_node_id": None, "ray_address": self._ray_address})
        if worker is not None:
            details.update(worker.details())
        details.update({
            "pid": worker.pid if worker is not None else None,
            "kernel": self._kernel,
            "hashrate": round(self._hashrate(), 1),
            "cpu_percent": cpu_percent,
            "rss_bytes": rss_bytes,
            "hashes_total": self._hashes_total,
            "blocks_found": self._blocks_found,
            "height": self._current.height if self._current is not None else None,
            "state": self._state(),
            "degraded": self._degraded or self._pending,
        })
        return details

    def _state(self) -> str:
        worker = self._worker
        if worker is None:
            return "waiting for the Ray cluster" if self._degraded else "stopped"
        if not worker.ready:
            return "waiting for a CPU in the Ray cluster" if self._pending else "connecting"
        return "mining" if self._current is not None else "idle"

    # ---------------------------------------------------------- worker reports

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, (_Hashes, _Found, _WorkerIdle, _WorkerExited, _RayEvent, _Kernel)):
            if message.worker is not self._worker:
                return None  # from a worker already stopped or replaced
        if isinstance(message, (_Hashes, _Found, _WorkerIdle, _Kernel)):
            self._last_heard = time.monotonic()
            self._end_silence()
        if isinstance(message, (_Hashes, _Kernel)):
            self._worker_reported = True
            self._quiet_replacements = 0
        if isinstance(message, _Hashes):
            self._on_hashes(message.count)
            return None
        if isinstance(message, _Kernel):
            if message.name != self._kernel:
                self.log.info("worker pid %s hashes with the %s kernel", message.worker.pid or "?", message.name)
            self._kernel = message.name
            return None
        if isinstance(message, _Found):
            self._on_found(message)
            return None
        if isinstance(message, _WorkerIdle):
            self.log.warning("worker idled on work %d: %s", message.work_id, message.reason)
            if self._current is not None and self._current.work_id == message.work_id:
                self._current = None
                self.refresh_work()
            return None
        if isinstance(message, _RayEvent):
            self._on_ray_event(message)
            return None
        if isinstance(message, _WorkerExited):
            if self._stopping.is_set():
                return None
            worker = message.worker
            code = worker.reap(0.5)  # the exit code (e.g. -9) says how it died
            if self._replaced_quietly(worker, code):
                return None
            raise WorkerDied(self._death_reason or f"worker pid {worker.pid} exited (code {code})")
        return super().on_receive(message)

    def _replaced_quietly(self, worker: WorkerBackend, code: int | None) -> bool:
        """A worker killed by SIGINT/SIGTERM before its first report is replaced here, not as a crash.

        Ctrl-C, `timeout` and service managers signal the whole process group. A worker
        ignores those signals from its first line of code on, but a spawned interpreter
        takes a few hundred ms on a busy machine to get there; one that died of the
        group's signal in that window is no miner failure (the node itself is most
        likely shutting down and will stop this actor next). A few in a row at most.
        """
        if code not in GROUP_SIGNAL_EXITS or self._worker_reported or self._death_reason is not None:
            return False
        if self._quiet_replacements >= QUIET_REPLACEMENTS:
            return False
        self._quiet_replacements += 1
        self.log.info("worker pid %s ended by %s while still starting (a signal to the whole process group); "
                      "starting another", worker.child_pid, signal.Signals(-code).name)
        self._stop_worker()
        self._start_worker()
        self.refresh_work()
        return True

    def _on_ray_event(self, event: _RayEvent) -> None:
        worker = event.worker
        if event.kind == "ray_started" and isinstance(worker, RayWorker):
            pid, node_id, node_ip, same_node = event.args
            worker.started(int(pid), str(node_id), str(node_ip), bool(same_node))
            self._watch_pid(worker.local_pid)
            self._last_heard = time.monotonic()
            if self._degraded or self._pending:
                self.log.info("Ray cluster at %s reachable again", self._ray_address)
            self._degraded = self._pending = None
            self._retry_delay = RETRY_FIRST
            self.log.info("Ray worker pid %d started on node %s (%s)", pid, node_ip, str(node_id)[:12])
            self.refresh_work()
        elif event.kind == "ray_pending":
            self._pending = str(event.args[0])
            self.log.warning("%s", self._pending)
        elif event.kind == "ray_unavailable":
            self._cluster_unavailable(str(event.args[0]))
        elif event.kind == "ray_died":
            self._death_reason = str(event.args[0])  # the bridge exits next: WorkerDied with this reason

    def _cluster_unavailable(self, reason: str) -> None:
        """No cluster to mine on: stay up, degraded with the reason, retry with backoff."""
        delay = self._retry_delay
        self._retry_delay = min(RETRY_MAX, delay * 2)
        self._degraded = f"{reason}; retrying in {delay:.0f}s"
        self._pending = None
        self.log.warning("mining degraded: %s", self._degraded)
        self._stop_worker()
        self._hashrate_gauge.set(0)
        self._retry_at = time.monotonic() + delay

    def _on_hashes(self, count: int) -> None:
        self._hashes_total += count
        self._hashes_counter.inc(count)
        now = time.monotonic()
        self._samples.append((now, self._hashes_total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()
        self._hashrate_gauge.set(self._hashrate(now))

    def _hashrate(self, now: float | None = None) -> float:
        """Hashes/s since the oldest sample in the window (counting idle time up to now)."""
        if not self._samples:
            return 0.0
        now = time.monotonic() if now is None else now
        start, base = self._samples[0]
        span = now - start
        return (self._hashes_total - base) / span if span > 0 else 0.0

    def _on_found(self, found: _Found) -> None:
        work = self._works.get(found.work_id)
        if self._current is not None and self._current.work_id == found.work_id:
            self._current = None  # the worker idles after a find
        if work is None:
            self.refresh_work()
            return
        block = Block(work.height, work.mined_by, work.messages, found.nonce, work.timestamp, found.hash)
        try:
            check_block(block, work.prev_hash, self.ctx.config.difficulty)
        except InvalidBlock as exc:
            # The worker and the chain rules disagree: a bug, not bad luck. Count it, keep mining.
            self.ctx.metrics.blocks_rejected.labels(source="miner").inc()
            self.log.error("worker %d found an invalid block (%s): nonce %r", self.index, exc.reason, found.nonce)
            self.refresh_work()
            return
        accepted = self._ask_chain(lambda chain: chain.add_mined_block(block))
        if accepted:
            self._blocks_found += 1
            # ChainKeeper logs the stored block (once, for every source); this is detail.
            self.log.debug("found block %d %s (nonce %s)", block.height, block.hash[:16], block.nonce)
            self._new_work(block.height + 1, block.hash)
        else:
            self.log.debug("block %d was stale or refused", block.height)
            self.refresh_work()

    # ---------------------------------------------------------- work

    def _new_work(self, height: int, prev_hash: str | None) -> None:
        if self._worker is None or not self._worker.ready:
            return  # no worker to search yet (a Ray worker being placed, a cluster away)
        words = self._ask_chain(lambda chain: chain.pending_words(4 * MAX_MESSAGES))
        mined_by = self.ctx.config.name
        messages = usable_words(words or [], self.default_message, mined_by, height)
        timestamp = int(time.time())
        self._work_id += 1
        work = WorkUnit(self._work_id, height, prev_hash, mined_by, messages, timestamp)
        # "<index>-" is prefix-free across this node's miners (external miners' tags
        # start with "x"), so nonce spaces never overlap; the random part keeps a
        # restarted miner from repeating the nonces it tried before.
        tag = f"{self.index:x}-{secrets.randbits(32):08x}"
        prefix = hash_prefix(prev_hash, mined_by, messages, timestamp)
        if self._current is None:
            self._last_heard = time.monotonic()  # an idle worker starts its stall clock now
        self._send(("work", work.work_id, prefix, self.ctx.config.difficulty, tag))
        self._works[work.work_id] = work
        while len(self._works) > KEPT_WORK:
            del self._works[min(self._works)]
        self._current = work

    def _send(self, message: tuple[Any, ...]) -> None:
        worker = self._worker
        if worker is None or worker.to_worker is None:
            raise WorkerDied("no worker pipe")
        if not worker.send(message):
            # The worker is gone. Its death is handled where its exit code is known (the
            # reader's EOF, check_worker), which also tells a start-up signal from a crash.
            self.log.debug("worker pid %s: pipe broken", worker.child_pid)

    def _ask_chain(self, call: Callable[[ChainProxy], "pykka.Future[T]"]) -> T | None:
        """Ask ChainKeeper; None while it is down or slow (we carry on with what we have)."""
        return self.ask(self.ctx.registry.chain(), call, timeout=ASK_TIMEOUT)


def _read_reports(conn: Connection, ref: pykka.ActorRef[Any], worker: WorkerBackend, stopping: threading.Event) -> None:
    """Reader thread: forward the worker's reports to the actor; report EOF as a death."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        try:
            kind = message[0]
            if kind == "hashes":
                ref.tell(_Hashes(worker, int(message[1])))
            elif kind == "found":
                ref.tell(_Found(worker, int(message[1]), str(message[2]), str(message[3])))
            elif kind == "kernel":
                ref.tell(_Kernel(worker, str(message[1])))
            elif kind in ("exhausted", "bad_work"):
                ref.tell(_WorkerIdle(worker, int(message[1]), kind if kind == "exhausted" else str(message[2])))
            elif kind in ("ray_started", "ray_pending", "ray_unavailable", "ray_died"):
                ref.tell(_RayEvent(worker, kind, tuple(message[1:])))
        except pykka.ActorDeadError:
            return
    if not stopping.is_set():
        try:
            ref.tell(_WorkerExited(worker))
        except pykka.ActorDeadError:
            pass
