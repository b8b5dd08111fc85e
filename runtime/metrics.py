"""The node's Prometheus metrics, on a registry of its own.

Each node has its own CollectorRegistry (tests run several nodes in one
process). Per-actor series are labelled by role (`actor="ChainKeeper"`), never by
URN or pid, which change at every restart.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector


class NodeMetrics:
    """Counters and gauges every part of the node updates."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.datagrams_in = Counter("node_datagrams_received_total", "Datagrams decoded, by message type", ["type"], registry=r)
        self.datagrams_out = Counter("node_datagrams_sent_total", "Datagrams sent, by message type", ["type"], registry=r)
        self.malformed = Counter("node_malformed_datagrams_total", "Datagrams dropped as malformed, by reason", ["reason"], registry=r)
        self.dropped = Counter("node_datagrams_dropped_total", "Valid datagrams dropped, by reason", ["reason"], registry=r)
        self.actor_messages = Counter("node_actor_messages_total", "Messages handled, per actor", ["actor"], registry=r)
        self.actor_errors = Counter("node_actor_errors_total", "Unhandled errors, per actor", ["actor"], registry=r)
        self.actor_restarts = Counter("node_actor_restarts_total", "Restarts by the supervisor, per actor", ["actor"], registry=r)
        self.actor_up = Gauge("node_actor_up", "1 when the actor is alive and answers pings", ["actor"], registry=r)
        self.chain_height = Gauge("node_chain_height", "Number of blocks in our chain", registry=r)
        self.chain_reorgs = Counter("node_chain_reorgs_total", "Times our chain was replaced above a fork point", registry=r)
        self.blocks_rejected = Counter("node_blocks_rejected_total", "Blocks refused, by where they came from", ["source"], registry=r)
        self.peers = Gauge("node_peers", "Peers in the peer table", registry=r)
        self.miner_hashrate = Gauge("node_miner_hashrate_hashes_per_second", "Hash rate per miner", ["miner"], registry=r)
        self.miner_hashes = Counter("node_miner_hashes_total", "Hashes computed per miner", ["miner"], registry=r)
        self.blocks_mined = Counter("node_blocks_mined_total", "Blocks our miners found and stored", registry=r)
        self.sync_target = Gauge("node_sync_target_height", "Height of the chain being synced (0 when idle)", registry=r)
        self.sync_fetched = Gauge("node_sync_fetched_blocks", "Blocks of the current sync received so far", registry=r)
        self.sync_rounds = Counter("node_consensus_rounds_total", "Consensus rounds run", registry=r)
        self.sync_seconds = Counter("node_sync_seconds_total", "Time spent downloading chains", registry=r)
        # Read at scrape time by the ops HTTP server (ops/snapshot.py), which also
        # gives every per-actor / per-miner series a value before its first event.
        self.actor_queue_depth = Gauge("node_actor_queue_depth", "Messages waiting in the actor's inbox", ["actor"], registry=r)
        self.actor_last_restart = Gauge("node_actor_last_restart_timestamp_seconds", "Wall-clock time of the actor's last restart (0: never)", ["actor"], registry=r)
        self.supervisor_gave_up = Gauge("node_supervisor_gave_up", "1 once the supervisor has given up (restart intensity exceeded)", registry=r)
        self.miner_worker_cpu = Gauge("node_miner_worker_cpu_percent", "CPU use of each miner's worker process (100 = one core)", ["miner"], registry=r)
        self.miner_worker_rss = Gauge("node_miner_worker_resident_memory_bytes", "Resident memory of each miner's worker process", ["miner"], registry=r)
        self.process_cpu_percent = Gauge("node_process_cpu_percent", "CPU use of the node process since the previous reading (100 = one core)", registry=r)
        # The standard process_* series (CPU seconds, RSS, open fds, start time) of this process.
        ProcessCollector(registry=r)
