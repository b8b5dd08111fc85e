"""`python -m sim.lab`: run a network of real nodes through an emulated WAN and report what they did."""
from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import click

from sim.lab.run import Lab, LabConfig
from sim.lab.schedule import parse_partition


def _partition(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[float, float]]:
    out = []
    for value in values:
        try:
            parsed = parse_partition(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        if parsed is not None:
            out.append(parsed)
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--nodes", type=click.IntRange(2, 250), default=100, show_default=True, help="Nodes at the start.")
@click.option("--miners", type=click.IntRange(0, 250), default=10, show_default=True, help="Nodes that mine (one worker each).")
@click.option("--minutes", type=click.FloatRange(0.2, 120), default=3.0, show_default=True, help="Length of the run, once every node is up.")
@click.option("--block-interval", type=click.FloatRange(0.5, 600), default=10.0, show_default=True,
              help="Target seconds between blocks (sets the difficulty and the miners' CPU cap).")
@click.option("--regions", type=click.IntRange(1, 50), default=5, show_default=True, help="Regions (RTT 20-250 ms between, 4 ms inside).")
@click.option("--loss", type=click.FloatRange(0, 0.9), default=0.01, show_default=True, help="Chance a datagram is lost (0.01 = 1%).")
@click.option("--jitter", type=click.FloatRange(0, 5), default=0.1, show_default=True, help="Extra one-way delay, up to this fraction.")
@click.option("--uplink-mbit", type=click.FloatRange(0, 10_000), default=10.0, show_default=True, help="Each node's upload rate; 0: unlimited.")
@click.option("--partition", "partitions", multiple=True, default=("60:60",), show_default=True, callback=_partition,
              help="START:DURATION seconds into the run: two groups of regions cut apart, then healed; repeatable; 'none'.")
@click.option("--churn", type=click.FloatRange(0, 600), default=10.0, show_default=True,
              help="Nodes killed (SIGKILL) per minute, each restarted on its data dir --down seconds later.")
@click.option("--down", "down_s", type=click.FloatRange(0, 600), default=5.0, show_default=True, help="Seconds a killed node stays down.")
@click.option("--joins", type=click.FloatRange(0, 600), default=2.0, show_default=True, help="New nodes per minute, each joining through one random node.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of every random choice of the lab.")
@click.option("--sample-period", type=click.FloatRange(0.5, 60), default=None, help="Seconds between /health sweeps. Default: max(2, nodes/20).")
@click.option("--difficulty", type=click.IntRange(1, 64), default=None, help="Override the chosen difficulty.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("lab-out"), show_default=True,
              help="Where nodes.json, report.json, report.png and the nodes' data dirs and logs go.")
def main(out: Path, **options: object) -> None:
    """Start real nodes, play partitions and churn, then write report.json and report.png."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if options["miners"] > options["nodes"]:  # type: ignore[operator]
        raise click.BadParameter("cannot exceed --nodes", param_hint="--miners")
    if (out / "nodes").exists():
        raise click.BadParameter(f"{out} holds an earlier run (its nodes' data dirs): give a new one", param_hint="--out")
    config = LabConfig(out=out, **options)  # type: ignore[arg-type]
    # SIGTERM unwinds like Ctrl-C, so the run still stops every process it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    report = Lab(config).run()
    keys = ("nodes", "blocks", "block_interval_s", "propagation_ms", "stale_rate", "partition_heal_s", "churn_catchup_s",
            "peers_known", "bytes_per_block_per_node", "node_rss_mb", "exits", "final_tips", "wall_time_s")
    json.dump({k: report[k] for k in keys}, sys.stdout, indent=1)
    sys.stdout.write(f"\nreport: {out / 'report.json'}, {out / 'report.png'}\n")


if __name__ == "__main__":
    main()
