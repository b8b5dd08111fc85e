"""One node: its context, its supervised actors, and (optionally) its ops HTTP server.

Kept apart from `run_node.py` so tests and the demo can run several nodes in one
process without going through the command line.
"""
from __future__ import annotations

import logging
from typing import Any

from actors.chain_keeper import ChainKeeper
from actors.consensus_runner import ConsensusRunner
from chain.datadir import DataDir
from config import NodeConfig
from runtime.context import NodeContext
from actors.gossip_manager import GossipManager
from actors.network_io import NetworkIO
from runtime.startup import check_udp_port
from supervisor import ChildSpec, Supervisor, SupervisorPolicy

log = logging.getLogger("node")


def child_specs(config: NodeConfig) -> list[ChildSpec]:
    """The node's children in start order: storage, network, membership, consensus, miners."""
    specs = [
        ChildSpec("ChainKeeper", lambda ctx, name: ChainKeeper.start(ctx, name)),
        ChildSpec("NetworkIO", lambda ctx, name: NetworkIO.start(ctx, name)),
        ChildSpec("GossipManager", lambda ctx, name: GossipManager.start(ctx, name)),
        ChildSpec("ConsensusRunner", lambda ctx, name: ConsensusRunner.start(ctx, name)),
    ]
    specs.extend(_miner_specs(config))
    return specs


def _miner_specs(config: NodeConfig) -> list[ChildSpec]:
    """Local miners (one worker process each), then the gateway for external miners."""
    specs: list[ChildSpec] = []
    if config.miners > 0:
        from actors.miner import MinerActor  # imported only when mining

        specs.extend(
            ChildSpec(f"MinerActor-{i}", lambda ctx, name, i=i: MinerActor.start(ctx, name, index=i), shutdown_timeout=10.0)
            for i in range(config.miners)
        )
    if config.miner_listen > 0:
        from actors.miner_gateway import MinerGateway  # imported only when serving external miners

        specs.append(ChildSpec("MinerGateway", lambda ctx, name: MinerGateway.start(ctx, name)))
    return specs


class Node:
    """A running node: `start()`, then `wait()` or `stop()`."""

    def __init__(self, config: NodeConfig, policy: SupervisorPolicy | None = None) -> None:
        self.config = config
        self.ctx = NodeContext(config)
        self.supervisor = Supervisor(self.ctx, child_specs(config), policy)
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

    def _release_data_dir(self) -> None:
        if self.data_dir is not None:
            self.data_dir.close()
            self.data_dir = None

    def wait(self, timeout: float | None = None) -> int | None:
        return self.supervisor.wait(timeout)

    def health(self) -> dict[str, Any]:
        return self.supervisor.health()
