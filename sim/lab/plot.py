"""report.png: propagation CDF, tip agreement over time (cuts shaded), peers known over time."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from sim.lab import analysis


def plot_report(path: Path, delays_ms: Sequence[float], samples: Sequence[dict[str, Any]], cuts: Sequence[analysis.Cut],
                t0: float, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (cdf, agree, peers) = plt.subplots(3, 1, figsize=(9, 11))
    fig.suptitle(f"{report['nodes']} nodes, {report['blocks_in_run']} blocks in {report['run_s']:.0f}s, "
                 f"stale {report['stale_rate']}, heal {report['partition_heal_s'] if report['partition_heal_s'] is not None else 'never'}"
                 f"{'s' if report['partition_heal_s'] is not None else ''}")

    ordered = sorted(delays_ms)
    if ordered:
        cdf.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], drawstyle="steps-post")
        cdf.set_xscale("log")
    p = report["propagation_ms"]
    cdf.set_title(f"block propagation (miner to node): p50 {p['p50']} ms, p99 {p['p99']} ms, max {p['max']} ms")
    cdf.set_xlabel("ms after the block was mined")
    cdf.set_ylabel("share of (block, node) pairs")
    cdf.grid(True, which="both", alpha=0.3)

    shares = analysis.tip_agreement(samples)
    if shares:
        agree.plot([t - t0 for t, _, _ in shares], [s for _, s, _ in shares], label="share on the most common tip")
        tips = agree.twinx()
        tips.plot([t - t0 for t, _, _ in shares], [n for _, _, n in shares], color="orange", alpha=0.6)
        tips.set_ylabel("distinct tips (orange)")
        tips.set_ylim(bottom=0)
    agree.set_ylim(0, 1.05)
    agree.set_ylabel("share of the nodes")
    for cut in cuts:
        agree.axvspan(cut.start - t0, cut.end - t0, color="red", alpha=0.15, label="partition")
        agree.axvline(cut.end - t0, color="green", linestyle="--", label="heal")
    for event in report.get("events", []):
        if event["kind"] in ("kill", "join"):
            agree.axvline(event["at_s"], color="grey", alpha=0.3, linewidth=0.8)
    agree.set_title("tip agreement across the nodes (/health sweeps; grey: kills and joins)")
    agree.set_xlabel("seconds since every node was up")
    agree.legend(loc="upper right", fontsize=8)
    agree.grid(True, alpha=0.3)

    counts = analysis.peers_over_time(samples)
    if counts:
        xs = [t - t0 for t, _, _, _ in counts]
        peers.fill_between(xs, [c[1] for c in counts], [c[3] for c in counts], alpha=0.2, label="min..max")
        peers.plot(xs, [c[2] for c in counts], label="median")
    peers.set_title("peers known per node (validated: the tried table)")
    peers.set_xlabel("seconds since every node was up")
    peers.legend(loc="lower right", fontsize=8)
    peers.grid(True, alpha=0.3)

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
