"""One node: its context, its supervised actors, and (optionally) its ops HTTP server.

Kept apart from `run_node.py` so tests and the demo can run several nodes in one
process without going through the command line.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from actors.chain_keeper import ChainKeeper
from actors.consensus_runner import ConsensusRunner
from actors.gossip_manager import GossipManager
from actors.network_io import NetworkIO
from chain.datadir import DataDir
from config import NodeConfig
from runtime.context import NodeContext
from runtime.startup import check_http_port, check_udp_port
from supervisor import ChildSpec, Spec, Supervisor, SupervisorPolicy, SupervisorSpec

log = logging.getLogger("node")

# The root's budget covers the core actors (ChainKeeper, NetworkIO, GossipManager):
# more tolerant than OTP's 1 in 5 s because a flood or a flaky disk can cost a few
# restarts, but a crash loop in the core still ends the node within a minute.
NODE_POLICY = SupervisorPolicy(max_restarts=10, period=60.0)
# Expendable subtrees give up fast (a crash loop there is a bug or a hostile peer,
# not something a quick restart fixes) and come back after the root's cool-down
# (30 s, doubling per give-up up to 240 s, reset after 300 s of stability).
SYNC_POLICY = SupervisorPolicy(max_restarts=5, period=30.0, backoff_base=0.1, backoff_max=5.0)
MINERS_POLICY = SupervisorPolicy(max_restarts=10, period=60.0, backoff_base=0.2, backoff_max=5.0)


def child_specs(config: NodeConfig, sync_policy: SupervisorPolicy = SYNC_POLICY,
                miners_policy: SupervisorPolicy = MINERS_POLICY) -> list[Spec]:
    """The root's children in start order: storage, network, membership, then the two subtrees."""
    specs: list[Spec] = [
        ChildSpec("ChainKeeper", lambda ctx, name: ChainKeeper.start(ctx, name)),
        ChildSpec("NetworkIO", lambda ctx, name: NetworkIO.start(ctx, name)),
        ChildSpec("GossipManager", lambda ctx, name: GossipManager.start(ctx, name)),
        SupervisorSpec("sync", lambda ctx: [ChildSpec("ConsensusRunner", lambda c, n: ConsensusRunner.start(c, n))],
                       sync_policy),
    ]
    if config.miners != 0 or config.miner_listen > 0:
        specs.append(SupervisorSpec("miners", lambda ctx: miner_specs(ctx.config), miners_policy))
    return specs


RAY_CPUS_TIMEOUT = 60.0  # how long sizing waits for the Ray cluster's first CPU reading


def miner_count(config: NodeConfig) -> int:
    """`--miners`: a number, or `auto` resolved here (mining/pool_size.py): one per core
    with psutil, or with `--ray-address` one per CPU of the Ray cluster (0 while it
    can't be reached: its miners come when it does)."""
    if config.miners == "auto":
        if config.ray_address:
            from mining.pool_size import ray_cluster_cpus

            return ray_cluster_cpus(config.ray_address, timeout=RAY_CPUS_TIMEOUT) or 0
        from mining.pool_size import auto_miner_count

        return auto_miner_count()
    return int(config.miners)


def miner_specs(config: NodeConfig) -> list[ChildSpec]:
    """Miners (one worker each: a local process, or a Ray actor), then the gateway for external miners."""
    specs = [miner_spec(i) for i in range(miner_count(config))]
    if config.miner_listen > 0:
        from actors.miner_gateway import MinerGateway  # imported only when serving external miners

        specs.append(ChildSpec("MinerGateway", lambda ctx, name: MinerGateway.start(ctx, name)))
    return specs


def miner_spec(index: int) -> ChildSpec:
    """MinerActor-<index>, one worker (local process or Ray actor)."""
    from actors.miner import MinerActor  # imported only when mining

    return ChildSpec(f"MinerActor-{index}", lambda ctx, name: MinerActor.start(ctx, name, index=index),
                     shutdown_timeout=10.0)


class RayPoolSizer:
    """`--miners auto --ray-address`: keep one MinerActor per CPU of the Ray cluster.

    Listens to the cluster watcher (mining/ray_cluster.py, a reading every few
    seconds) and adds or removes MinerActors in the `miners` supervisor when the
    cluster's CPU count differs from the pool (nodes joined or left, or a cluster
    that was unreachable at start-up came up). Removal takes the highest indexes.
    """

    def __init__(self, node: "Node") -> None:
        self.node = node
        self._lock = threading.Lock()

    def start(self) -> "RayPoolSizer":
        from mining.pool_size import ray_cluster_watcher

        watcher = ray_cluster_watcher(self.node.config.ray_address or "")
        watcher.add_listener(self.on_reading)
        if watcher.reading is not None:
            self.on_reading(watcher.reading)
        return self

    def stop(self) -> None:
        from mining.pool_size import ray_cluster_watcher

        ray_cluster_watcher(self.node.config.ray_address or "").remove_listener(self.on_reading)

    def on_reading(self, reading: Any) -> None:
        miners = self.node.supervisor.children.get("miners")
        sub = miners.sub if miners is not None else None
        if sub is None or sub.state != "running" or self.node.supervisor.stopped:
            return
        with self._lock:
            names = list(sub.children)  # a copy: the supervisor's loop may change it meanwhile
            have = sorted(int(name.rsplit("-", 1)[1]) for name in names if name.startswith("MinerActor-"))
            want = max(0, int(reading.cpus))
            if len(have) == want:
                return
            log.info("Ray cluster has %d CPUs: %s miners from %d to %d", want,
                     "adding" if want > len(have) else "removing", len(have), want)
            if want > len(have):
                free = (i for i in range(want + len(have)) if i not in have)
                for _ in range(want - len(have)):
                    sub.add_child(miner_spec(next(free)))
            else:
                for index in reversed(have[want:]):
                    sub.remove_child(f"MinerActor-{index}")


class Node:
    """A running node: `start()`, then `wait()` or `stop()`."""

    def __init__(self, config: NodeConfig, policy: SupervisorPolicy | None = None, *,
                 sync_policy: SupervisorPolicy = SYNC_POLICY, miners_policy: SupervisorPolicy = MINERS_POLICY) -> None:
        self.config = config
        self.ctx = NodeContext(config)
        self.supervisor = Supervisor(self.ctx, child_specs(config, sync_policy, miners_policy), policy or NODE_POLICY)
        self.http: Any = None
        self.data_dir: DataDir | None = None
        self.pool_sizer: RayPoolSizer | None = None

    def start(self) -> "Node":
        """Check what would stop the node from working (StartupError), then start it.

        The data dir is locked and checked before any actor runs, and stays locked
        until `stop()`; the UDP port and `--host` are checked by a trial bind.
        """
        self.data_dir = DataDir.open(self.config.data_dir, self.config.difficulty)
        try:
            check_udp_port(self.config.bind_host, self.config.port, self.config.host)
            if self.config.http_port:
                check_http_port(self.config.http_host, self.config.http_port)
            self.supervisor.start()
        except BaseException:
            self._release_data_dir()
            raise
        if self.config.http_port:
            from ops.http_server import OpsHttpServer

            try:
                self.http = OpsHttpServer(self).start()
            except Exception:  # port taken: don't leave the actors (and miner workers) running
                self.supervisor.stop(1)
                self._release_data_dir()
                raise
        if self.config.ray_address and self.config.miners == "auto":
            self.pool_sizer = RayPoolSizer(self).start()
        return self

    def stop(self, exit_code: int = 0) -> None:
        if self.pool_sizer is not None:
            self.pool_sizer.stop()
            self.pool_sizer = None
        if self.http is not None:
            self.http.stop()
            self.http = None
        self.supervisor.stop(exit_code)
        self._release_data_dir()
        if self.config.ray_address:
            from mining.pool_size import stop_ray_cluster_watchers

            stop_ray_cluster_watchers()

    def _release_data_dir(self) -> None:
        if self.data_dir is not None:
            self.data_dir.close()
            self.data_dir = None

    def wait(self, timeout: float | None = None) -> int | None:
        return self.supervisor.wait(timeout)

    def health(self) -> dict[str, Any]:
        return self.supervisor.health()

    @property
    def miner_count(self) -> int:
        """How many MinerActors the `miners` supervisor runs (`--miners auto` resolved)."""
        miners = self.supervisor.children.get("miners")
        if miners is None or miners.sub is None:
            return 0
        return sum(1 for name in miners.sub.children if name.startswith("MinerActor-"))
