"""Hash rate: the hash kernels and the node's miners against the tightest Python loop, in one run.

Run by hand:
    python bench/bench_hashrate.py [--seconds 5] [--rounds 3] [--cli-seconds 40] [--cli-difficulty 6]
                                   [--scaling-seconds 5] [--no-cli] [--no-scaling]

Everything is measured in the same run, one after the other, so all see the same
machine; rounds alternate the measures so load from other programs hits them
alike, and each figure is also given per CPU-second used, which that load hardly
moves. Ratios are to (a) of the same round.

(a) baseline: the tightest midstate loop Python allows, ``h = base.copy();
    h.update(nonce); h.digest()`` over precomputed nonces (no formatting, no
    checks), a prefix and nonce length that cost one SHA-256 compression per hash
    as the miners' nonce layout does; on 1 process and on one process per usable
    CPU (its affinity);
(k) each native kernel this machine has (``sha-ni``, ``portable``), the same
    search as the miners' (mining/kernel.py) with a difficulty nothing reaches,
    in ~2 ms batches, on 1 process and on every CPU;
(b) the node: an in-process Node with ``--miners auto`` at difficulty 30 (pure
    search speed with the kernel the workers pick), its hash counters over the
    same duration after a warm-up;
(c) ``python run_node.py --miners auto`` as an operator starts it (loopback, a
    free --http-port, a temp --data-dir, no --peer) at a difficulty giving dozens
    of blocks: the effective rate, blocks x 16**difficulty / time, which includes
    everything a node does per block (verify, store, switch work), and the total
    hash rate its /health reports (sampled every second), against that effective
    rate. The effective rate is a Poisson count: its error is about 1/sqrt(blocks);
(d) scaling: nodes with 1, 2, 4, ... up to the auto count of miners.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NONCES = tuple(b"%07x" % i for i in range(4096))
PREFIX = b"f" * 64 + b"bench" + b"bench message" + (1_700_000_000).to_bytes(8, "big")  # 90 bytes, as a block's
PYTHON = "python"


def _loop(kind: str, seconds: float, go: "mp.synchronize.Event", results: "mp.Queue") -> None:
    """One process hashing for `seconds` with `kind`: the bare Python loop or a kernel's search."""
    if kind == PYTHON:
        copy = hashlib.sha256(PREFIX).copy  # + 7 nonce bytes: one compression per hash
    else:
        from mining.kernel import make_kernel
        from mining.worker import BATCH_SECONDS, nonce_head

        data = PREFIX + nonce_head(len(PREFIX), "0-bench").encode()
        search = make_kernel(kind).searcher(data, 64)  # difficulty 64: never found
        batch = 65536
    go.wait()
    hashes = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    deadline = started + seconds
    while True:
        if kind == PYTHON:
            for nonce in NONCES:
                h = copy()
                h.update(nonce)
                h.digest()
            hashes += len(NONCES)
        else:
            t0 = time.perf_counter()
            tried, _ = search(hashes, batch)
            hashes += tried
            batch = max(4096, int(batch * min(2.0, BATCH_SECONDS / max(1e-6, time.perf_counter() - t0))))
        if time.perf_counter() >= deadline:
            break
    results.put((hashes, time.perf_counter() - started, time.process_time() - cpu_started))


def loop_rate(kind: str, processes: int, seconds: float) -> tuple[float, float]:
    """(total hashes/s, hashes per CPU-second) of `processes` loops of `kind` running at once."""
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_loop, args=(kind, seconds, go, results), daemon=True) for _ in range(processes)]
    for proc in procs:
        proc.start()
    time.sleep(1.0)  # let every interpreter start before the clock does
    go.set()
    runs = [results.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join()
    return sum(h / wall for h, wall, _ in runs), sum(h for h, _, _ in runs) / sum(cpu for _, _, cpu in runs)


def _start_node(miners: int, difficulty: int, data_dir: Path):
    from config import NodeConfig
    from node import Node
    from tests.helpers import free_udp_port

    config = NodeConfig(port=free_udp_port(), name="bench", difficulty=difficulty, miners=miners,
                        data_dir=data_dir, http_port=0)
    return Node(config).start()


def _miner_details(node, miners: int) -> list[dict]:
    out = []
    for i in range(miners):
        proxy = node.ctx.registry.actor(f"MinerActor-{i}")
        out.append(proxy.health_details().get(timeout=5) if proxy is not None else {})
    return out


def _cpu_seconds(processes) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except Exception:  # noqa: BLE001 - a worker that went away counts nothing
            pass
    return total


def node_rate(miners: int, seconds: float, data_dir: Path) -> tuple[float, float, list[str]]:
    """(hashes/s, hashes per CPU-second of workers + node process, kernels) for a node with `miners` miners."""
    import psutil

    node = _start_node(miners, 30, data_dir)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # warm-up: every worker hashing
            if all(d.get("hashes_total", 0) > 0 for d in _miner_details(node, miners)):
                break
            time.sleep(0.1)
        time.sleep(1.0)
        before = _miner_details(node, miners)
        processes = [psutil.Process(d["pid"]) for d in before] + [psutil.Process()]
        cpu0, t0 = _cpu_seconds(processes), time.monotonic()
        time.sleep(seconds)
        after = _miner_details(node, miners)
        elapsed, cpu = time.monotonic() - t0, _cpu_seconds(processes) - cpu0
        hashes = sum(a["hashes_total"] - b["hashes_total"] for a, b in zip(after, before))
        return hashes / elapsed, hashes / cpu if cpu > 0 else 0.0, [str(d.get("kernel")) for d in after]
    finally:
        node.stop()


def _health(http_port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=2) as reply:
            return json.loads(reply.read())
    except (OSError, ValueError):
        return None


def _miner_entries(doc: dict | None) -> list[dict]:
    return [a for a in (doc or {}).get("actors", []) if a.get("name", "").startswith("MinerActor-")]


def cli_rate(seconds: float, difficulty: int, data_dir: Path) -> dict:
    """`python run_node.py --miners auto` on loopback: effective rate and the rate its /health reports."""
    import psutil

    from tests.helpers import free_tcp_port, free_udp_port

    http_port = free_tcp_port()
    command = [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(free_udp_port()),
               "--miners", "auto", "--difficulty", str(difficulty), "--data-dir", str(data_dir),
               "--http-port", str(http_port), "--name", "bench"]
    log_path = data_dir.parent / f"{data_dir.name}.log"
    with open(log_path, "wb") as log_file:
        node = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # warm-up: /health up and every worker hashing
                entries = _miner_entries(_health(http_port))
                if entries and all(e.get("hashrate") and e.get("kernel") for e in entries):
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"the node did not start mining; see {log_path}")
            time.sleep(2.0)
            first = _health(http_port)
            processes = [psutil.Process(node.pid)] + [psutil.Process(e["pid"]) for e in _miner_entries(first)]
            cpu0 = _cpu_seconds(processes)
            t0 = time.monotonic()
            reported = []
            while time.monotonic() - t0 < seconds:
                time.sleep(1.0)
                entries = _miner_entries(_health(http_port))
                reported.append(sum(e.get("hashrate") or 0.0 for e in entries))
            last = _health(http_port)
            elapsed = time.monotonic() - t0
            cpu = _cpu_seconds(processes) - cpu0
        finally:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(20)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
    blocks = last["chain"]["height"] - first["chain"]["height"]
    counted = sum(e["hashes_total"] for e in _miner_entries(last)) - sum(e["hashes_total"] for e in _miner_entries(first))
    return {
        "blocks": blocks,
        "effective": blocks * 16**difficulty / elapsed,
        "effective_per_cpu": blocks * 16**difficulty / cpu if cpu > 0 else 0.0,
        "reported": statistics.mean(reported),
        "counted": counted / elapsed,
        "kernels": [e.get("kernel") for e in _miner_entries(last)],
        "miners": len(_miner_entries(last)),
    }


def _mh(rate: float) -> str:
    return f"{rate / 1e6:7.2f} MH/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time of each (a), (k), (b)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (a), (k), (b), alternated")
    parser.add_argument("--cli-seconds", type=float, default=40.0, help="measuring time of (c)")
    parser.add_argument("--cli-difficulty", type=int, default=6, help="difficulty of (c): dozens of blocks")
    parser.add_argument("--scaling-seconds", type=float, default=5.0, help="measuring time per point of (d)")
    parser.add_argument("--no-cli", action="store_true", help="skip (c)")
    parser.add_argument("--no-scaling", action="store_true", help="skip (d)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pykka").setLevel(logging.CRITICAL)

    import psutil

    from mining.kernel import HASHLIB, available_kernels
    from mining.pool_size import auto_miner_count

    cores = len(psutil.Process().cpu_affinity() or []) or (psutil.cpu_count() or 1)
    auto = auto_miner_count()
    natives = [k for k in available_kernels() if k != HASHLIB]
    print(f"CPUs: {psutil.cpu_count(logical=False)} physical, {psutil.cpu_count()} logical, {cores} usable; "
          f"--miners auto = {auto}; native kernels here: {', '.join(natives) or 'none (pow_kernel not built)'}")
    print(f"{args.rounds} rounds of {args.seconds:g} s per measure; hashes/s (hashes per CPU-second); "
          f"ratios to (a) of the same round and process count")

    ratios: dict[str, list[float]] = {}

    def note(key: str, ratio: float) -> str:
        ratios.setdefault(key, []).append(ratio)
        return f"x{ratio:5.2f}"

    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            print(f"  round {r + 1}")
            base = {}
            for n in sorted({1, cores}):
                rate, per_cpu = loop_rate(PYTHON, n, args.seconds)
                base[n] = (rate, per_cpu)
                print(f"    (a) Python loop, {n} proc:    {_mh(rate)} ({per_cpu / 1e6:.2f}/CPU-s)")
            for kernel in natives:
                for n in sorted({1, cores}):
                    rate, per_cpu = loop_rate(kernel, n, args.seconds)
                    print(f"    (k) {kernel:8s} kernel, {n} proc: {_mh(rate)} ({per_cpu / 1e6:.2f}/CPU-s)  "
                          f"{note(f'(k) {kernel} {n} proc', rate / base[n][0])} "
                          f"(per CPU-s x{per_cpu / base[n][1]:.2f})")
            rate, per_cpu, kernels = node_rate(auto, args.seconds, Path(tmp) / f"b{r}")
            print(f"    (b) node, {auto} miners ({'/'.join(sorted(set(kernels)))}): {_mh(rate)} "
                  f"({per_cpu / 1e6:.2f}/CPU-s)  {note('(b) node', rate / base[cores][0])} "
                  f"(per CPU-s x{per_cpu / base[cores][1]:.2f})")
        print("  medians over the rounds:")
        for key, values in ratios.items():
            print(f"    {key:28s} x{statistics.median(values):.2f}   (range {min(values):.2f}-{max(values):.2f})")

        if not args.no_cli:
            print(f"(c) python run_node.py --miners auto --difficulty {args.cli_difficulty}, {args.cli_seconds:g} s:")
            before, before_cpu = loop_rate(PYTHON, cores, args.seconds)
            cli = cli_rate(args.cli_seconds, args.cli_difficulty, Path(tmp) / "cli")
            after, after_cpu = loop_rate(PYTHON, cores, args.seconds)
            bare, bare_cpu = (before + after) / 2, (before_cpu + after_cpu) / 2
            err = 1 / cli["blocks"] ** 0.5 if cli["blocks"] else 1.0
            print(f"    (a) Python loop, {cores} proc, before/after: {_mh(before)} / {_mh(after)}")
            print(f"    effective: {cli['blocks']} blocks x 16^{args.cli_difficulty} / time = {_mh(cli['effective'])} "
                  f"(+-{err:.0%})  x{cli['effective'] / bare:.2f} the Python loop on all cores "
                  f"({cli['miners']} miners, kernels {'/'.join(sorted(set(map(str, cli['kernels']))))}); "
                  f"per CPU-second (workers + node) x{cli['effective_per_cpu'] / bare_cpu:.2f}")
            print(f"    /health hash rate (mean of 1 s samples): {_mh(cli['reported'])}  "
                  f"= {cli['reported'] / cli['effective']:.2f} x effective; "
                  f"hashes counted / time: {_mh(cli['counted'])}")

        if not args.no_scaling:
            counts = sorted({1, *[2**k for k in range(1, 12) if 2**k < auto], auto})
            print("(d) scaling (node hash rate by miner count):")
            one = None
            for k in counts:
                rate, _, _ = node_rate(k, args.scaling_seconds, Path(tmp) / f"d{k}")
                one = one or rate
                print(f"    {k:3d} miners: {_mh(rate)}  speed-up {rate / one:5.2f}x  efficiency {rate / one / k:.2f}")


if __name__ == "__main__":
    main()
