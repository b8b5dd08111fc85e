"""What ops may read from a running node (`NodeView`), and the faults it may inject (`FaultInjector`).

The HTTP endpoints, the dashboard and the progress log depend on these two small
protocols instead of on `node.Node`, so that:

* the node's internals (its supervisor tree, its registry, its context) stay free
  to change without breaking the ops pages, and ops cannot write to the node by
  accident: every member here is a read, or an ask through an actor's proxy;
* `node.py` needs nothing from `ops/` (no import cycle, no lazy import): `Node`
  satisfies both protocols structurally, and `run_node.py` (through
  `ops/runner.py`) wires the two together;
* a test can hand ops a stand-in.

Fault injection is a separate capability on purpose: the wiring gives it to ops
only when the operator asked for it (`--enable-fault-injection`), so holding a
view is never enough to crash anything.
"""
from __future__ import annotations

from typing import Any, Protocol

from config import NodeConfig
from runtime.interfaces import ChainProxy, ConsensusProxy, GossipProxy, NodeActorProxy
from runtime.metrics import NodeMetrics


class NodeView(Protocol):
    """A running node, read-only.

    The actor accessors return a proxy to the actor's *current* instance (the one
    after the latest restart), or None while it is down or restarting: callers ask
    it with a short timeout and show what did not answer, never wait long on it.
    """

    @property
    def config(self) -> NodeConfig:
        """The node's configuration (name, ports, difficulty, flags)."""
        ...

    @property
    def metrics(self) -> NodeMetrics:
        """The node's Prometheus metrics (`.registry` is what `/metrics` serves)."""
        ...

    @property
    def miner_count(self) -> int:
        """How many MinerActors the node runs now (`--miners auto` resolved)."""
        ...

    @property
    def stopped(self) -> bool:
        """True once the node is stopping or stopped (by request, or its supervisor gave up)."""
        ...

    def health_facts(self) -> dict[str, Any]:
        """What /health is judged from (ops/health.py): `actors` (one entry each), `supervision` (the tree), `probes`, `gave_up`."""
        ...

    def chain(self) -> ChainProxy | None:
        """ChainKeeper: tip, blocks, pending words (the explorer's and `/chain`'s reads)."""
        ...

    def gossip(self) -> GossipProxy | None:
        """GossipManager: the peer table."""
        ...

    def consensus(self) -> ConsensusProxy | None:
        """ConsensusRunner: sync status and the heights peers claim."""
        ...

    def actor(self, name: str) -> NodeActorProxy | None:
        """The supervised actor called `name` (as `/health` names it), for its `health_details()`."""
        ...


class FaultInjector(Protocol):
    """Chaos drills on a running node: make one of its parts fail as a real bug would.

    Each method returns what it did (JSON-ready: `actor`/`thread`, `action`, ...)
    once the fault is on its way, and raises, with a message for the operator:

    * `LookupError`: no such actor or thread, or it offers no such fault;
    * `RuntimeError`: it exists but is not running now (restarting, stopped), or refused;
    * `TimeoutError`: it did not answer in time;
    * `NotImplementedError`: the node does not offer this fault (yet).
    """

    def crash(self, actor: str, reason: str = "fault injection") -> dict[str, Any]:
        """Raise `reason` inside `actor` (a MinerActor loses its worker process instead), so its supervisor restarts it."""
        ...

    def stall(self, actor: str, seconds: float) -> dict[str, Any]:
        """Queue a message that keeps `actor` busy for `seconds`, as a slow handler would."""
        ...

    def kill_thread(self, thread: str) -> dict[str, Any]:
        """Raise inside the named thread an actor owns (e.g. `NetworkIO.reader`), which takes its owner down."""
        ...

    def thread_names(self) -> list[str]:
        """The names `kill_thread` takes: every owned thread that runs now."""
        ...
