"""A node and its ops HTTP server, started together and stopped in the right order.

The node knows nothing of ops (it only offers ops/view.py's protocols), so whoever
runs a node with its HTTP endpoints wires the two: `run_node.py`, the demo and
the test fixtures all do it here, the same way:

* the HTTP port is tried before the node starts, so a taken port is one clear
  line (StartupError) and no actor or miner worker was started for nothing;
* the fault endpoints get the node's `FaultInjector` only with
  `--enable-fault-injection` (otherwise they answer 403);
* a server that still fails to bind stops the node again, so a failed start
  leaves no actors or worker processes behind;
* on the way down the HTTP server stops first, so no request reads a node that is
  going away, then the node.

This module is handed a node; it never imports `node` (ops reads the node only
through the protocols).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ops.http_server import OpsHttpServer
from ops.view import FaultInjector, NodeView
from runtime.startup import check_http_port


class RunnableNode(NodeView, FaultInjector, Protocol):
    """A node not started yet: what `start_node_with_http` needs beside the view."""

    def start(self) -> object:
        ...

    def stop(self, exit_code: int = 0) -> None:
        ...


N = TypeVar("N", bound=RunnableNode)


@dataclass
class ServedNode(Generic[N]):
    """A started node and its ops HTTP server (None with `--http-port 0`)."""

    node: N
    http: OpsHttpServer | None

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the ops HTTP listens (empty when it is off)."""
        return list(self.http.addresses) if self.http is not None else []

    def stop(self, exit_code: int = 0) -> None:
        """Stop the HTTP server, then the node (both may be stopped more than once)."""
        if self.http is not None:
            self.http.stop()
        self.node.stop(exit_code)


def start_node_with_http(node: N) -> ServedNode[N]:
    """Start `node`, then its ops HTTP server when `config.http_port` is not 0 (see the module docstring).

    Raises StartupError (a taken port, ...) or whatever the node's start raises;
    nothing is left running then.
    """
    config = node.config
    if config.http_port:
        check_http_port(config.http_host, config.http_port)
    node.start()
    if not config.http_port:
        return ServedNode(node, None)
    faults: FaultInjector | None = node if config.enable_fault_injection else None
    try:
        http = OpsHttpServer(node, faults).start()
    except BaseException:  # lost the port since the check: don't leave the actors (and miner workers) running
        node.stop(1)
        raise
    return ServedNode(node, http)
