"""Reading a running node's state for the ops endpoints, never waiting long on an actor.

Everything the HTTP server shows comes through `NodeInspector`. It asks actors
through the node's view (ops/view.py: it always hands out the *current* instance
after a restart), sends all of one snapshot's asks at once and waits for them against one
shared deadline: a hung or restarting actor costs the endpoint at most
`timeout` seconds, not `timeout` per actor, and it shows up as a field saying so
instead of an error page.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import psutil
import pykka

from chain.block import Block
from ops.health import render_health
from runtime.threads import ThreadKeeper
from ops.view import NodeView

log = logging.getLogger("node.ops")

ASK_TIMEOUT = 0.5
MINER_PREFIX = "MinerActor-"
# Keys a MinerActor's entry always has in /health (None while its worker is unknown),
# so scripts can read them without checking first.
MINER_KEYS = ("pid", "kernel", "hashrate", "cpu_percent", "rss_bytes", "backend")


@dataclass(frozen=True)
class Call:
    """One ask to send: `ask(find(node))`, e.g. `Call(find_chain, lambda chain: chain.tip())`."""

    find: Callable[[NodeView], Any]
    ask: Callable[[Any], "pykka.Future[Any]"]


@dataclass(frozen=True)
class Answer:
    """What came back from one Call: `ok` and a value, or an error in a few words."""

    ok: bool
    value: Any = None
    error: str | None = None


def find_chain(node: NodeView) -> Any:
    """ChainKeeper's proxy (a `Call.find`: a Protocol's own method can't be passed unbound)."""
    return node.chain()


def find_gossip(node: NodeView) -> Any:
    """GossipManager's proxy (a `Call.find`)."""
    return node.gossip()


def find_consensus(node: NodeView) -> Any:
    """ConsensusRunner's proxy (a `Call.find`)."""
    return node.consensus()


class NodeInspector:
    """The ops endpoints' read side of one node (see the module docstring)."""

    def __init__(self, node: NodeView, timeout: float = ASK_TIMEOUT) -> None:
        self.node = node
        self.timeout = timeout
        # Threads the ops side owns (the dashboard's sampler): shown in /health's `threads`.
        self.kept_threads: list[ThreadKeeper] = []
        # One Process object for the server's life: psutil's cpu_percent() measures
        # since the previous call on the same object (the first call says 0.0).
        self._process = psutil.Process(os.getpid())
        self._process_lock = threading.Lock()
        try:
            self._process.cpu_percent(interval=None)
        except psutil.Error:
            pass

    # ---------------------------------------------------------- asking actors

    def ask_many(self, calls: dict[str, Call]) -> dict[str, Answer]:
        """Send every call at once, then collect the answers before one deadline."""
        futures: dict[str, Any] = {}
        answers: dict[str, Answer] = {}
        for key, call in calls.items():
            proxy = call.find(self.node)
            if proxy is None:
                answers[key] = Answer(False, error="not running (restarting or stopped)")
                continue
            try:
                futures[key] = call.ask(proxy)
            except pykka.ActorDeadError:
                answers[key] = Answer(False, error="not running (restarting or stopped)")
        deadline = time.monotonic() + self.timeout
        for key, future in futures.items():
            try:
                value = future.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                answers[key] = Answer(False, error=f"no answer within {self.timeout:g}s")
            except pykka.ActorDeadError:
                answers[key] = Answer(False, error="stopped while asked")
            except Exception as exc:  # noqa: BLE001 - the actor's own error, shown to the operator
                answers[key] = Answer(False, error=f"{type(exc).__name__}: {exc}")
            else:
                answers[key] = Answer(True, value)
        return answers

    def ask(self, call: Call) -> Answer:
        return self.ask_many({"x": call})["x"]

    # ---------------------------------------------------------- process

    def process_stats(self) -> dict[str, Any]:
        """The node process's pid, CPU% since the previous reading, and RSS."""
        with self._process_lock:
            try:
                with self._process.oneshot():
                    cpu = self._process.cpu_percent(interval=None)
                    rss = self._process.memory_info().rss
            except psutil.Error as exc:
                log.debug("psutil failed on our own process: %s", exc)
                return {"pid": self._process.pid, "cpu_percent": None, "rss_bytes": None}
        return {"pid": self._process.pid, "cpu_percent": round(cpu, 1), "rss_bytes": rss}

    # ---------------------------------------------------------- snapshots

    def health(self, *, with_chain: bool = True, with_peers: bool = True, with_consensus: bool = True) -> dict[str, Any]:
        """The /health document (its fields: README, Operations)."""
        facts = self.node.health_facts()
        facts["threads"] = [*(facts.get("threads") or []), *(k.describe() for k in self.kept_threads)]
        supervision = render_health(facts)
        actors: list[dict[str, Any]] = supervision["actors"]
        calls = {f"details:{a['name']}": _details_call(a["name"]) for a in actors}
        if with_chain:
            calls["chain"] = Call(find_chain, lambda chain: chain.tip())
        if with_peers:
            calls["peers"] = Call(find_gossip, lambda gossip: gossip.peer_table())
        if with_consensus:
            calls["consensus"] = Call(find_consensus, lambda consensus: consensus.status())
        answers = self.ask_many(calls)

        for entry in actors:
            if entry["name"].startswith(MINER_PREFIX):
                for key in MINER_KEYS:
                    entry.setdefault(key, None)
            details = answers[f"details:{entry['name']}"]
            if details.ok and isinstance(details.value, dict):
                for key, value in details.value.items():
                    if key not in ("name", "urn", "alive", "restarts", "last_restart", "last_error"):
                        entry[key] = value
            elif entry["alive"]:
                entry["details_error"] = details.error

        status, reason = supervision["status"], supervision["reason"]
        degraded = [f"{a['name']}: {a['degraded']}" for a in actors if a.get("degraded")]
        if degraded and status == "ok":
            status, reason = "degraded", "; ".join(degraded)
        doc: dict[str, Any] = {
            "status": status,
            "reason": reason,
            "node": self._node_info(),
            "actors": actors,
            "supervision": supervision["supervision"],
            "probes": supervision["probes"],
            "threads": supervision["threads"],
        }
        if with_chain:
            chain = answers["chain"]
            if chain.ok:
                height, top = chain.value
                doc["chain"] = {"height": height, "hash": top}
            else:
                doc["chain"] = {"height": None, "hash": None, "error": chain.error}
        if with_peers:
            peers = answers["peers"]
            doc["peers"] = peers.value if peers.ok else None
            if not peers.ok:
                doc["peers_error"] = peers.error
        if with_consensus:
            consensus = answers["consensus"]
            doc["consensus"] = consensus.value if consensus.ok else None
        doc["process"] = self.process_stats()
        return doc

    def blocks(self, start: int, limit: int) -> list[Block]:
        """Blocks [start, start+limit) of our chain; raises LookupError if ChainKeeper can't answer."""
        answer = self.ask(Call(find_chain, lambda chain: chain.get_blocks(start, limit)))
        if not answer.ok:
            raise LookupError(f"ChainKeeper: {answer.error}")
        return list(answer.value)

    def peers(self) -> list[dict[str, Any]]:
        """The peer table; raises LookupError if GossipManager can't answer."""
        answer = self.ask(Call(find_gossip, lambda gossip: gossip.peer_table()))
        if not answer.ok:
            raise LookupError(f"GossipManager: {answer.error}")
        return list(answer.value)

    # ---------------------------------------------------------- metrics

    def actor_names(self) -> list[str]:
        return [entry["name"] for entry in self.node.health_facts()["actors"]]

    def init_metrics(self) -> None:
        """Give every per-miner series a value before anything happens.

        A labelled series only exists once `.labels()` is called; without this a
        dashboard would see no `node_actor_errors_total{actor="ChainKeeper"}` until
        ChainKeeper's first error, and `rate()`/`increase()` would miss it. The
        other per-actor series come from the supervisor at scrape time
        (runtime/metrics.py, SupervisionCollector).
        """
        metrics = self.node.metrics
        for name in self.actor_names():
            metrics.actor_errors.labels(actor=name)
            if name.startswith(MINER_PREFIX):
                miner = name[len(MINER_PREFIX):]
                backend = self._miner_backend()
                for family in (metrics.miner_hashrate, metrics.miner_hashes,
                               metrics.miner_worker_cpu, metrics.miner_worker_rss):
                    family.labels(miner=miner, backend=backend)

    def refresh_metrics(self, health: dict[str, Any]) -> None:
        """Set the gauges that are only true at scrape time from a /health snapshot."""
        metrics = self.node.metrics
        for entry in health["actors"]:
            name = entry["name"]
            if name.startswith(MINER_PREFIX):
                miner = name[len(MINER_PREFIX):]
                backend = entry.get("backend") or self._miner_backend()
                _set_if_number(metrics.miner_hashrate.labels(miner=miner, backend=backend), entry.get("hashrate"))
                _set_if_number(metrics.miner_worker_cpu.labels(miner=miner, backend=backend), entry.get("cpu_percent"))
                _set_if_number(metrics.miner_worker_rss.labels(miner=miner, backend=backend), entry.get("rss_bytes"))
        if health.get("peers") is not None:
            metrics.peers.set(len(health["peers"]))
        _set_if_number(metrics.process_cpu_percent, health["process"].get("cpu_percent"))

    # ---------------------------------------------------------- internals

    def _miner_backend(self) -> str:
        """Where this node's miners hash: `process` (local) or `ray` (--ray-address)."""
        return "ray" if self.node.config.ray_address else "process"

    def _node_info(self) -> dict[str, Any]:
        from version import __version__

        cfg = self.node.config
        return {"name": cfg.name, "version": __version__, "udp": f"{cfg.host}:{cfg.port}", "difficulty": cfg.difficulty,
                "miners": self.node.miner_count, "fault_injection": cfg.enable_fault_injection}


def _details_call(name: str) -> Call:
    """Ask the actor called `name` for its extra /health fields."""
    return Call(lambda node: node.actor(name), lambda actor: actor.health_details())


def _set_if_number(gauge: Any, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        gauge.set(value)
