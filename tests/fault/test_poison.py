"""Poison datagrams (issue 11): strings that used to crash ChainKeeper and NetworkIO.

Each one is now refused by the codec (dropped and counted by reason); nothing of it
reaches SQLite, sendto() or peers.json, so neither the node nor a restart of it on
the same data dir restarts an actor.
"""
from __future__ import annotations

import json
import time

from actors.base import NodeActor
from config import NodeConfig
from node import Node
from runtime.context import NodeContext
from runtime.interfaces import ActorInterface
from supervisor import ChildSpec, Supervisor, SupervisorPolicy
from tests.conftest import FAST_POLICY
from tests.helpers import health, UdpClient, metric, node_config, wait_for

BAD_HOSTS = ["\ud800", "127.0.0.1\u0000", "\u0080", "xn--\u00e9", "localhost", "a" * 300]


def poison_datagrams() -> list[bytes]:
    out = [json.dumps({"type": "NEW_WORD", "word": "\ud800"}), json.dumps({"type": "NEW_WORD", "word": "a\u0000"})]
    for i, host in enumerate(BAD_HOSTS):
        out.append(json.dumps({"type": "GOSSIP", "host": host, "port": 9, "id": f"poison-{i}", "name": "x"}))
        out.append(json.dumps({"type": "GOSSIP_REPLY", "host": host, "port": 9, "name": "x"}))
    out.append(json.dumps({"type": "GOSSIP", "host": "127.0.0.1", "port": 9, "id": "\ud800", "name": "x"}))
    out.append(json.dumps({"type": "GOSSIP", "host": "127.0.0.1", "port": 9, "id": "n", "name": "\udfff"}))
    out.append(json.dumps({"type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": 0, "name": "x"}))
    return [d.encode() for d in out]


def restarts(node: Node) -> int:
    return sum(a["restarts"] for a in health(node)["actors"])


def counted(node: Node, reason: str) -> float:
    return metric(node, "node_malformed_datagrams_total", reason=reason)


def test_poison_datagrams_restart_nothing_now_or_after_a_restart(tmp_path):
    config = node_config(tmp_path, gossip_interval=0.3)
    client = UdpClient()
    node = Node(config, FAST_POLICY).start()
    try:
        datagrams = poison_datagrams()
        deadline = time.monotonic() + 3.0
        rounds = 0
        while time.monotonic() < deadline:
            for data in datagrams:
                client.sock.sendto(data, ("127.0.0.1", config.port))
            rounds += 1
            time.sleep(0.05)
        time.sleep(1.0)  # several keep-alives go out to whatever the table holds
        assert client.ask(config.port, {"type": "STATS"}) is not None
        assert restarts(node) == 0
        assert all(a["alive"] for a in health(node)["actors"])
        assert counted(node, "bad_host") >= rounds * len(BAD_HOSTS)
        assert counted(node, "bad_text") >= rounds * 2
        assert counted(node, "bad_word") >= rounds * 2
        assert node.ctx.registry.proxy("ChainKeeper").word_count().get(timeout=5) == 0
    finally:
        node.stop()
    saved = json.loads((config.data_dir / "peers.json").read_text())
    assert all(entry["host"] == "127.0.0.1" for entry in saved)

    again = Node(config, FAST_POLICY).start()
    try:
        time.sleep(1.0)
        wait_for(lambda: client.ask(config.port, {"type": "STATS"}, timeout=0.5), timeout=5)
        assert restarts(again) == 0
    finally:
        again.stop()
        client.close()


def test_a_poisoned_peers_json_is_validated_on_load(tmp_path):
    config = node_config(tmp_path, gossip_interval=0.3)
    config.data_dir.mkdir(parents=True)
    entries = [{"host": h, "port": 9, "name": "x"} for h in BAD_HOSTS]
    entries += [{"host": "127.0.0.1", "port": 0, "name": "x"}, {"host": "127.0.0.1", "port": 9, "name": "\u0000"}, "junk", None]
    entries.append({"host": "127.0.0.1", "port": 9, "name": "fine"})
    (config.data_dir / "peers.json").write_text(json.dumps(entries))
    node = Node(config, FAST_POLICY).start()
    try:
        peers = node.ctx.registry.proxy("GossipManager").peer_table().get(timeout=5)
        assert [(p["host"], p["port"], p["name"]) for p in peers] == [("127.0.0.1", 9, "fine")]
        time.sleep(1.0)  # keep-alives to the restored table
        assert restarts(node) == 0
    finally:
        node.stop()


class PoisonableApi(ActorInterface):
    def slow(self, seconds): ...

    def handle(self, value): ...


class Poisonable(NodeActor, PoisonableApi):
    """Crashes on the value "poison" (test only)."""

    seen: list = []

    def slow(self, seconds):
        time.sleep(seconds)

    def handle(self, value):
        if value == "poison":
            raise RuntimeError("poisoned")
        Poisonable.seen.append(value)


def test_queued_copies_of_the_crashing_call_are_not_handed_to_the_new_instance(tmp_path):
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    policy = SupervisorPolicy(backoff_base=0.01, watch_interval=0.02)
    sup = Supervisor(ctx, [ChildSpec("Poisonable", lambda c, n: Poisonable.start(c, n))], policy)
    sup.start()
    try:
        Poisonable.seen.clear()
        proxy = ctx.registry.proxy("Poisonable")
        proxy.slow.defer(0.2)  # everything below queues up behind this
        for value in ["poison", "a", "poison", "b", "poison"]:
            proxy.handle.defer(value)
        wait_for(lambda: Poisonable.seen == ["a", "b"], timeout=5)
        time.sleep(0.3)
        assert sup.children["Poisonable"].restarts == 1  # the first copy only; the others were not handed over
    finally:
        sup.stop()
