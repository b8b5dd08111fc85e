"""The node's settings, one frozen value built by the CLI (or a test) and read by every actor."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NodeConfig:
    """The node's settings, from the command line (the options are listed in the README, "Run")."""

    @property
    def public_port(self) -> int:
        """The UDP port we tell peers about."""
        return self.advertise_port or self.port

    host: str = "127.0.0.1"  # advertised in GOSSIP
    bind_host: str = "127.0.0.1"  # the UDP socket's address
    port: int = 8999
    peers: tuple[tuple[str, int], ...] = ()
    name: str = "node"
    difficulty: int = 8
    miners: int | str = 0  # a count, or "auto" (resolved by the miners supervisor, node.py)
    data_dir: Path = Path("data")
    http_host: str = "127.0.0.1"
    http_port: int = 0
    enable_fault_injection: bool = False
    miner_listen: int = 0
    miner_token: str | None = None
    # Each authenticated external miner's line budget (actors/miner_gateway.py): lines
    # and bytes per second with their bursts; a client ahead of it is not read (TCP
    # back-pressure) and is dropped after `miner_budget_grace` seconds ahead.
    miner_line_rate: float = 200.0
    miner_line_burst: float = 1000.0
    miner_byte_rate: float = 64 * 1024
    miner_byte_burst: float = 256 * 1024
    miner_budget_grace: float = 10.0
    # The ops HTTP: a request's headers and body must both arrive within this many
    # seconds (ops/serving.py); slow bodies are cut with 408.
    http_request_deadline: float = 10.0
    # Ray cluster for the miner workers ("auto", or the head's "HOST:PORT"); None:
    # local worker processes, and Ray is never imported.
    ray_address: str | None = None
    # Address peers should use for us, when it differs from the bound port (a
    # proxy or NAT in front of the node); None means `port`.
    advertise_port: int | None = None
    # Reply budgets (see net/ratelimit.py), keyed by destination IP and charged real
    # bytes: until an IP is validated at most `amplification_factor` times what it
    # sent us; bytes/s and burst per IP, for all destinations together, and for
    # GOSSIP_REPLYs per claimed originator IP.
    amplification_factor: float = 3.0
    reply_rate_bytes: float = 2_000_000
    reply_burst_bytes: float = 1_000_000
    total_reply_rate_bytes: float = 32_000_000
    gossip_reply_rate_bytes: float = 1_000
    gossip_reply_burst_bytes: float = 4_000
    # Timers, overridable so tests run in seconds rather than minutes.
    gossip_interval: float = 30.0
    peer_timeout: float = 60.0
    consensus_interval: float = 120.0
    # Per-actor message budgets in seconds, overriding the actor's declared one
    # (actors/base.py `message_budget`): `(("ChainKeeper", 2.0),)`. Tests use it to
    # make a hang show in seconds; operators have no flag for it.
    message_budgets: tuple[tuple[str, float], ...] = ()
    # How often the node proves its parts work end to end (runtime/probes.py); 0
    # turns the probes off (a test that counts every byte sent to 127.0.0.1, whose
    # budget the probes would share). /health then shows no probes.
    probe_interval: float = 2.0
