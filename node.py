"""One node: its context, its supervised actors, and (optionally) its ops HTTP server.

Kept apart from `run_node.py` so tests and the demo can run several nodes in one
process without going through the command line.
"""
from __future__ import annotations

import logging
from typing import Any

from actors.chain_keeper import ChainKeeper
from actors.consensus_runner import ConsensusRunner
from actors.gossip_manager import GossipManager
from actors.network_io import NetworkIO
from chain.datadir import DataDir
from config import NodeConfig
from runtime.context import NodeContext
from runtime.startup import check_udp_port
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
    specs: list[ChildSpec] = []
    count = miner_count(config)
    if count > 0:
        from actors.miner import MinerActor  # imported only when mining

        specs.extend(
            ChildSpec(f"MinerActor-{i}", lambda ctx, name, i=i: MinerActor.start(ctx, name, index=i), shutdown_timeout=10.0)
            for i in range(count)
        )
    if config.miner_listen > 0:
        from actors.miner_gateway import MinerGateway  # imported only when serving external miners

        specs.append(ChildSpec("MinerGateway", lambda ctx, name: MinerGateway.start(ctx, name)))
    return specs


class Node:
    """A running node: `start()`, then `wait()` or `stop()`."""

    def __init__(self, config: NodeConfig, policy: SupervisorPolicy | None = None, *,
                 sync_policy: SupervisorPolicy = SYNC_POLICY, miners_policy: SupervisorPolicy = MINERS_POLICY) -> None:
        self.config = config
        self.ctx = NodeContext(config)
        self.supervisor = Supervisor(self.ctx, child_specs(config, sync_policy, miners_policy), policy or NODE_POLICY)
        self.http: Any = None
        self.data_dir: DataDir | None = None

    def start(self) -> "Node":
        """Check what would stop the node from working (StartupError), then start it.

        The data dir is locked and checked before any actor runs, and stays locked
        until `stop()`; the UDP port and `--host` are checked by a trial bind.
        """
        self.data_dir = DataDir.open(self.config.data_dir, self.config.difficulty)
        try:
            check_udp_port(self.config.bind_host, self.config.port, self.config.host)
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
        return self

    def stop(self, exit_code: int = 0) -> None:
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
