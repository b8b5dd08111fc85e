#!/usr/bin/env python3
"""Command line: run a node (`python run_node.py [OPTIONS]`) and its helper commands.

Bad arguments get click's one-line usage error and exit code 2.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import click

from config import NodeConfig

DEFAULT_PORT = 8999
DEFAULT_HTTP_PORT = 8998


class PeerAddress(click.ParamType):
    """HOST:PORT with a port in 1..65535."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        host, sep, port = str(value).rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            self.fail(f"{value!r} is not HOST:PORT with a port in 1..65535", param, ctx)
        return host.strip("[]"), int(port)


class MinerCount(click.ParamType):
    """`auto` (one per core, psutil) or a non-negative number."""

    name = "auto|N"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "auto":
            from mining.pool_size import auto_miner_count

            return auto_miner_count()
        if text.isdigit() and int(text) <= 1024:
            return int(text)
        self.fail(f"{value!r} is not 'auto' or a number from 0 to 1024", param, ctx)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "pow-node"


def detect_host() -> str:
    """Our address as peers should see it, read from the interfaces (no traffic sent).

    The first IPv4 address of an interface that is up and not loopback; the
    hostname's address often is loopback (Debian maps it to 127.0.1.1), which
    peers on other machines could not reach. Loopback when there is nothing else.
    """
    import ipaddress

    import psutil

    try:
        stats = psutil.net_if_stats()
        for name, addresses in psutil.net_if_addrs().items():
            if name in stats and not stats[name].isup:
                continue
            for address in addresses:
                if address.family == socket.AF_INET and not ipaddress.ip_address(address.address).is_loopback:
                    return address.address
    except (OSError, ValueError, psutil.Error):
        pass
    return "127.0.0.1"


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pykka").setLevel(logging.WARNING)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default=None, help="Address advertised to peers (and bound). Default: auto-detected.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True, help="UDP port.")
@click.option("--peer", "peers", type=PeerAddress(), multiple=True, help="A well-known peer HOST:PORT; repeatable.")
@click.option("--name", default=None, help="Our name in gossip and minedBy. Default: the hostname.")
@click.option("--difficulty", type=click.IntRange(1, 64), default=8, show_default=True, help="Trailing zeros a block hash needs.")
@click.option("--miners", type=MinerCount(), default="0", show_default=True, help="'auto' (one per core), a number, or 0.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where the chain is stored.")
@click.option("--http-port", type=click.IntRange(0, 65535), default=DEFAULT_HTTP_PORT, show_default=True, help="Ops HTTP port; 0 turns it off.")
@click.option("--http-host", default="127.0.0.1", show_default=True, help="Where the ops HTTP listens.")
@click.option("--enable-fault-injection", is_flag=True, help="Allow POST /admin/crash/{actor} (tests, chaos drills).")
@click.option("--miner-listen", type=click.IntRange(0, 65535), default=0, help="TCP port for external miners (0: off).")
@click.option("--miner-token", default=None, help="Shared token external miners must present.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx: click.Context, host: str | None, port: int, peers: tuple[tuple[str, int], ...], name: str | None,
        difficulty: int, miners: int, data_dir: Path | None, http_port: int, http_host: str,
        enable_fault_injection: bool, miner_listen: int, miner_token: str | None, verbose: bool) -> None:
    """A peer of the proof-of-work network: joins, syncs, validates, mines, serves."""
    if ctx.invoked_subcommand is not None:
        return
    if miner_listen and not miner_token:
        raise click.UsageError("--miner-listen needs --miner-token (external miners must authenticate)")
    setup_logging(verbose)
    config = NodeConfig(
        host=host or detect_host(),
        bind_host=host or "0.0.0.0",
        port=port,
        peers=tuple(peers),
        name=name or socket.gethostname(),
        difficulty=difficulty,
        miners=miners,
        data_dir=data_dir or default_data_dir(),
        http_host=http_host,
        http_port=http_port,
        enable_fault_injection=enable_fault_injection,
        miner_listen=miner_listen,
        miner_token=miner_token,
    )
    sys.exit(run_node(config))


def run_node(config: NodeConfig) -> int:
    """Run until SIGINT/SIGTERM (exit 0) or until the supervisor gives up (exit 1)."""
    from node import Node

    log = logging.getLogger("node")
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop_requested.set()

    # Before anything starts: a signal that arrives while the node is starting up
    # (it may already answer on UDP) must still mean a clean shutdown.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    node = Node(config)
    try:
        node.start()
    except Exception as exc:  # a child that can't start at all (port taken, disk unwritable)
        log.critical("node failed to start: %s", exc)
        return 1
    log.info("node %s up on udp %s:%d (difficulty %d, %d miners, data in %s)",
             config.name, config.host, config.port, config.difficulty, config.miners, config.data_dir)
    while not stop_requested.wait(0.2):
        if node.supervisor.stopped:
            break
    if node.supervisor.stopped and not stop_requested.is_set():
        node.supervisor.wait(timeout=30)  # let the give-up shutdown finish (workers, storage)
        node.stop()
        log.critical("node stopped: %s", node.supervisor.gave_up_reason or "supervisor stopped")
        return node.supervisor.exit_code or 1
    node.stop(0)
    return 0


# Subcommands (each in its own module) are registered below this line.
from ops.status_cmd import status_command; cli.add_command(status_command, "status")  # noqa: E402,E702
from ops.demo import demo_command; cli.add_command(demo_command, "demo")  # noqa: E402,E702
from miner_client import miner_command; cli.add_command(miner_command, "miner")  # noqa: E402,E702


if __name__ == "__main__":
    cli()
