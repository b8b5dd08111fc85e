"""Membership across a whole network of GossipManagers (injected clock and RNG, an in-memory lossy network).

Each node's membership traffic must stay what the protocol's flood costs (a GOSSIP id only per
keep-alive, greetings are a STATS, keep-alives go straight to a sample, not to every entry), and the
network must still form and hold: every node learns every other one and none is dropped while alive,
and two halves that forgot each other during a partition find each other again without a storm.
"""
from __future__ import annotations

import random
from collections import Counter, deque
from typing import Any

from actors.gossip_manager import KEEPALIVE_SAMPLE, GossipManager
from config import NodeConfig
from messages.wire import Gossip, GossipReply, Stats, StatsReply
from runtime.context import NodeContext

KEEPALIVE = 30.0
STEP = 0.5  # virtual seconds per step


class SimNode(GossipManager):
    """A GossipManager whose sends go into the simulated network and whose timers are virtual."""

    def __init__(self, net: "SimNetwork", *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.net = net
        self.timers: list[tuple[float, Any, tuple[Any, ...]]] = []

    def _send(self, message: Any, addr: Any) -> None:
        self.net.send(self.address, message, addr)

    def after(self, delay: float, method: Any, *args: Any) -> Any:
        self.timers.append((self.clock() + delay, method, args))
        return None

    def keep_alive(self) -> None:
        super().keep_alive()
        self.net.keepalive_ids.add(self._keepalive.id)

    def retry_well_known(self, delay: float) -> None:
        super().retry_well_known(delay)
        if self._keepalive is not None:
            self.net.keepalive_ids.add(self._keepalive.id)

    @property
    def address(self) -> tuple[str, int]:
        return (self.ctx.config.host, self.ctx.config.port)


class SimNetwork:
    """Delivers datagrams at once, losing each with probability `loss`; counts what was sent."""

    def __init__(self, loss: float, rng: random.Random) -> None:
        self.loss, self.rng = loss, rng
        self.now = [0.0]
        self.nodes: dict[tuple[str, int], SimNode] = {}
        self.queue: deque[tuple[tuple[str, int], Any, tuple[str, int]]] = deque()
        self.sent: Counter[str] = Counter()
        self.ids: set[str] = set()  # every GOSSIP id sent
        self.keepalive_ids: set[str] = set()  # the ids of keep-alives (and well-known retries)
        self.sides: dict[tuple[str, int], int] = {}  # while a partition lasts: each address's side
        self.log: list[tuple[float, str]] = []  # (time, type) of every datagram sent
        self.tried_log: dict[float, list[int]] = {}  # at every whole second: each node's tried count

    def add(self, index: int, tmp_path: Any, well_known: list[tuple[str, int]]) -> SimNode:
        host = f"127.0.{index // 200}.{index % 200 + 1}"
        data_dir = tmp_path / f"n{index}"
        ctx = NodeContext(NodeConfig(host=host, port=7000, name=f"n{index}", data_dir=data_dir, peer_timeout=60.0))
        node = SimNode(self, ctx, clock=lambda: self.now[0], rng=random.Random(index))
        node.well_known = list(well_known)
        self.nodes[node.address] = node
        return node

    def send(self, source: tuple[str, int], message: Any, addr: tuple[str, int]) -> None:
        self.sent[type(message).__name__] += 1
        self.log.append((self.now[0], type(message).__name__))
        if isinstance(message, Gossip):
            self.ids.add(message.id)
        self.queue.append((source, message, addr))

    def deliver(self) -> None:
        while self.queue:
            source, message, addr = self.queue.popleft()
            node = self.nodes.get(addr)
            if node is None or self.rng.random() < self.loss:
                continue
            if self.sides and self.sides.get(source) != self.sides.get(addr):
                continue  # cut apart
            if isinstance(message, Gossip):
                node.on_gossip(message, source)
            elif isinstance(message, GossipReply):
                node.on_gossip_reply(message, source)
            elif isinstance(message, Stats):  # what the node's ChainKeeper does
                self.send(addr, StatsReply(0, None), source)
            elif isinstance(message, StatsReply):  # ConsensusRunner tells GossipManager of each
                node.on_stats_answer(source)

    def count(self, kind: str, start: float, end: float) -> int:
        """Datagrams of `kind` sent in [start, end) (virtual seconds)."""
        return sum(1 for t, k in self.log if k == kind and start <= t < end)

    def run_timers(self) -> None:
        for node in self.nodes.values():
            due = [t for t in node.timers if t[0] <= self.now[0]]
            node.timers = [t for t in node.timers if t[0] > self.now[0]]
            for _, method, args in due:
                method(*args)


def run_network(tmp_path: Any, size: int, minutes: float, loss: float,
                cut: tuple[float, float] | None = None) -> tuple[SimNetwork, list[list[int]]]:
    """`size` nodes, each joining through node 0 at a random second of the first minute; keep-alives every
    30 s (at a random phase), expiry every 5 s; `cut` (start, end): the odd nodes cut off from the even
    ones meanwhile. Returns the network and, at every whole second, the tried count of each node that
    joined 60 s or more before."""
    rng = random.Random(11)
    net = SimNetwork(loss, rng)
    seed = net.add(0, tmp_path, [])
    joins = {0: 0.0} | {i: rng.uniform(0.0, 60.0) for i in range(1, size)}
    phase = {i: rng.uniform(0.0, KEEPALIVE) for i in range(size)}
    started: dict[int, SimNode] = {0: seed}
    tried_after_60s: list[list[int]] = []
    steps = int(minutes * 60 / STEP)
    for step in range(steps + 1):
        now = step * STEP
        net.now[0] = now
        if cut is not None:
            net.sides = {node.address: i % 2 for i, node in started.items()} if cut[0] <= now < cut[1] else {}
        for i, at in joins.items():
            if i not in started and at <= now:
                started[i] = net.add(i, tmp_path, [seed.address])
                started[i].keep_alive()  # what on_start does
        for i, node in started.items():
            if now > joins[i] and (now - joins[i] - phase[i]) % KEEPALIVE < STEP <= now - joins[i]:
                node.keep_alive()
            if step % int(5.0 / STEP) == 0:
                node.expire()
        net.run_timers()
        net.deliver()
        if step % int(1.0 / STEP) == 0:
            net.tried_log[now] = [len(node.tried) for node in started.values()]
            tried_after_60s.append([len(node.tried) for i, node in started.items() if now >= joins[i] + 60.0])
    return net, tried_after_60s


def test_a_network_forms_and_holds_with_flood_cost_only(tmp_path):
    size = 60
    net, tried_over_time = run_network(tmp_path, size, minutes=8, loss=0.01)
    # Only keep-alives (and well-known retries) carry fresh ids: a greeting never starts a flood of its own.
    assert net.ids == net.keepalive_ids
    # Every node knows at least 8 validated peers 60 s after it joined, at every second after that.
    assert min(min(counts) for counts in tried_over_time if counts) >= 8
    # ... and, once all have joined, nearly all of the network (no node forgets a living peer for long).
    final = [len(node.tried) for node in net.nodes.values()]
    assert min(final) >= size - 3 and sorted(final)[size // 2] == size - 1
    # The flood's cost, not more: per fresh id one reply from each node it reaches and 3 forwards from each.
    assert net.sent["Gossip"] <= len(net.ids) * (3 * size + 1 + 2 * KEEPALIVE_SAMPLE)
    assert net.sent["GossipReply"] <= len(net.ids) * size


def test_a_keep_alive_goes_straight_to_a_sample_not_to_every_entry(tmp_path):
    net = SimNetwork(0.0, random.Random(1))
    node = net.add(0, tmp_path, [("127.9.0.1", 7000)])
    for i in range(200):
        addr = (f"127.1.{i}.1", 7000)
        node._promote(addr, f"p{i}", 0.0)
        node._heard_of((f"127.2.{i}.1", 7000), f"q{i}", 0.0, probe=False)
    net.sent.clear()
    net.queue.clear()
    node.keep_alive()
    targets = [addr for _, message, addr in net.queue if isinstance(message, Gossip)]
    assert len(targets) == len(set(targets)) == 1 + 2 * KEEPALIVE_SAMPLE
    assert ("127.9.0.1", 7000) in targets  # the well-known peer, always


def test_a_greeting_is_a_stats_and_its_answer_promotes_only_from_that_address_within_the_window(tmp_path):
    """Hearing of 30 new addresses greets each with a STATS, never with our GOSSIP (which would start a flood
    wherever our keep-alive's id was not seen yet); the STATS_REPLY from the greeted address proves it."""
    net = SimNetwork(0.0, random.Random(1))
    node = net.add(0, tmp_path, [])
    node.keep_alive()
    net.queue.clear()
    for i in range(30):  # within the greeting burst
        node.on_gossip(Gossip(f"127.3.{i}.1", 7000, f"their-{i}", f"p{i}"), (f"127.3.{i}.1", 7000))
    greetings = [(message, addr) for _, message, addr in net.queue if not isinstance(message, GossipReply)]
    assert {addr for _, addr in greetings} == {(f"127.3.{i}.1", 7000) for i in range(30)}
    assert all(isinstance(message, Stats) for message, _ in greetings)
    net.now[0] = 2.0
    node.on_stats_answer(("127.3.0.1", 7000))
    assert ("127.3.0.1", 7000) in node.tried
    node.on_stats_answer(("127.3.1.1", 7001))  # another port: not the address we greeted
    node.on_stats_answer(("127.8.0.1", 7000))  # never greeted
    assert ("127.3.1.1", 7000) not in node.tried and ("127.8.0.1", 7000) not in node.peers
    net.now[0] = 2.0 + 10.5
    node.on_stats_answer(("127.3.2.1", 7000))  # too late to be an answer to the greeting
    assert ("127.3.2.1", 7000) in node.new and ("127.3.2.1", 7000) not in node.tried


def test_halves_that_forgot_each_other_in_a_partition_rejoin_at_the_flood_cost(tmp_path):
    """60 nodes; the odd ones cut off from the even ones for 80 s (long enough to forget each other), then healed.

    The heal must not cost more than the steady flood: a greeting with our GOSSIP flooded our keep-alive's id
    over the other half again, one extra flood per node right when the halves meet (about 1.5x the GOSSIPs of
    the same 30 s before the cut). And every node must know nearly all the others again within 60 s."""
    size, cut = 60, (180.0, 260.0)
    net, _ = run_network(tmp_path, size, minutes=(cut[1] + 60.0) / 60, loss=0.01, cut=cut)
    assert min(net.tried_log[cut[0] - 1.0]) >= size - 3  # formed before the cut
    assert max(net.tried_log[cut[1] - 1.0]) <= size // 2  # each half forgot the other
    before, after = net.count("Gossip", cut[0] - 30.0, cut[0]), net.count("Gossip", cut[1], cut[1] + 30.0)
    assert after <= 1.2 * before, (before, after)
    rejoined = net.tried_log[cut[1] + 60.0]
    assert min(rejoined) >= size - 3 and sorted(rejoined)[size // 2] == size - 1


def test_an_answer_to_our_flooded_keep_alive_promotes_only_within_the_window(tmp_path):
    net = SimNetwork(0.0, random.Random(1))
    node = net.add(0, tmp_path, [])
    far = ("127.4.0.1", 7000)  # never sent anything straight: our keep-alive reached it through the flood
    node.keep_alive()
    net.now[0] = 3.0
    node.on_gossip_reply(GossipReply(*far, "far"), far)
    assert far in node.tried
    forged = ("127.4.0.3", 7000)
    node.on_gossip_reply(GossipReply(*forged, "forged"), ("127.4.0.99", 7000))
    assert forged not in node.tried  # not from the host it names
    late = ("127.4.0.2", 7000)
    net.now[0] = 25.0
    node.on_gossip_reply(GossipReply(*late, "late"), late)
    assert late in node.new and late not in node.tried  # not an answer to anything we sent lately
