"""One node: its context and its supervised actors.

Kept apart from `run_node.py` so tests and the demo can run several nodes in one
process without going through the command line. The ops HTTP server is not part
of it: `Node` offers the read-only view and the fault injection that ops needs
(ops/view.py) and the callers wire the two together (ops/runner.py), so this
module imports nothing from `ops/`.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pykka

from actors.chain_keeper import ChainKeeper
from actors.consensus_runner import ConsensusRunner
from actors.gossip_manager import GossipManager
from actors.network_io import NetworkIO
from chain.datadir import DataDir
from config import NodeConfig
from chain.store import DB_FILENAME
from runtime.context import NodeContext
from runtime.probes import HealthProber, ProbeBook
from runtime.interfaces import ChainProxy, ConsensusProxy, GossipProxy, NodeActorProxy
from runtime.metrics import NodeMetrics
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
KILL_WORKER_TIMEOUT = 2.0  # how long a crash drill waits for a MinerActor to kill its worker


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
        self.data_dir: DataDir | None = None
        self.pool_sizer: RayPoolSizer | None = None
        self.probes = ProbeBook()
        self.prober: HealthProber | None = None

    def start(self) -> "Node":
        """Check what would stop the node from working (StartupError), then start it.

        The data dir is locked and checked before any actor runs, and stays locked
        until `stop()`; the UDP port and `--host` are checked by a trial bind.
        """
        self.data_dir = DataDir.open(self.config.data_dir, self.config.difficulty)
        try:
            cfg = self.config  # an address apart from the advertised one came from --bind: errors name that flag
            apart = cfg.bind_host not in (cfg.host, "0.0.0.0", "::", "")
            check_udp_port(cfg.bind_host, cfg.port, cfg.bind_host if apart else cfg.host, "--bind" if apart else "--host")
            self.supervisor.start()
        except BaseException:
            self._release_data_dir()
            raise
        if self.config.ray_address and self.config.miners == "auto":
            self.pool_sizer = RayPoolSizer(self).start()
        if self.config.probe_interval > 0:
            self.prober = self._make_prober().start()
        return self

    def _make_prober(self) -> HealthProber:
        cfg = self.config
        host = "127.0.0.1" if cfg.bind_host in ("0.0.0.0", "") else cfg.bind_host
        gateway = (host, cfg.miner_listen) if cfg.miner_listen > 0 else None  # the gateway binds bind_host too
        return HealthProber(self.probes, udp_address=(host, cfg.port), store_path=Path(cfg.data_dir) / DB_FILENAME,
                            gateway_address=gateway, interval=cfg.probe_interval)

    def stop(self, exit_code: int = 0) -> None:
        if self.prober is not None:
            self.prober.stop()
            self.prober = None
        if self.pool_sizer is not None:
            self.pool_sizer.stop()
            self.pool_sizer = None
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

    def health_facts(self) -> dict[str, Any]:
        """What /health is made of (ops/health.py judges it): the supervision snapshot (each
        actor's state, progress stamps, instances and threads) and the end-to-end probes."""
        facts = self.supervisor.snapshot()
        facts["probes"] = self.probes.report()
        facts["threads"] = [self.prober.keeper.describe()] if self.prober is not None else []
        return facts

    @property
    def miner_count(self) -> int:
        """How many MinerActors the `miners` supervisor runs (`--miners auto` resolved)."""
        miners = self.supervisor.children.get("miners")
        if miners is None or miners.sub is None:
            return 0
        return sum(1 for name in miners.sub.children if name.startswith("MinerActor-"))

    # ------------------------------------------------ what ops reads (ops/view.py: NodeView)

    @property
    def metrics(self) -> NodeMetrics:
        return self.ctx.metrics

    @property
    def stopped(self) -> bool:
        """Stopping or stopped, by request or because the supervisor gave up."""
        return self.supervisor.stopped

    def chain(self) -> ChainProxy | None:
        return self.ctx.registry.chain()

    def gossip(self) -> GossipProxy | None:
        return self.ctx.registry.gossip()

    def consensus(self) -> ConsensusProxy | None:
        return self.ctx.registry.consensus()

    def actor(self, name: str) -> NodeActorProxy | None:
        return self.ctx.registry.actor(name)

    # ------------------------------------------------ fault injection (ops/view.py: FaultInjector)

    def crash(self, actor: str, reason: str = "fault injection") -> dict[str, Any]:
        """Make `actor` fail the way a real bug would; say what was done.

        A MinerActor loses its worker process (SIGKILL), which it notices and fails
        on, as after a real worker crash; every other actor gets `crash(reason)`
        told to it, so the exception is raised inside the actor (a told message,
        not an ask: an ask would hand the exception back instead) and reaches its
        on_failure. Raises LookupError, RuntimeError or TimeoutError as
        FaultInjector says.
        """
        if self.supervisor.child(actor) is None:
            raise LookupError(f"no actor named {actor!r}")
        registry = self.ctx.registry
        ref, proxy = registry.ref(actor), registry.proxy(actor)
        if ref is None or proxy is None:
            raise RuntimeError(f"{actor} is not running (restarting or stopped)")
        if not hasattr(ref.actor_class, "crash"):
            raise LookupError(f"{actor} has no fault injection")
        urn = ref.actor_urn
        if actor.startswith("MinerActor-") and hasattr(ref.actor_class, "kill_worker"):
            try:
                result = proxy.kill_worker().get(timeout=KILL_WORKER_TIMEOUT)
            except pykka.Timeout:
                raise TimeoutError(f"{actor} did not answer kill_worker within {KILL_WORKER_TIMEOUT:g}s") from None
            except Exception as exc:  # noqa: BLE001 - dead meanwhile, or the miner refused
                raise RuntimeError(f"{actor}.kill_worker failed: {type(exc).__name__}: {exc}") from None
            log.warning("fault injection: killed %s's worker process (%s)", actor, result)
            return {"actor": actor, "urn": urn, "action": "worker process killed (SIGKILL)", "result": result}
        try:
            proxy.crash.defer(reason)
        except pykka.ActorDeadError:
            raise RuntimeError(f"{actor} is not running (restarting or stopped)") from None
        log.warning("fault injection: raised an exception inside %s (%s)", actor, urn)
        return {"actor": actor, "urn": urn, "action": "exception raised inside the actor"}

    def stall(self, actor: str, seconds: float) -> dict[str, Any]:
        """Queue a message in `actor`'s inbox that keeps it busy `seconds` when it runs.

        Below the actor's message budget that is "busy"; above it, "hung" (the
        supervisor replaces an expendable actor, and ends the node for one that
        owns shared state). Several stalls queue up like any other work.
        """
        if self.supervisor.child(actor) is None:
            raise LookupError(f"no actor named {actor!r}")
        proxy = self.ctx.registry.actor(actor)
        if proxy is None:
            raise RuntimeError(f"{actor} is not running (restarting or stopped)")
        try:
            proxy.stall.defer(float(seconds))
        except pykka.ActorDeadError:
            raise RuntimeError(f"{actor} is not running (restarting or stopped)") from None
        record = self.ctx.registry.mailbox(actor).current_record()
        budget = record.budget if record is not None else None
        log.warning("fault injection: %s will stall for %gs (its budget is %ss)", actor, seconds, budget)
        return {"actor": actor, "action": f"stall of {seconds:g}s queued", "budget": budget,
                "queue_depth": proxy.actor_ref.actor_inbox.qsize()}

    def kill_thread(self, thread: str) -> dict[str, Any]:
        """Raise an exception inside the owned thread called `thread` (`NetworkIO.reader`).

        The thread dies as with a real bug; its owner must notice (crash, restart).
        """
        if thread == "node.prober" and self.prober is not None and self.prober.thread is not None:
            target = self.prober.thread
        else:
            target = self.supervisor.thread(thread)
        if target is None or not target.is_alive():
            raise LookupError(f"no running thread named {thread!r}")
        target.inject()
        log.warning("fault injection: raising inside thread %s", thread)
        return {"thread": thread, "action": "exception raised inside the thread"}

    def thread_names(self) -> list[str]:
        """Every owned thread that runs now, by the name kill-thread takes."""
        names = [t["name"] for entry in self.supervisor.actor_entries() for t in entry.get("threads") or []
                 if t.get("alive")]
        if self.prober is not None and self.prober.thread is not None and self.prober.thread.is_alive():
            names.append(self.prober.thread.name)
        return names
