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
from typing import TYPE_CHECKING, Any

import click

from config import NodeConfig
from ops.config_file import add_envvars, config_option
from ops.logsetup import LOG_FORMAT, LOG_FORMATS, OneLineFormatter, setup_logging  # noqa: F401 (LOG_FORMAT, OneLineFormatter: kept importable from here)
from version import __version__

if TYPE_CHECKING:  # imported where used, so `--help` and the subcommands stay light
    from node import Node
    from ops.runner import ServedNode

DEFAULT_PORT = 8999
DEFAULT_HTTP_PORT = 8998
RAY_PROBE_TIMEOUT = 60.0  # how long `--miners auto --ray-address` waits for the cluster's CPU count


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
    """`auto` (AUTO_MINERS: one per core, or per CPU of the Ray cluster) or a non-negative number."""

    name = "auto|N"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"  # sized by the miners supervisor (node.py), not here
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


COURSE_PEER = "silicon.cs.umanitoba.ca:8999"  # only ever named in a hint, never contacted by default
# Options of the group that a subcommand may take from before its name (`run_node.py --http-port 9999 status`).
# `--config` before `status` gives it the file's http-port/http-host; before `config`, the file to show.
PASSED_TO_SUBCOMMAND = {"status": ("http_port", "http_host", "config"), "config": ("config",)}


def _check_options_before_subcommand(ctx: click.Context) -> None:
    """An option of the node given before a subcommand is passed on where it means the same, else refused.

    `run_node.py --http-port 9999 status` queries port 9999; `run_node.py --difficulty 5
    status` is an error rather than a silently ignored option. Settings from the
    environment or a config file are the node's, not the subcommand's: never refused.
    """
    from click.core import ParameterSource

    passed = PASSED_TO_SUBCOMMAND.get(ctx.invoked_subcommand or "", ())
    ctx.obj = {}
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name) if param.name is not None else None
        if param.name is None or source in (ParameterSource.DEFAULT, None):
            continue
        if param.name in passed:
            ctx.obj[param.name] = ctx.params[param.name]
            continue
        if source != ParameterSource.COMMANDLINE:
            continue
        flag = param.opts[-1] if getattr(param, "opts", None) else param.name
        raise click.UsageError(f"{flag} is an option of the node itself, not of '{ctx.invoked_subcommand}': "
                               f"put the subcommand's options after its name (see run_node.py {ctx.invoked_subcommand} --help)")


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default=None, help="Address advertised to peers (and bound, unless --bind). Default: auto-detected.")
@click.option("--bind", "bind", default=None, metavar="HOST",
              help="Address the UDP socket binds, when it differs from the advertised --host (NAT, a relay). Default: --host, else all.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True, help="UDP port.")
@click.option("--peer", "peers", type=PeerAddress(), multiple=True, help="A well-known peer HOST:PORT; repeatable.")
@click.option("--name", default=None, help="Our name in gossip and minedBy. Default: the hostname.")
@click.option("--difficulty", type=click.IntRange(1, 64), default=8, show_default=True, help="Trailing zeros a block hash needs.")
@click.option("--miners", type=MinerCount(), default="0", show_default=True, help="'auto' (one per core), a number, or 0.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where the chain is stored (a directory; made if missing).")
@click.option("--http-port", type=click.IntRange(0, 65535), default=DEFAULT_HTTP_PORT, show_default=True, help="Ops HTTP port; 0 turns it off.")
@click.option("--http-host", default="127.0.0.1", show_default=True, help="Where the ops HTTP listens.")
@click.option("--enable-fault-injection", is_flag=True, help="Allow POST /admin/crash/{actor} (tests, chaos drills).")
@click.option("--miner-listen", type=click.IntRange(0, 65535), default=0, help="TCP port for external miners (0: off).")
@click.option("--miner-token", default=None, help="Shared token external miners must present.")
@click.option("--ray-address", default=None, metavar="ADDRESS",
              help="Run the miner workers on this Ray cluster ('auto', or the head's HOST:PORT) instead of local processes.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
              help="text, or json: one JSON object per line (time, level, logger, message and fields such as height, peer).")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Log to this file, rotated at 10 MiB (5 kept); stderr then only gets warnings and errors.")
@config_option
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(__version__, "--version", prog_name="pow-node", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, host: str | None, bind: str | None, port: int, peers: tuple[tuple[str, int], ...], name: str | None,
        difficulty: int, miners: int | str, data_dir: Path | None, http_port: int, http_host: str,
        enable_fault_injection: bool, miner_listen: int, miner_token: str | None, ray_address: str | None,
        log_format: str, log_file: Path | None, config: Path | None, verbose: bool) -> None:
    """A peer of the proof-of-work network: joins, syncs, validates, mines, serves."""
    if ctx.invoked_subcommand is not None:
        _check_options_before_subcommand(ctx)
        return
    if miner_listen and not miner_token:
        raise click.UsageError("--miner-listen needs --miner-token (external miners must authenticate)")
    if ray_address is not None and (not ray_address.strip() or any(c.isspace() for c in ray_address)):
        raise click.BadParameter(f"{ray_address!r} is not a Ray address ('auto' or HOST:PORT)",
                                 param_hint="--ray-address")
    try:
        setup_logging(verbose, log_format, log_file)
    except OSError as exc:
        error = click.ClickException(f"--log-file {log_file}: cannot write it ({exc.strerror or exc})")
        error.exit_code = 2
        raise error from None
    if ray_address is not None:
        from mining.ray_cluster import check_token_auth

        check_token_auth(ray_address)  # one WARNING line if the cluster lets a client without a token in
    if miners == "auto" and ray_address is not None:
        check_ray_cluster(ray_address)
    node_config = NodeConfig(
        host=host or detect_host(),
        bind_host=bind or host or "0.0.0.0",
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
        ray_address=ray_address,
    )
    sys.exit(run_node(node_config, verbose))


add_envvars(cli)  # every option also from POW_NODE_<OPTION> (ops/config_file.py)


def check_ray_cluster(ray_address: str) -> None:
    """`--miners auto --ray-address`: the cluster's CPU count must be readable, else one line and exit 1.

    The reading is kept (mining/pool_size.py) for the miners supervisor to size its pool.
    """
    from mining.pool_size import ray_cluster_cpus, ray_cluster_problem

    if ray_cluster_cpus(ray_address, timeout=RAY_PROBE_TIMEOUT) is None:
        raise click.ClickException(f"--miners auto: {ray_cluster_problem(ray_address)}")


def run_node(config: NodeConfig, verbose: bool = False) -> int:
    """Run until SIGINT/SIGTERM (exit 0) or until the supervisor gives up (exit 1).

    A node that can't start exits non-zero after one line saying why (see
    runtime/startup.py); exit 2 when the data dir holds another difficulty.
    The node comes first, then its ops HTTP server (unless `--http-port 0`),
    which stops before the node on the way down (ops/runner.py).
    """
    from node import Node
    from ops.runner import start_node_with_http
    from runtime.startup import StartupError

    log = logging.getLogger("node")
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stop_requested.is_set():  # `timeout` and Ctrl-C in some shells signal the process and its group
            log.debug("received %s again: already shutting down", signal.Signals(signum).name)
            return
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop_requested.set()

    # Before anything starts: a signal that arrives while the node is starting up
    # (it may already answer on UDP) must still mean a clean shutdown.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    node = Node(config)
    try:
        served = start_node_with_http(node)
    except StartupError as exc:  # the usual mistakes: port taken, data dir in use or for another difficulty
        log.critical("%s", exc, exc_info=verbose)
        return exc.exit_code
    except Exception as exc:  # a child that can't start at all (disk unwritable, ...)
        log.critical("node failed to start: %s", exc, exc_info=verbose)
        return 1
    log.info("node %s up on udp %s:%d (difficulty %d, %d miners, data in %s)",
             config.name, config.host, config.port, config.difficulty, node.miner_count, config.data_dir)
    for line in explain_node(config, served.addresses):
        log.info("%s", line)
    reporter = None
    if node.miner_count > 0 or config.miner_listen > 0:
        from ops.progress_log import MiningReporter

        reporter = MiningReporter(node).start()
    try:
        return _wait_for_end(served, stop_requested, log)
    finally:
        if reporter is not None:
            reporter.stop()


def explain_node(config: NodeConfig, http_addresses: list[tuple[str, int]]) -> list[str]:
    """Lines that tell a new operator what this node is doing and where to look."""
    lines = []
    for host, port in http_addresses:
        shown = f"[{host}]" if ":" in host else host
        lines.append(f"status page (dashboard, block explorer): http://{shown}:{port}/")
    if not config.peers:
        doing = "mining a private chain" if config.miners or config.miner_listen else "keeping a private chain"
        lines.append(f"no --peer given: this node is on its own, {doing} that no one else sees. To join a network, "
                     f"restart with --peer HOST:PORT of one of its nodes (the course network: --peer {COURSE_PEER})")
    else:
        lines.append("joining through " + ", ".join(f"{h}:{p}" for h, p in config.peers))
    return lines


def _wait_for_end(served: "ServedNode[Node]", stop_requested: threading.Event, log: logging.Logger) -> int:
    """Until a signal (stop cleanly, 0) or the supervisor giving up (its exit code, 1 by default).

    Stopping `served` stops the ops HTTP, then the node.
    """
    node = served.node
    while not stop_requested.wait(0.2):
        if node.supervisor.stopped:
            break
    if node.supervisor.stopped and not stop_requested.is_set():
        node.supervisor.wait(timeout=30)  # let the give-up shutdown finish (workers, storage)
        served.stop()
        code = node.supervisor.exit_code or 1
        # ERROR, not CRITICAL: the supervisor has logged the one CRITICAL line that says why.
        log.error("node stopped (exit %d): %s", code, node.supervisor.gave_up_reason or "supervisor stopped")
        return code
    served.stop(0)
    return 0


# Subcommands (each in its own module) are registered below this line.
from ops.status_cmd import status_command; cli.add_command(status_command, "status")  # noqa: E402,E702
from ops.demo import demo_command; cli.add_command(demo_command, "demo")  # noqa: E402,E702
from miner_client import miner_command; cli.add_command(miner_command, "miner")  # noqa: E402,E702
from ops.config_cmd import make_config_command; cli.add_command(make_config_command(cli), "config")  # noqa: E402,E702
from ops.chain_tools_cmd import backup_command; cli.add_command(backup_command, "backup")  # noqa: E402,E702
from ops.chain_tools_cmd import export_command; cli.add_command(export_command, "export")  # noqa: E402,E702
from ops.chain_tools_cmd import import_command; cli.add_command(import_command, "import")  # noqa: E402,E702


if __name__ == "__main__":
    cli()
