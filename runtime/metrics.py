"""The node's Prometheus metrics, on a registry of its own.

Each node has its own CollectorRegistry (tests run several nodes in one
process). Per-actor series are labelled by role (`actor="ChainKeeper"`), never by
URN or pid, which change at every restart.
"""
from __future__ import annotations

import threading
from collections import Counter as Tally
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# What the supervisor reports for the per-actor series: one dict per actor with
# `name`, `alive`, `restarts`, `last_restart` (epoch s or None), `queue_depth`
# (or None); one per supervisor with `name`, `state`, `restarts`; and whether the
# whole tree gave up.
SupervisionSource = Callable[[], tuple[list[dict[str, Any]], list[dict[str, Any]], bool]]


class SupervisionCollector(Collector):
    """The per-actor series, read from the supervisor and the message tally at scrape time.

    A custom Collector (not gauges set now and then, nor a metric's private value)
    so /metrics and /health always show the same numbers, and every actor has
    its series from the start.
    """

    def __init__(self, metrics: "NodeMetrics") -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # labels are only known at scrape time; nothing to check up front

    def collect(self) -> Iterator[Metric]:
        source = self._metrics.supervision_source
        actors, supervisors, gave_up = source() if source is not None else ([], [], False)
        messages = CounterMetricFamily("node_actor_messages", "Messages handled, per actor", labels=["actor"])
        up = GaugeMetricFamily("node_actor_up", "1 when the actor is alive and answers pings", labels=["actor"])
        restarts = CounterMetricFamily("node_actor_restarts", "Restarts by the supervisor, per actor", labels=["actor"])
        depth = GaugeMetricFamily("node_actor_queue_depth", "Messages waiting in the actor's inbox", labels=["actor"])
        last = GaugeMetricFamily("node_actor_last_restart_timestamp_seconds",
                                 "Wall-clock time of the actor's last restart (0: never)", labels=["actor"])
        for entry in actors:
            name = [entry["name"]]
            messages.add_metric(name, self._metrics.messages(entry["name"]))
            up.add_metric(name, 1 if entry["alive"] else 0)
            restarts.add_metric(name, entry["restarts"])
            depth.add_metric(name, entry.get("queue_depth") or 0)
            last.add_metric(name, entry.get("last_restart") or 0)
        yield from (messages, up, restarts, depth, last)
        running = GaugeMetricFamily("node_supervisor_running",
                                    "1 while the supervisor runs its children (0: gave up, cooling down, stopped)",
                                    labels=["supervisor"])
        sub_restarts = CounterMetricFamily("node_supervisor_restarts",
                                           "Times a subtree was restarted by its parent after giving up", labels=["supervisor"])
        for sup in supervisors:
            running.add_metric([sup["name"]], 1 if sup["state"] == "running" else 0)
            sub_restarts.add_metric([sup["name"]], sup["restarts"])
        yield from (running, sub_restarts)
        yield GaugeMetricFamily("node_supervisor_gave_up",
                                "1 once the supervisor has given up (restart intensity exceeded)", value=1 if gave_up else 0)


class NodeMetrics:
    """Counters and gauges every part of the node updates."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.datagrams_in = Counter("node_datagrams_received_total", "Datagrams decoded, by message type", ["type"], registry=r)
        self.datagrams_out = Counter("node_datagrams_sent_total", "Datagrams sent, by message type", ["type"], registry=r)
        self.malformed = Counter("node_malformed_datagrams_total", "Datagrams dropped as malformed, by reason", ["reason"], registry=r)
        self.dropped = Counter("node_datagrams_dropped_total", "Valid datagrams dropped, by reason", ["reason"], registry=r)
        self.actor_errors = Counter("node_actor_errors_total", "Unhandled errors, per actor", ["actor"], registry=r)
        self.chain_height = Gauge("node_chain_height", "Number of blocks in our chain", registry=r)
        self.chain_reorgs = Counter("node_chain_reorgs_total", "Times our chain was replaced above a fork point", registry=r)
        self.blocks_rejected = Counter("node_blocks_rejected_total", "Blocks refused, by where they came from", ["source"], registry=r)
        self.peers = Gauge("node_peers", "Peers in the peer table", registry=r)
        self.miner_hashrate = Gauge("node_miner_hashrate_hashes_per_second", "Hash rate per miner", ["miner", "backend"], registry=r)
        self.miner_hashes = Counter("node_miner_hashes_total", "Hashes computed per miner", ["miner", "backend"], registry=r)
        self.blocks_mined = Counter("node_blocks_mined_total", "Blocks our miners found and stored", registry=r)
        self.sync_target = Gauge("node_sync_target_height", "Height of the chain being synced (0 when idle)", registry=r)
        self.sync_fetched = Gauge("node_sync_fetched_blocks", "Blocks of the current sync received so far", registry=r)
        self.sync_rounds = Counter("node_consensus_rounds_total", "Consensus rounds run", registry=r)
        self.sync_seconds = Counter("node_sync_seconds_total", "Time spent downloading chains", registry=r)
        # Read at scrape time by the ops HTTP server (ops/snapshot.py), which also
        # gives every per-miner series a value before its first event.
        self.miner_worker_cpu = Gauge("node_miner_worker_cpu_percent", "CPU use of each miner's worker process (100 = one core)", ["miner", "backend"], registry=r)
        self.miner_worker_rss = Gauge("node_miner_worker_resident_memory_bytes", "Resident memory of each miner's worker process", ["miner", "backend"], registry=r)
        self.thread_transient_errors = Counter("node_thread_transient_errors_total",
                                               "Transient OS errors (EMFILE, ENOBUFS, ...) an owned thread retried, by thread",
                                               ["thread"], registry=r)
        self.process_cpu_percent = Gauge("node_process_cpu_percent", "CPU use of the node process since the previous reading (100 = one core)", registry=r)
        # Per-actor series from the supervisor (installed by it) and our own tally.
        self.supervision_source: SupervisionSource | None = None
        self._tally: Tally[str] = Tally()
        self._tally_lock = threading.Lock()
        r.register(SupervisionCollector(self))
        # The standard process_* series (CPU seconds, RSS, open fds, start time) of this process.
        ProcessCollector(registry=r)

    def count_message(self, actor: str) -> None:
        """One message handled by `actor` (called from the actor's own thread)."""
        with self._tally_lock:
            self._tally[actor] += 1

    def messages(self, actor: str) -> int:
        with self._tally_lock:
            return self._tally[actor]
