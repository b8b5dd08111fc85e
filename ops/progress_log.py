"""The periodic mining line in the node's log: total hash rate, expected time per block, blocks found.

Without it a node at difficulty 8 is silent for the ~10 minutes a block takes and
an operator can't tell a working miner from a stuck one. A daemon thread reads
the same /health snapshot as the dashboard (every ask bounded by a short
deadline) and logs one line per interval while the node has any miner.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from ops.formatting import fmt_rate
from runtime.threads import ThreadKeeper, checkpoint
from ops.overview import expected_block_seconds, fmt_duration, hashrate_breakdown
from ops.view import NodeView

log = logging.getLogger("node.mining")

FIRST_REPORT_SECONDS = 15.0
REPORT_SECONDS = 60.0


def mining_line(breakdown: dict[str, float], difficulty: int, blocks_found: int, chain_height: int | None) -> str:
    """One line: 'mining: 6.21 MH/s total (...); a block every ~11m 31s at difficulty 8; ...'."""
    parts = [f"{fmt_rate(breakdown['local'])} on {breakdown['local_workers']} local worker(s)"]
    if breakdown["ray_workers"]:
        parts.append(f"{fmt_rate(breakdown['ray'])} on {breakdown['ray_workers']} Ray worker(s)")
    if breakdown["external"] or breakdown["external_clients"]:
        parts.append(f"{fmt_rate(breakdown['external'])} from {breakdown['external_clients']} external miner(s)")
    expected = expected_block_seconds(breakdown["total"], difficulty)
    when = f"a block expected every ~{fmt_duration(expected)}" if expected else "no hashes yet"
    height = f"; chain {chain_height} blocks" if chain_height is not None else ""
    return (f"mining: {fmt_rate(breakdown['total'])} total ({', '.join(parts)}); {when} at difficulty {difficulty}; "
            f"{blocks_found} block(s) found since start{height}")


class MiningReporter:
    """Logs `mining_line` every `interval` seconds until `stop()`."""

    def __init__(self, node: NodeView, interval: float = REPORT_SECONDS, first: float = FIRST_REPORT_SECONDS,
                 blocks_found: Callable[[], int] | None = None) -> None:
        from ops.snapshot import NodeInspector

        self.node = node
        self.interval = interval
        self.first = first
        self.inspector = NodeInspector(node)
        self._blocks_found = blocks_found or (
            lambda: int(node.metrics.registry.get_sample_value("node_blocks_mined_total") or 0))
        self._stop = threading.Event()
        # Kept running: a report loop that dies is logged and restarted (runtime/threads.py).
        self._keeper = ThreadKeeper("ops", "mining-report", self._run, logger=log)

    def start(self) -> "MiningReporter":
        self._keeper.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._keeper.stop(timeout=2)

    def report(self) -> str:
        """Take a snapshot and log the line (also returned, for tests)."""
        health = self.inspector.health(with_peers=False, with_consensus=False)
        line = mining_line(hashrate_breakdown(health), self.node.config.difficulty, self._blocks_found(),
                           (health.get("chain") or {}).get("height"))
        log.info("%s", line)
        return line

    def _run(self) -> None:
        wait = self.first
        while not self._stop.wait(wait):
            checkpoint()
            wait = self.interval
            try:
                self.report()
            except Exception as exc:  # noqa: BLE001 - a log line must never take the node down
                log.debug("mining report failed: %s", exc)
