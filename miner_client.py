"""`run_node.py miner`: mine for a node on another machine, over its miner gateway.

    python run_node.py miner --connect HOST:PORT --token T [--workers auto|N]

Runs N worker processes with the node's own hash loop (mining/worker.py)
and relays between them and the node's MinerGateway (line-delimited JSON over TCP,
mining/protocol.py; see README "Mining"). The node builds the blocks and
verifies every nonce; this side only searches.

One thread does everything: `multiprocessing.connection.wait` watches the socket
and every worker's report pipe at once, so there is no shared state to lock. A
lost connection idles the workers and reconnects with backoff; a wrong token is
fatal (exit 1: retrying can't fix it); a worker that dies is replaced.
"""
from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import wait
from typing import Any

import click

from mining.kernel import warn_if_not_native
from mining.protocol import LineReader, ProtocolError, decode_line, encode_line
from mining.worker_backends import ProcessWorker
from ops.formatting import fmt_rate

log = logging.getLogger("miner")

HASH_REPORT_INTERVAL = 1.0  # how often the node hears our hash count (also our keep-alive)
LOG_INTERVAL = 10.0
CONNECT_TIMEOUT = 5.0
BACKOFF_MAX = 10.0
REAP_TIMEOUT = 1.0  # how long a worker whose pipe closed gets to finish exiting
EXIT_UNAUTHORIZED = 1


class Unauthorized(Exception):
    """The node refused our token."""


class ExternalMiner:
    """The relay between worker processes and one node's MinerGateway."""

    def __init__(self, host: str, port: int, token: str, workers: int) -> None:
        self.host, self.port, self.token = host, port, token
        self.stop_requested = threading.Event()
        warn_if_not_native(log)
        self.kernels: set[str] = set()  # hash kernels our workers reported (logged once each)
        self.workers = [ProcessWorker(i) for i in range(workers)]
        self.work: dict[str, Any] | None = None
        self.hashes_unreported = 0
        self.hashes_window = 0
        self.accepted = 0

    # ---------------------------------------------------------- top level

    def run(self) -> int:
        """Mine until stopped (exit 0) or refused (exit 1)."""
        backoff = 1.0
        try:
            while not self.stop_requested.is_set():
                try:
                    sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
                except OSError as exc:
                    log.warning("can't connect to %s:%d: %s; retrying in %.0fs", self.host, self.port, exc, backoff)
                else:
                    got_work = False
                    try:
                        got_work = self._session(sock)
                    except Unauthorized:
                        log.error("the node refused our token; giving up")
                        return EXIT_UNAUTHORIZED
                    except OSError as exc:  # reset, timeout: the node or the network went away
                        log.warning("connection to %s:%d lost: %s", self.host, self.port, exc)
                    finally:
                        sock.close()
                        self._idle_workers()
                    if got_work:
                        backoff = 1.0  # a session that worked: reconnect quickly
                    if self.stop_requested.is_set():
                        break
                    log.warning("disconnected from %s:%d; reconnecting in %.0fs", self.host, self.port, backoff)
                self.stop_requested.wait(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)
            return 0
        finally:
            for worker in self.workers:
                worker.stop()

    def _session(self, sock: socket.socket) -> bool:
        """One connection: authenticate, then relay until it ends. True if we got work."""
        sock.settimeout(CONNECT_TIMEOUT)
        sock.sendall(encode_line({"type": "auth", "token": self.token}))
        log.info("connected to %s:%d with %d workers", self.host, self.port, len(self.workers))
        reader = LineReader()
        got_work = False
        last_report = last_log = time.monotonic()
        while not self.stop_requested.is_set():
            ready = wait([sock, *(w.from_worker for w in self.workers if w.from_worker is not None)], timeout=0.2)
            for source in ready:
                if source is sock:
                    data = sock.recv(65536)
                    if not data:
                        return got_work
                    for line in reader.feed(data):
                        got_work |= self._on_line(sock, line)
                else:
                    worker = next((w for w in self.workers if w.from_worker is source), None)
                    if worker is not None:  # None: replaced earlier in this round
                        self._on_report(sock, worker)
            now = time.monotonic()
            if now - last_report >= HASH_REPORT_INTERVAL:
                sock.sendall(encode_line({"type": "hashes", "count": self.hashes_unreported}))
                self.hashes_unreported = 0
                last_report = now
                self._replace_dead_workers()
            if now - last_log >= LOG_INTERVAL:
                # In MH/s (or kH/s), as the node logs its own rate (ops/formatting.py).
                log.info("mining: %s over the last %.0fs on %d worker(s), %d blocks accepted",
                         fmt_rate(self.hashes_window / (now - last_log)), now - last_log, len(self.workers),
                         self.accepted)
                self.hashes_window = 0
                last_log = now
        return got_work

    # ---------------------------------------------------------- node -> us

    def _on_line(self, sock: socket.socket, line: bytes | None) -> bool:
        if line is None:
            log.warning("the node sent an overlong line; ignored")
            return False
        try:
            message = decode_line(line)
        except ProtocolError as exc:
            log.warning("the node sent a bad line: %s", exc)
            return False
        kind = message["type"]
        if kind == "work":
            try:
                self._start_work(message)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("bad work from the node (%s): %r", exc, message)
                return False
            return True
        if kind == "result":
            if message.get("accepted"):
                self.accepted += 1
                log.info("block %s accepted: %s", message.get("height"), message.get("hash"))
            else:
                log.info("nonce for work %s refused: %s", message.get("work_id"), message.get("reason"))
        elif kind == "error":
            if message.get("error") == "unauthorized":
                raise Unauthorized()
            log.warning("the node says: %s", message.get("error"))
        elif kind == "welcome":
            log.info("authenticated as miner %s (difficulty %s)", message.get("miner_id"), message.get("difficulty"))
        return False

    def _start_work(self, message: dict[str, Any]) -> None:
        work_id, prefix = int(message["work_id"]), bytes.fromhex(message["prefix"])
        difficulty, tag = int(message["difficulty"]), str(message["tag"])
        self.work = {"work_id": work_id, "prefix": prefix, "difficulty": difficulty, "tag": tag}
        for worker in self.workers:
            self._give_work(worker)

    def _give_work(self, worker: ProcessWorker) -> None:
        if self.work is None:
            return
        w = self.work
        # "<worker>-" after the node's tag keeps our workers' nonce spaces disjoint.
        worker.send(("work", w["work_id"], w["prefix"], w["difficulty"], f"{w['tag']}{worker.index:x}-"))

    # ---------------------------------------------------------- workers -> us

    def _on_report(self, sock: socket.socket, worker: ProcessWorker) -> None:
        conn = worker.from_worker
        try:
            if conn is None:
                raise EOFError("no report pipe")
            report = conn.recv()
        except (EOFError, OSError):
            self._replace(worker)
            return
        kind = report[0]
        if kind == "hashes":
            self.hashes_unreported += report[1]
            self.hashes_window += report[1]
        elif kind == "found":
            _, work_id, nonce, block_hash = report
            log.info("worker %d found nonce %s for work %d", worker.index, nonce, work_id)
            sock.sendall(encode_line({"type": "submit", "work_id": work_id, "nonce": nonce, "hash": block_hash}))
        elif kind == "kernel":
            if report[1] not in self.kernels:
                self.kernels.add(report[1])
                log.info("workers hash with the %s kernel", report[1])
        elif kind in ("exhausted", "bad_work"):
            log.warning("worker %d idle on work %s: %s", worker.index, report[1], report[2:] or kind)

    def _replace_dead_workers(self) -> None:
        for worker in list(self.workers):
            if not worker.process.is_alive():
                self._replace(worker)

    def _replace(self, worker: ProcessWorker) -> None:
        # Reap first: its report pipe reaches EOF a moment before the process is
        # reaped, and until then the exit code is unknown (None). stop() then
        # ends one that is somehow still running (its code is then stop's doing).
        worker.reap(REAP_TIMEOUT)
        worker.stop()
        log.warning("worker %d (pid %s) died (exit %s); starting a new one", worker.index, worker.process.pid, worker.exitcode)
        fresh = ProcessWorker(worker.index)
        self.workers[self.workers.index(worker)] = fresh
        self._give_work(fresh)

    def _idle_workers(self) -> None:
        self.work = None
        for worker in self.workers:
            worker.send(("idle",))


def _parse_address(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT with a port in 1..65535")
    return host.strip("[]"), int(port)


def _parse_workers(ctx: click.Context, param: click.Parameter, value: str) -> int:
    text = value.strip().lower()
    if text == "auto":
        from mining.pool_size import auto_miner_count

        return auto_miner_count()
    if text.isdigit() and 1 <= int(text) <= 1024:
        return int(text)
    raise click.BadParameter(f"{value!r} is not 'auto' or a number from 1 to 1024")


@click.command("miner", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--connect", "address", required=True, metavar="HOST:PORT", callback=_parse_address,
              help="The node's --miner-listen address.")
@click.option("--token", required=True, envvar="POW_MINER_TOKEN", help="The node's --miner-token (or $POW_MINER_TOKEN).")
@click.option("--workers", default="auto", show_default=True, metavar="auto|N", callback=_parse_workers,
              help="Worker processes ('auto': one per physical core, as --miners auto).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def miner_command(address: tuple[str, int], token: str, workers: int, verbose: bool) -> None:
    """Mine for a node on another machine (its --miner-listen port)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    miner = ExternalMiner(address[0], address[1], token, workers)

    def on_signal(signum: int, frame: Any) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        miner.stop_requested.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sys.exit(miner.run())
