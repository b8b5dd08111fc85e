"""`python run_node.py demo`: a 3-node network on loopback, mining and syncing in seconds.

Three in-process nodes (node.Node) on 127.0.0.1 with free ports and throw-away
data directories; nodes 2 and 3 join through node 1. Each node mines with
`--miners-per-node` workers at a low difficulty, so blocks appear every second or
two and the others pick them up by ANNOUNCE (and by consensus rounds, which run
more often than on the real network so a node that fell behind catches up
quickly). Every `--interval` seconds one line shows each node's height and top
hash. Ctrl-C (or SIGTERM) stops every node and removes the data directories,
exit code 0.

Difficulty: `--difficulty auto` (the default) times this machine's hash kernel for
0.2 s and picks the difficulty whose expected block interval, with all the demo's
miners on the cores they share, is nearest to two seconds on a log scale: a step
of difficulty is a factor of 16, so the interval it gets is anywhere between about
0.5 s and 8 s (7 with SHA-NI on two cores: about 5 s); the pick is printed. A fixed difficulty that
is too low for a fast kernel (5 with SHA-NI: a block every few milliseconds on each
node) makes the nodes fork faster than they can agree, which is no demo at all.

Sizing: the default is one miner per node (three worker processes). On a machine
with fewer than three cores they share the CPU with each other and the actors; the
hash rate per miner drops but the demo still moves. `--miners-per-node 0` runs it
without mining (nodes, gossip and the status pages only).
"""
from __future__ import annotations

import logging
import math
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pykka

from config import NodeConfig

if TYPE_CHECKING:  # imported inside run_demo so `run_node.py --help` stays light
    from node import Node
    from ops.runner import ServedNode
    from ops.view import NodeView

LOOPBACK = "127.0.0.1"
NODE_COUNT = 3
TARGET_BLOCK_SECONDS = 2.0
AUTO = "auto"
ASK_TIMEOUT = 0.5


def difficulty_for(hashes_per_second: float, target_seconds: float = TARGET_BLOCK_SECONDS) -> int:
    """The difficulty whose expected block time (16**d hashes at that rate) is nearest the target, on a log scale."""
    if hashes_per_second <= 0:
        raise ValueError("hash rate must be positive")
    wanted = math.log(hashes_per_second * target_seconds, 16)
    return max(1, min(64, round(wanted)))


def network_rate(per_core: float, miners_per_node: int, cores: int) -> float:
    """What the demo's 3 x miners_per_node workers hash together: no more than one core each, no more than the cores."""
    return per_core * min(NODE_COUNT * miners_per_node, max(1, cores))


def auto_difficulty(miners_per_node: int) -> tuple[int, str]:
    """(difficulty, why) for this machine: its kernel timed now, its cores as `--miners auto` counts them."""
    from mining.kernel import measure_rate, select_kernel
    from mining.pool_size import auto_miner_count

    if miners_per_node == 0:
        return 6, "no miners"
    kernel = select_kernel()
    per_core = measure_rate(kernel)
    cores = auto_miner_count()  # the cores mining scales on (physical, within our affinity)
    rate = network_rate(per_core, miners_per_node, cores)
    difficulty = difficulty_for(rate)
    expected = 16**difficulty / rate
    return difficulty, (f"auto: kernel {kernel.name} at {per_core / 1e6:.1f} MH/s per core, "
                        f"a block about every {expected:.1f} s")


def parse_difficulty(value: str) -> int | str:
    """click's view of --difficulty: 'auto' or an int in 1..64."""
    if value == AUTO:
        return AUTO
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither 'auto' nor a whole number") from None
    if not 1 <= number <= 64:
        raise click.BadParameter(f"{number} is not in the range 1..64")
    return number


def free_port(kind: int) -> int:
    """A port the kernel says is free on loopback right now (UDP or TCP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def demo_configs(base: Path, difficulty: int, miners: int, fault_injection: bool) -> list[NodeConfig]:
    """Three nodes on loopback; 2 and 3 list node 1 as their well-known peer."""
    udp_ports = [free_port(socket.SOCK_DGRAM) for _ in range(NODE_COUNT)]
    http_ports: list[int] = []
    while len(http_ports) < NODE_COUNT:
        port = free_port(socket.SOCK_STREAM)
        if port not in http_ports:
            http_ports.append(port)
    configs = []
    for i in range(NODE_COUNT):
        configs.append(NodeConfig(
            host=LOOPBACK,
            bind_host=LOOPBACK,
            port=udp_ports[i],
            peers=() if i == 0 else ((LOOPBACK, udp_ports[0]),),
            name=f"demo-{i + 1}",
            difficulty=difficulty,
            miners=miners,
            data_dir=base / f"node-{i + 1}",
            http_host=LOOPBACK,
            http_port=http_ports[i],
            enable_fault_injection=fault_injection,
            gossip_interval=5.0,
            peer_timeout=20.0,
            consensus_interval=10.0,
        ))
    return configs


def tip_of(node: "NodeView") -> tuple[int | None, str | None, str | None]:
    """(height, top hash, who mined the top block) of a node; Nones while its ChainKeeper can't answer."""
    chain = node.chain()
    if chain is None:
        return None, None, None
    try:
        height, top = chain.tip().get(timeout=ASK_TIMEOUT)
        blocks = chain.get_blocks(height - 1, 1).get(timeout=ASK_TIMEOUT) if height else []
    except (pykka.Timeout, pykka.ActorDeadError):  # restarting or busy: shown as '?'
        return None, None, None
    return height, top, (blocks[0].mined_by if blocks else None)


COLUMN = 24


def header_line(nodes: "list[NodeView]") -> str:
    """Column titles for the progress lines: one column per node."""
    return f"{'time':>7}  " + "".join(f"{node.config.name:<{COLUMN}}" for node in nodes).rstrip()


def progress_line(elapsed: float, nodes: "list[NodeView]") -> str:
    """One line: each node's height, top hash and who mined it, and whether the nodes agree."""
    tips = [tip_of(node) for node in nodes]
    cells = [
        f"{'?' if height is None else height:<5} {(top or '-')[:8]:<8} {miner or '-'}"
        for height, top, miner in tips
    ]
    agree = "in sync" if len({top for _, top, _ in tips}) == 1 else "syncing"
    return f"{elapsed:6.1f}s  " + "".join(f"{cell:<{COLUMN}}" for cell in cells) + f"[{agree}]"


@click.command(help="Run a 3-node network on 127.0.0.1 that mines and syncs; print its status URLs and progress.\n\n"
               "Ctrl-C stops every node and removes its temporary data.")
@click.option("--miners-per-node", type=click.IntRange(0, 64), default=1, show_default=True, help="Miner workers in each node.")
@click.option("--difficulty", default=AUTO, show_default=True, metavar="auto|1..64",
              callback=lambda ctx, param, value: parse_difficulty(value),
              help="Trailing zeros a block hash needs. auto times this machine's hash kernel for 0.2 s and "
                   "takes the difficulty whose expected time between blocks (all the demo's miners together, "
                   "on the cores they share) is nearest 2 s on a log scale; one step is 16x, so that is "
                   "anywhere from about 0.5 s to 8 s (e.g. 7 with the SHA-NI kernel on 2 cores: ~5 s). "
                   "The pick and its expected interval are printed at start.")
@click.option("--interval", type=click.FloatRange(0.2, 60), default=2.0, show_default=True, help="Seconds between progress lines.")
@click.option("--duration", type=click.FloatRange(0), default=0.0, help="Stop by itself after this many seconds (0: run until Ctrl-C).")
@click.option("--enable-fault-injection", is_flag=True, help="Allow POST /admin/crash/{actor} on the demo nodes.")
@click.option("-v", "--verbose", is_flag=True, help="Show the nodes' INFO logs (default: warnings only).")
def demo_command(miners_per_node: int, difficulty: int | str, interval: float, duration: float,
                 enable_fault_injection: bool, verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("pykka").setLevel(logging.WARNING)
    sys.exit(run_demo(miners_per_node, difficulty, interval, duration, enable_fault_injection))


def run_demo(miners: int, difficulty: int | str, interval: float, duration: float, fault_injection: bool) -> int:
    """Run the network until Ctrl-C/SIGTERM or `duration`; 0 on a clean stop, 1 if a node failed.

    Each node runs with its ops HTTP server (ops/runner.py), which the status URLs point at.
    """
    from node import Node
    from ops.health import render_health
    from ops.runner import start_node_with_http

    chosen = ""
    if difficulty == AUTO:
        difficulty, why = auto_difficulty(miners)
        chosen = f" ({why})"

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    served: "list[ServedNode[Node]]" = []
    exit_code = 0
    with tempfile.TemporaryDirectory(prefix="pow-node-demo-") as tmp:
        try:
            for config in demo_configs(Path(tmp), difficulty, miners, fault_injection):
                served.append(start_node_with_http(Node(config)))
                if stop.is_set():
                    break
            click.echo(f"3-node demo network on {LOOPBACK}: difficulty {difficulty}{chosen}, {miners} miner(s) per node; "
                       "Ctrl-C stops it.")
            nodes = [s.node for s in served]
            for node in nodes:
                cfg = node.config
                peers = ", ".join(f"{h}:{p}" for h, p in cfg.peers) or "-"
                click.echo(f"  {cfg.name}: status http://{cfg.http_host}:{cfg.http_port}/   "
                           f"udp {cfg.host}:{cfg.port}   peers {peers}")
            click.echo("Every few seconds, for each node: chain height, top block hash, who mined the top block.")
            click.echo(header_line(nodes))
            started = time.monotonic()
            while not stop.wait(interval):
                elapsed = time.monotonic() - started
                click.echo(progress_line(elapsed, nodes))
                failed = [n for n in nodes if n.stopped]
                if failed:
                    click.echo(f"node(s) {', '.join(n.config.name for n in failed)} stopped: "
                               f"{'; '.join(str(render_health(n.health_facts())['reason']) for n in failed)}", err=True)
                    exit_code = 1
                    break
                if duration and elapsed >= duration:
                    break
        except Exception as exc:  # a node that can't start (a port taken meanwhile, ...)
            click.echo(f"demo failed: {type(exc).__name__}: {exc}", err=True)
            exit_code = 1
        finally:
            click.echo("stopping the demo network ...")
            for each in reversed(served):
                each.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    click.echo("stopped.")
    return exit_code
