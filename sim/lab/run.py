"""One lab run: start the relay and the nodes, play the schedule, read the nodes, stop everything.

`Lab(config).run()` does it all; the phases (`start`, `play`, `settle`, `collect`,
`stop`, `report`) are separate so a test can look at the nodes itself between
the last reading and the stop.
"""
from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from sim.lab import analysis, observe
from sim.lab.difficulty import choose, retune
from sim.lab.logs import read_log
from sim.lab.model import region_names, rtt_matrix, split_regions
from sim.lab.processes import LabNode, MinerCgroup, RelayProcess
from sim.lab.relay import BUCKET_KEYS, LATE_BUCKETS_MS, udp_sockets
from sim.lab.schedule import Event, build_schedule, place_nodes

log = logging.getLogger("sim.lab")

START_TIMEOUT_S = 120.0  # one node, from spawn to its /health answering
STARTING_AT_ONCE = 3  # nodes starting at the same time (imports are CPU-heavy on 2 cores)
SETTLE_S = 30.0  # at the end: how long to wait for the nodes to agree before the last reading
STOP_TIMEOUT_S = 20.0
PEERS_WANTED = 8
PEERS_WITHIN_S = 60.0
# A restart or join not back at the network's height is a miss if its life lasted this long (the p50
# goal); one killed again sooner, still catching up, is reported apart (it says nothing of the node).
CATCHUP_JUDGED_S = 10.0
# A run is valid when its relay added under VALID_LATE_MS to at least 1 - VALID_LATE_SHARE of the
# datagrams it forwarded (counted from the kernel's arrival time at the relay's socket) and the
# kernel dropped at most VALID_DROP_SHARE of the datagrams that reached the relay's sockets.
VALID_LATE_MS = 100
VALID_LATE_SHARE = 0.01
VALID_DROP_SHARE = 0.001
VALID_RULE = (f"late_over_{VALID_LATE_MS}ms_share < {VALID_LATE_SHARE} and kernel_drop_share < {VALID_DROP_SHARE} "
              "(lateness from the kernel's arrival time at the relay's socket plus the link model's delay; "
              "drop share = kernel drops at the relay's sockets / (datagrams the relay read + those drops))")


@dataclass
class LabConfig:
    out: Path
    nodes: int = 100
    miners: int = 10
    minutes: float = 3.0
    block_interval: float = 10.0
    regions: int = 5
    loss: float = 0.01
    jitter: float = 0.1
    uplink_mbit: float = 10.0
    partitions: list[tuple[float, float]] = field(default_factory=lambda: [(60.0, 60.0)])
    churn: float = 10.0
    joins: float = 2.0
    down_s: float = 5.0
    seed: int = 1
    sample_period: float | None = None  # default: grows with the node count
    difficulty: int | None = None  # default: chosen for the block interval
    miner_cores: float | None = None


def _free_port_pair(host: str, rng: random.Random) -> int:
    """A port p with UDP p and TCP p+1 free on `host`."""
    for _ in range(200):
        port = rng.randrange(20000, 60000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                udp.bind((host, port))
                tcp.bind((host, port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


class Lab:
    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.out = Path(config.out)
        if (self.out / "nodes").exists():  # old data dirs would start the nodes on an old chain
            raise FileExistsError(f"{self.out} holds an earlier run: give a new --out")
        self.out.mkdir(parents=True, exist_ok=True)
        # Loopback addresses of this run: nodes bind 127.B.x.y, the relay answers for them on 127.B+1.x.y.
        # Not from the seed: two runs at once (a test and a manual run) must not pick the same addresses.
        places = random.Random(os.getpid() ^ time.time_ns())
        self.base = places.randrange(20, 240, 2)
        self.port = _free_port_pair(self._ip(self.base, 0), places)
        self.nodes: list[LabNode] = []
        self.samples: list[dict[str, Any]] = []
        self.cuts: list[analysis.Cut] = []
        self.restarts: list[tuple[str, float]] = []
        self.joined: list[tuple[str, float]] = []
        self.events_done: list[dict[str, Any]] = []
        self.t0 = 0.0
        self.started_wall = time.time()
        self.relay: RelayProcess | None = None
        self.cgroup: MinerCgroup | None = None
        self.difficulty = 0
        self.miner_cores = 0.0
        self.hash_rate = 0.0
        self.rate_history: list[tuple[float, float]] = []
        self.collected: dict[str, Any] = {}
        self._stop_sampling = threading.Event()
        self._stopping = False  # set by stop(): exits from then on are ours, not the nodes'
        self.udp_drops_at_start: int | None = None
        self.node_socket_drops: dict[int, int] = {}  # a node socket's inode -> the kernel's drops at it, last read
        self._sampler: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sample_period = config.sample_period or max(2.0, config.nodes / 20.0)

    @staticmethod
    def _ip(base: int, index: int) -> str:
        return f"127.{base}.{index // 250}.{index % 250 + 1}"

    # ------------------------------------------------------------------ plan and start

    def _new_node(self, index: int, region: int, miner: bool, peer: LabNode | None) -> LabNode:
        name = f"n{index:03d}"
        return LabNode(index=index, name=name, region=region, miner=miner, bind_ip=self._ip(self.base, index),
                       relay_ip=self._ip(self.base + 1, index), port=self.port, http_port=self.port + 1,
                       directory=self.out / "nodes" / name, peer=peer.udp if peer else None, difficulty=self.difficulty)

    def _choose_difficulty(self) -> None:
        cfg = self.config
        if cfg.difficulty is not None:
            self.difficulty, self.miner_cores = cfg.difficulty, cfg.miner_cores or 0.3
            return
        from mining.kernel import measure_rate, select_kernel

        self.hash_rate = measure_rate(select_kernel(), 0.3)
        self.difficulty, self.miner_cores = choose(cfg.block_interval, self.hash_rate)
        if cfg.miner_cores:
            self.miner_cores = cfg.miner_cores

    def write_nodes_json(self) -> None:
        path = self.out / "nodes.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([n.describe() for n in self.nodes], indent=1))
        os.replace(tmp, path)

    def start(self) -> None:
        cfg = self.config
        self._choose_difficulty()
        self.udp_drops_at_start = observe.udp_receive_drops()
        self.cgroup = MinerCgroup(f"powlab-{os.getpid()}-{self.base}", 0.0)
        if not self.cgroup.available:
            log.warning("no cpu cgroup: the miners' CPU is not capped, blocks will come faster than %.0fs", cfg.block_interval)
        regions, miners = place_nodes(cfg.nodes, cfg.regions, cfg.miners)
        # Miners first: they are the network's long-lived backbone (and each new node's
        # peer tables fill from those already up); they mine at the cgroup's minimum until
        # every node is up, so the run starts on a short chain.
        order = miners + [i for i in range(cfg.nodes) if i not in miners]
        for i in range(cfg.nodes):
            self.nodes.append(self._new_node(i, regions[i], i in miners, None))
        started: list[LabNode] = []
        for i in order:  # each joins through one random node already up
            if started:
                self.nodes[i].peer = self.rng.choice(started).udp
            started.append(self.nodes[i])
        self.write_nodes_json()
        self.relay = RelayProcess({"rtt_ms": rtt_matrix(cfg.regions), "loss": cfg.loss, "jitter": cfg.jitter,
                                   "uplink_bps": cfg.uplink_mbit * 1e6, "seed": cfg.seed,
                                   "nodes": [n.relay_entry() for n in self.nodes]}, self.out / "relay.log")
        self._housekeeper = threading.Thread(target=self._housekeep, name="lab-housekeeping", daemon=True)
        self._housekeeper.start()
        starting: list[LabNode] = []
        for i in order:
            node = self.nodes[i]
            node.spawn()
            starting.append(node)
            while len(starting) >= STARTING_AT_ONCE:
                starting = [n for n in starting if not self._is_up(n)]
                time.sleep(0.2)
        for node in starting:
            self._is_up(node, wait=START_TIMEOUT_S)
        self.cgroup.set_quota(self.miner_cores)
        self.t0 = time.time()
        self._sampler = threading.Thread(target=self._sample_loop, name="lab-sampler", daemon=True)
        self._sampler.start()
        log.info("%d nodes up in %.0fs (difficulty %d, miners capped at %.3f cores)", len(self.nodes),
                 self.t0 - self.started_wall, self.difficulty, self.miner_cores)

    def _is_up(self, node: LabNode, wait: float = 0.0) -> bool:
        deadline = time.monotonic() + wait
        while True:
            if not node.running:
                return True  # it exited: not starting any more (the housekeeper records the exit)
            if observe.health(node.bind_ip, node.http_port, timeout=2.0) is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.3)

    # ------------------------------------------------------------------ background: exits, miner cgroup, samples

    def _housekeep(self) -> None:
        while not self._stop_sampling.is_set():
            with self._lock:
                nodes = list(self.nodes)
            for node in nodes:
                if node.popen is not None and node.exit is None and not node.killed and node.popen.poll() is not None:
                    if not self._stopping:
                        node.exit = {"name": node.name, "code": node.popen.returncode, "at_s": round(time.time() - (self.t0 or self.started_wall), 1),
                                     "stderr_tail": _tail(node.directory / "stderr.log")}
                        node.lives[-1][1] = time.time()
                        log.warning("node %s exited on its own (code %s)", node.name, node.popen.returncode)
            if self.cgroup is not None:
                self.cgroup.adopt_workers(nodes)
            self._stop_sampling.wait(0.1)

    def sweep(self) -> dict[str, Any]:
        """One /health reading of every running node."""
        with self._lock:
            nodes = [n for n in self.nodes if n.running]
        started = time.time()

        def read(node: LabNode) -> tuple[str, dict[str, Any] | None]:
            doc = observe.health(node.bind_ip, node.http_port)
            if doc is None:
                return node.name, None
            record = observe.health_record(doc)
            record["t"] = time.time()
            record["spawned"] = node.lives[-1][0] if node.lives else None
            return node.name, record

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(read, nodes))
        return {"t": started, "nodes": {name: record for name, record in results if record is not None}}

    def _retune(self, sample: dict[str, Any]) -> None:
        """Keep the block interval on target: scale the miners' CPU quota by the hash rate the miners report."""
        if self.cgroup is None or not self.cgroup.available or self.config.difficulty is not None:
            return
        miners = [n.name for n in self.nodes if n.miner and n.running]
        if not miners or any(name not in sample["nodes"] for name in miners):
            return  # a miner that did not answer would read as a slow network
        measured = sum(sample["nodes"][name].get("hashrate") or 0.0 for name in miners)
        if measured <= 0:
            return
        self.rate_history.append((sample["t"], measured))
        self.miner_cores = retune(self.miner_cores, measured, 16**self.difficulty / self.config.block_interval)
        self.cgroup.set_quota(self.miner_cores)

    def _read_node_socket_drops(self) -> None:
        """Note the kernel's drops at every node socket now open (nodes' bound addresses), by socket.

        Read at every sample and at the end, so a node killed between two readings keeps
        what its old socket had counted up to the last one.
        """
        with self._lock:
            bound = {(n.bind_ip, n.port) for n in self.nodes}
        for address, inode, drops in udp_sockets():
            if address in bound:
                self.node_socket_drops[inode] = drops

    def _sample_loop(self) -> None:
        while not self._stop_sampling.is_set():
            began = time.monotonic()
            sample = self.sweep()
            with self._lock:
                self.samples.append(sample)
            self._retune(sample)
            self._read_node_socket_drops()
            self._stop_sampling.wait(max(0.0, self.sample_period - (time.monotonic() - began)))

    # ------------------------------------------------------------------ the schedule

    def schedule(self) -> list[Event]:
        cfg = self.config
        groups = split_regions(cfg.regions, self.rng) if cfg.partitions and cfg.regions >= 2 else []
        return build_schedule(cfg.minutes * 60.0, cfg.partitions if groups else [], groups, cfg.churn, cfg.joins,
                              cfg.down_s, self.rng)

    def play(self) -> None:
        cfg = self.config
        pending: list[tuple[float, str, LabNode | None, Event | None]] = [(self.t0 + e.at, e.kind, None, e) for e in self.schedule()]
        end = self.t0 + cfg.minutes * 60.0
        open_cut: analysis.Cut | None = None
        while True:
            pending.sort(key=lambda p: p[0])
            now = time.time()
            if pending and pending[0][0] <= now:
                at, kind, node, event = pending.pop(0)
                if kind == "partition" and event is not None and self.relay is not None:
                    self.relay.send(cmd="partition", groups=[list(g) for g in event.groups])
                    open_cut = analysis.Cut(time.time(), end, event.groups)
                    self._done("partition", groups=[list(g) for g in event.groups])
                elif kind == "heal" and self.relay is not None:
                    self.relay.send(cmd="heal")
                    if open_cut is not None:
                        self.cuts.append(analysis.Cut(open_cut.start, time.time(), open_cut.groups))
                        open_cut = None
                    self._done("heal")
                elif kind == "kill" and event is not None:
                    victim = self._pick_victim()
                    if victim is not None:
                        victim.sigkill()
                        self._done("kill", node=victim.name)
                        pending.append((time.time() + event.down_s, "restart", victim, None))
                elif kind == "restart" and node is not None:
                    node.spawn()
                    self.restarts.append((node.name, node.lives[-1][0]))  # type: ignore[arg-type]
                    self._done("restart", node=node.name)
                elif kind == "join":
                    self._join()
                continue
            if now >= end and not any(p[1] == "restart" for p in pending):
                break
            wake = min([end] + [p[0] for p in pending])
            time.sleep(min(0.2, max(0.0, wake - now)))
        if open_cut is not None:
            self.cuts.append(analysis.Cut(open_cut.start, time.time(), open_cut.groups))

    def _done(self, kind: str, **details: Any) -> None:
        self.events_done.append({"at_s": round(time.time() - self.t0, 2), "kind": kind, **details})
        log.info("t+%.0fs %s %s", time.time() - self.t0, kind, details or "")

    def _pick_victim(self) -> LabNode | None:
        candidates = [n for n in self.nodes if n.running and not n.miner]
        return self.rng.choice(candidates) if candidates else None

    def _join(self) -> None:
        peers = [n for n in self.nodes if n.running]
        if not peers or self.relay is None:
            return
        node = self._new_node(len(self.nodes), self.rng.randrange(self.config.regions), False, self.rng.choice(peers))
        self.relay.send(cmd="add", node=node.relay_entry())
        with self._lock:
            self.nodes.append(node)
        node.spawn()
        self.joined.append((node.name, node.lives[-1][0]))  # type: ignore[arg-type]
        self.write_nodes_json()
        self._done("join", node=node.name, peer=node.peer)

    # ------------------------------------------------------------------ the end

    def settle(self) -> dict[str, Any]:
        """Sweeps until every running node is on one tip (at most SETTLE_S); the last sweep."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            sweep = self.sweep()
            with self._lock:
                self.samples.append(sweep)
            tips = {(r["height"], r["hash"]) for r in sweep["nodes"].values()}
            if len(tips) <= 1 or time.monotonic() >= deadline:
                return sweep
            time.sleep(1.0)

    def collect(self) -> dict[str, Any]:
        """The last reading, while every node still runs: tips, the final chain, counters, memory and CPU."""
        final = self.settle()
        self._stop_sampling.set()
        if self._sampler is not None:
            self._sampler.join(30)
        tips: dict[tuple[int, str | None], int] = {}
        for record in final["nodes"].values():
            key = (record["height"], record["hash"])
            tips[key] = tips.get(key, 0) + 1
        chain: list[str] = []
        if tips:  # the final chain: the longest reported, the most held among equals (the nodes' own rule)
            (height, top), _ = max(tips.items(), key=lambda kv: (kv[0][0] or 0, kv[1]))
            for node in self.nodes:
                record = final["nodes"].get(node.name)
                if record and (record["height"], record["hash"]) == (height, top):
                    chain = observe.chain_hashes(node.bind_ip, node.http_port, height or 0) or []
                    if chain:
                        break
        counts, rss, cpu = {}, {}, {}
        now = time.time()
        for node in self.nodes:
            if not node.running or node.popen is None:
                continue
            counts[node.name] = observe.datagram_counts(node.bind_ip, node.http_port)
            try:
                proc = psutil.Process(node.popen.pid)
                with proc.oneshot():
                    rss[node.name] = proc.memory_info().rss
                    times = proc.cpu_times()
                    cpu[node.name] = 100.0 * (times.user + times.system) / max(1e-3, now - proc.create_time())
            except psutil.Error:
                pass
        relay = self.relay.stats() if self.relay is not None else {}
        drops = observe.udp_receive_drops()
        self._read_node_socket_drops()
        self.collected = {"final": final, "tips": tips, "chain": chain, "counts": counts, "rss": rss, "cpu": cpu,
                          "relay": relay, "at": now,
                          "udp_drops": None if drops is None or self.udp_drops_at_start is None else drops - self.udp_drops_at_start,
                          "node_socket_drops": sum(self.node_socket_drops.values())}
        return self.collected

    def stop(self) -> None:
        """Stop every process the lab started: nodes (SIGTERM, then SIGKILL), the relay, the cgroup."""
        self._stopping = True
        self._stop_sampling.set()
        for node in self.nodes:
            node.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for node in self.nodes:
            node.reap(deadline)
        if self.relay is not None:
            self.relay.stop()
        if self.cgroup is not None:
            self.cgroup.remove()

    # ------------------------------------------------------------------ the report

    def records(self) -> list[analysis.NodeRecord]:
        final = self.collected.get("final", {"nodes": {}})["nodes"]
        out = []
        for node in self.nodes:
            record = final.get(node.name)
            out.append(analysis.NodeRecord(
                name=node.name, region=node.region, events=read_log(node.directory / "node.log"),
                lives=[(s, e) for s, e in node.lives],  # type: ignore[misc]
                final_tip=(record["height"], record["hash"]) if record else None, miner=node.miner))
        return out

    def report(self) -> dict[str, Any]:
        cfg = self.config
        records = self.records()
        chain: list[str] = self.collected.get("chain", [])
        end = self.collected.get("at", time.time())
        delays, skipped = analysis.propagation_ms(records, chain, self.cuts, since=self.t0)
        stale, mined, stale_count = analysis.stale_rate(records, chain, since=self.t0)
        stale_out, mined_out, stale_out_count = analysis.stale_rate(records, chain, since=self.t0,
                                                                    exclude=[(c.start, c.end) for c in self.cuts])
        heals = [analysis.agreement_after(records, chain, c.end, end, up_since=c.start) for c in self.cuts]
        troubled = [(c.start, c.end + (h if h is not None else end)) for c, h in zip(self.cuts, heals)]
        steady, _ = analysis.propagation_ms(records, chain, self.cuts, since=self.t0, exclude=troubled)
        by_name = {r.name: r for r in records}
        # Each restart or join: (seconds to the network's height or None, how long that life lasted).
        churn = [(analysis.catchup_s(by_name[name], spawned, records, self.cuts, end), by_name[name].life_s(spawned, end))
                 for name, spawned in self.restarts]
        joins = [(analysis.catchup_s(by_name[name], spawned, records, self.cuts, end), by_name[name].life_s(spawned, end))
                 for name, spawned in self.joined]
        final_nodes = self.collected.get("final", {"nodes": {}})["nodes"]
        settled = [r for r in records if r.name in final_nodes and r.lives and end - r.lives[-1][0] >= PEERS_WITHIN_S]
        tried = [final_nodes[r.name]["tried"] for r in settled if final_nodes[r.name].get("tried") is not None]
        wanted = min(PEERS_WANTED, cfg.nodes - 1)
        spawns = {n.name: [life[0] for life in n.lives if life[0] is not None] for n in self.nodes}
        # From each node's own "peer ... joined: N peers" lines: exact, and from its start (the /health
        # sweeps begin only once every node is up, minutes after the first ones started at 100 nodes).
        to_peers = analysis.time_to_peers(records, spawns, wanted)  # type: ignore[arg-type]
        peer_lives = [(to_peers[analysis.life_key(name, spawned)], by_name[name].life_s(spawned, end))
                      for name, lives in spawns.items() for spawned in lives]
        # lives that had the whole 60 s (or got there sooner) are judged; shorter ones that did not are apart
        peers_reached, peers_missed, peers_cut_short = analysis.judged(peer_lives, PEERS_WITHIN_S)
        late = [v for v in peers_reached if v > PEERS_WITHIN_S]
        mined_at = analysis.mined_blocks(records)
        blocks_in_run = sum(1 for h, hx in enumerate(chain) if (m := mined_at.get((h, hx[:16]))) and m[0] >= self.t0)
        relay = self.collected.get("relay", {})
        run_s = max(1.0, end - self.t0)
        relay_bytes = [sum(relay.get(t, {}).get(str(n.index), [0, 0])[1] for t in ("sent", "received")) for n in self.nodes]
        counts = self.collected.get("counts", {})
        datagrams = [sum(c["sent"].values()) + sum(c["received"].values()) for c in counts.values() if c]
        blocks_for_rate = max(1, blocks_in_run)
        rss = [v / 2**20 for v in self.collected.get("rss", {}).values()]
        cpu = list(self.collected.get("cpu", {}).values())
        interval = run_s / blocks_in_run if blocks_in_run else None
        report = {
            "nodes": len(self.nodes),
            "blocks": len(chain),
            "blocks_in_run": blocks_in_run,
            "block_interval_s": None if interval is None else round(interval, 2),
            "propagation_ms": {**analysis.summary(delays), "pairs": len(delays), "left_out": skipped},
            # the same without the blocks mined from a cut to the end of its heal
            "propagation_ms_steady": {**analysis.summary(steady), "pairs": len(steady)},
            "stale_rate": None if stale is None else round(stale, 4),
            "mined": mined,
            "stale": stale_count,
            # the same without the blocks mined while a cut was in place (its smaller side's are stale by force)
            "stale_rate_outside_cuts": None if stale_out is None else round(stale_out, 4),
            "stale_outside_cuts": [stale_out_count, mined_out],
            "partition_heal_s": heals[0] if heals else None,
            "partition_heal_s_each": heals,
            # not_caught_up: lives that lasted CATCHUP_JUDGED_S and never got there; killed_first: the
            # lengths of the lives killed again (or ended by the run) sooner, before they got there
            "churn_catchup_s": _catchup(churn, "restarts"),
            "join_catchup_s": _catchup(joins, "joins"),
            "peers_known": {"min": min(tried) if tried else None, "median": analysis.median(tried),
                            "table": "tried (validated)", "nodes": len(tried)},
            "peers_wanted_within_60s": {"wanted": wanted, "lives": len(to_peers) - len(peers_cut_short),
                                        "late": len(late) + peers_missed, "never": peers_missed,
                                        "killed_first": peers_cut_short, **analysis.summary(peers_reached, (50, "max"))},
            "bytes_per_block_per_node": round(sum(relay_bytes) / len(self.nodes) / blocks_for_rate) if self.nodes else None,
            "bytes_per_node_per_s": round(sum(relay_bytes) / len(self.nodes) / run_s) if self.nodes else None,
            "datagrams_per_block_per_node": round(sum(datagrams) / max(1, len(datagrams)) / blocks_for_rate, 1) if datagrams else None,
            "datagrams_per_node_per_s_by_type": _per_type(counts, run_s),
            "datagrams_total_by_type": _totals_by_type(counts),
            "node_rss_mb": {"median": _round(analysis.median(rss)), "max": _round(max(rss) if rss else None)},
            "node_cpu_percent": {"median": _round(analysis.median(cpu)), "max": _round(max(cpu) if cpu else None)},
            "exits": [n.exit for n in self.nodes if n.exit],
            "final_tips": {f"{h}:{(x or '')[:16]}": c for (h, x), c in sorted(self.collected.get("tips", {}).items(), key=lambda kv: -kv[1])},
            "relay": {"dropped": relay.get("dropped", {}), "unknown_source": relay.get("unknown_source"),
                      "send_errors": relay.get("send_errors"), "late_ms": relay.get("late_ms"),
                      "late_max_ms": relay.get("late_max_ms"), "socket_wait_ms": relay.get("socket_wait_ms"),
                      "socket_wait_max_ms": relay.get("socket_wait_max_ms"), "kernel_drops": relay.get("kernel_drops"),
                      "scheduling": relay.get("scheduling")},
            "difficulty": self.difficulty,
            "miner_cores": round(self.miner_cores, 4),
            "hash_rate_per_core": round(self.hash_rate),
            "network_hash_rate": _round(analysis.median([r for t, r in self.rate_history if t >= self.t0]), 0),
            "target_hash_rate": round(16**self.difficulty / cfg.block_interval),
            "start_s": round(self.t0 - self.started_wall, 1),
            "run_s": round(run_s, 1),
            "wall_time_s": round(time.time() - self.started_wall, 1),
            "events": self.events_done,
            "cuts": [{"start_s": round(c.start - self.t0, 1), "end_s": round(c.end - self.t0, 1), "groups": c.groups} for c in self.cuts],
            "regions": region_names(cfg.regions),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        }
        # The emulated network is only as good as its relay: a relay starved of CPU adds its own delay,
        # and one that reads too slowly loses datagrams in the kernel, at its full sockets.
        report["relay"].update(relay_figures(relay))
        # Datagrams the kernel dropped at full socket buffers during the run, machine-wide (another
        # program's drops count too; neither the relay's nor a node's counters see them), and split
        # by socket: the relay's own, the nodes' (their bound addresses), the rest. The split comes
        # from each socket's drops counter (every cause, in practice a full buffer).
        machine = self.collected.get("udp_drops")
        at_relay, at_nodes = relay.get("kernel_drops"), self.collected.get("node_socket_drops")
        report["kernel_udp_rcvbuf_drops"] = machine
        report["kernel_udp_drops_by_socket"] = {
            "relay_sockets": at_relay, "node_sockets": at_nodes,
            "elsewhere": None if machine is None or at_relay is None or at_nodes is None else max(0, machine - at_relay - at_nodes)}
        report["valid"] = report["relay"]["valid"]
        report["valid_rule"] = VALID_RULE
        report["goals"] = goals(report)
        (self.out / "report.json").write_text(json.dumps(report, indent=1))
        (self.out / "samples.json").write_text(json.dumps(self.samples))
        from sim.lab.plot import plot_report

        plot_report(self.out / "report.png", delays, self.samples, self.cuts, self.t0, report)
        return report

    def run(self) -> dict[str, Any]:
        try:
            self.start()
            self.play()
            self.collect()
        finally:
            self.stop()
        return self.report()


def relay_figures(relay: dict[str, Any]) -> dict[str, Any]:
    """How far to trust a run's network, from the relay's stats: the shares VALID_RULE names and `valid`.

    Unknown kernel drops (no socket table) make a run not valid: nothing then says the relay kept up.
    """
    late = relay.get("late_ms") or {}
    forwarded = sum(late.values())
    over = sum(late.get(k, 0) for k in BUCKET_KEYS[LATE_BUCKETS_MS.index(VALID_LATE_MS) + 1:])  # VALID_LATE_MS and more
    drops = relay.get("kernel_drops")
    read = sum(entry[0] for entry in (relay.get("sent") or {}).values())
    late_share = over / forwarded if forwarded else None
    drop_share = None if drops is None else drops / max(1, read + drops)
    valid = late_share is not None and drop_share is not None and late_share < VALID_LATE_SHARE and drop_share < VALID_DROP_SHARE
    return {f"late_over_{VALID_LATE_MS}ms_share": None if late_share is None else round(late_share, 4),
            "kernel_drop_share": None if drop_share is None else round(drop_share, 5), "valid": valid}


def goals(report: dict[str, Any]) -> dict[str, bool | None]:
    """The network's targets (the 100-node run), each met or not; None where the run has no figure."""
    def below(value: Any, limit: float) -> bool | None:
        return None if value is None else value < limit

    churn = report["churn_catchup_s"]
    peers = report["peers_wanted_within_60s"]
    return {
        "propagation_p99_under_1.5s": below(report["propagation_ms"]["p99"], 1500),
        "stale_rate_under_5%": below(report["stale_rate"], 0.05),
        "one_tip_within_15s_of_heal": None if not report["cuts"] else
        all(h is not None and h < 15 for h in report["partition_heal_s_each"]),
        "churn_back_at_height_p50_under_10s": None if not churn["restarts"] else
        churn["not_caught_up"] == 0 and below(churn["p50"], 10),
        "churn_back_at_height_max_under_30s": None if not churn["restarts"] else
        churn["not_caught_up"] == 0 and below(churn["max"], 30),
        "8_peers_within_60s_of_joining": peers["late"] == 0 if peers["lives"] else None,
        "no_exits": not report["exits"],
        "rss_median_under_60MB": below(report["node_rss_mb"]["median"], 60),
    }


def _catchup(outcomes: list[tuple[float | None, float]], name: str) -> dict[str, Any]:
    """Catch-up figures of restarts or joins: p50/max of those that got to the network's height, and
    which did not: in a life of CATCHUP_JUDGED_S or more (a miss), or in a shorter one (not judged)."""
    reached, missed, cut_short = analysis.judged(outcomes, CATCHUP_JUDGED_S)
    return {**analysis.summary(reached, (50, "max")), name: len(outcomes), "not_caught_up": missed,
            "killed_first": cut_short}


def _totals_by_type(counts: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The nodes' own datagram counters summed over the nodes, by direction and type.

    Counters start at zero at each (re)start: churned nodes count less, so this is
    a slight underestimate.
    """
    out: dict[str, dict[str, float]] = {"sent": {}, "received": {}, "dropped": {}}
    for direction, totals in out.items():
        for c in counts.values():
            for kind, value in (c or {}).get(direction, {}).items():
                totals[kind] = totals.get(kind, 0.0) + value
        out[direction] = dict(sorted(totals.items()))
    return out


def _per_type(counts: dict[str, Any], seconds: float) -> dict[str, dict[str, float]]:
    """The same counters as a mean per node and per second of the run."""
    nodes = sum(1 for c in counts.values() if c)
    return {direction: {k: round(v / nodes / seconds, 2) for k, v in totals.items()}
            for direction, totals in _totals_by_type(counts).items()}


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
