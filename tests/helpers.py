"""Shared test helpers: free ports, a UDP client, in-process nodes, waiting."""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Callable

from config import NodeConfig
from chain.block import Block

DATA = Path(__file__).parent / "data"


def real_blocks() -> list[Block]:
    """The real main-network blocks (difficulty 8) copied from the shared vectors."""
    doc = json.loads((DATA / "real-main-blocks.json").read_text())
    return [
        Block(b["height"], b["minedBy"], tuple(b["messages"]), b["nonce"], b["timestamp"], b["hash"])
        for b in doc["blocks"]
    ]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


# A client that has not answered anything the node sent (not "validated") gets at
# most 3x its request's bytes back (QUIC's anti-amplification rule, see
# net/ratelimit.py); like a QUIC client's Initial, its requests are padded (extra
# keys are ignored by the protocol) so that any reply fits.
REQUEST_PADDING = 1200


def padded(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` with a `pad` key bringing it to about REQUEST_PADDING bytes."""
    size = len(json.dumps(payload))
    return {**payload, "pad": "-" * max(0, REQUEST_PADDING - size)}


class UdpClient:
    """A test's own UDP socket on loopback. STATS and GET_BLOCK sent with `ask` are padded."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)
        self.address = self.sock.getsockname()

    def send(self, port: int, payload: Any) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.sock.sendto(data, ("127.0.0.1", port))

    def recv(self, timeout: float = 2.0, expect: str | None = None) -> dict[str, Any] | None:
        """The next datagram (of type `expect`, skipping others), or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                return None
            message = json.loads(data)
            if expect is None or message.get("type") == expect:
                return message

    def ask(self, port: int, payload: Any, timeout: float = 2.0) -> dict[str, Any] | None:
        """Send a request (padded) and wait for its reply type (e.g. STATS -> STATS_REPLY)."""
        if isinstance(payload, dict) and payload.get("type") in ("STATS", "GET_BLOCK") and "pad" not in payload:
            payload = padded(payload)
        self.send(port, payload)
        kind = payload.get("type") if isinstance(payload, dict) else None
        return self.recv(timeout, expect=f"{kind}_REPLY" if kind in ("STATS", "GET_BLOCK") else None)

    def close(self) -> None:
        self.sock.close()


def node_config(tmp_path: Path, **overrides: Any) -> NodeConfig:
    port = overrides.pop("port", None) or free_udp_port()
    values: dict[str, Any] = dict(
        host="127.0.0.1", bind_host="127.0.0.1", port=port, name=f"n{port}",
        difficulty=2, miners=0, data_dir=tmp_path / f"node-{port}", http_port=0,
    )
    values.update(overrides)
    return NodeConfig(**values)


def wire_block(block: Block, kind: str = "ANNOUNCE") -> dict[str, Any]:
    return {"type": kind, **block.to_wire()}


def wait_for_chain_height(client: UdpClient, port: int, height: int, timeout: float = 15.0) -> None:
    """Until the node at `port` answers STATS with `height` blocks."""
    wait_for(lambda: (client.ask(port, {"type": "STATS"}, timeout=0.3) or {}).get("height") == height, timeout=timeout)


def chain_tip(node: Any) -> tuple[int, str | None]:
    """`node`'s chain as ChainKeeper holds it now: (number of blocks, top hash)."""
    return node.ctx.registry.chain().tip().get(timeout=5)


def seed_chain(node: Any, blocks: list[Block]) -> None:
    """Give `node` these blocks from height 0, as a finished sync would."""
    assert node.ctx.registry.chain().apply_segment(0, blocks).get(timeout=10)


def metric(node: Any, name: str, **labels: str) -> float:
    """A sample of `node`'s Prometheus registry (public API; 0.0 when it has no value yet).

    `name` is the sample's name as exposed, e.g. `node_chain_reorgs_total`.
    """
    value = node.ctx.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def peer_ports(node: Any, table: str | None = None) -> set[int]:
    """The ports in `node`'s peer table (only those of `table`, "tried" or "new", if given)."""
    entries = node.ctx.registry.gossip().peer_table().get(timeout=5)
    return {e["port"] for e in entries if table is None or e.get("table") == table}


def introduce_and_run_consensus(node: Any, peers: Any) -> None:
    """Make `node` track `peers` (a GOSSIP naming each), then send it CONSENSUS, as a peer would."""
    client = UdpClient()
    try:
        for p in peers:
            client.send(node.config.port, {"type": "GOSSIP", "host": "127.0.0.1", "port": p.address[1],
                                           "id": f"intro-{p.address[1]}", "name": p.name})
        # Tracked = answered the node's greeting (the tried table): consensus asks only those.
        wait_for(lambda: peer_ports(node, "tried") >= {p.address[1] for p in peers})
        client.send(node.config.port, {"type": "CONSENSUS"})
    finally:
        client.close()


def health(node_or_supervisor: Any) -> dict[str, Any]:
    """The /health document of an in-process node (or of a bare supervisor: no probes)."""
    from ops.health import render_health

    facts = node_or_supervisor.health_facts() if hasattr(node_or_supervisor, "health_facts") \
        else node_or_supervisor.snapshot()
    return render_health(facts)
