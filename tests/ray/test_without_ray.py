"""Without `--ray-address` nothing of Ray is imported or started; with an unreachable
cluster mining degrades with the reason instead of crashing. No Ray cluster needed."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from click.testing import CliRunner

from mining.ray_backend import MinerWorker, QueueInbox, QueueOutbox
from mining.worker import run_worker
from chain.block import hash_prefix
from tests.helpers import health, free_tcp_port, free_udp_port, wait_for

ROOT = Path(__file__).resolve().parents[2]

# Runs the real CLI in a fresh interpreter; once its miner hashes, records what is
# imported and which processes run, then asks the node to stop (SIGTERM).
PROBE = r'''
import json, os, signal, sys, threading, time, urllib.request
import psutil
out, http_port = sys.argv[1], int(sys.argv[2])

def probe():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            doc = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=2).read())
            miner = next(a for a in doc["actors"] if a["name"] == "MinerActor-0")
            if miner.get("hashrate"):
                break
        except Exception:
            pass
        time.sleep(0.2)
    children = psutil.Process().children(recursive=True)
    json.dump({"miner": miner, "modules": sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")),
               "children": [" ".join(c.cmdline()) for c in children]}, open(out, "w"))
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=probe, daemon=True).start()
sys.argv = ["run_node.py"] + sys.argv[3:]
import run_node
run_node.cli()
'''


def test_no_ray_address_imports_and_starts_nothing_of_ray(tmp_path):
    out = tmp_path / "probe.json"
    http_port = free_tcp_port()
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), str(http_port), "--host", "127.0.0.1", "--port", str(free_udp_port()),
         "--miners", "1", "--difficulty", "30", "--data-dir", str(tmp_path / "data"), "--http-port", str(http_port)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert seen["miner"]["backend"] == "process" and seen["miner"]["hashrate"] > 0
    assert seen["modules"] == []
    assert seen["children"] and not any("ray" in cmd.split("/")[-1].lower() for cmd in seen["children"]), seen["children"]


def test_unreachable_cluster_degrades_mining_and_is_retried(make_node):
    address = f"127.0.0.1:{free_tcp_port()}"  # nobody listens there
    node = make_node(miners=1, difficulty=30, ray_address=address, http_port=free_tcp_port())
    from tests.ops.ops_helpers import http

    def degraded():
        doc = http(node.config.http_port, "/health").json()
        return doc if doc["status"] == "degraded" and doc["reason"] and "retrying in 2s" in doc["reason"] else None

    doc = wait_for(degraded, timeout=30, interval=0.2)  # "2s": a second attempt failed too (backoff doubles)
    assert "MinerActor-0" in doc["reason"] and f"can't connect to the Ray cluster at {address}" in doc["reason"]
    miner = next(a for a in doc["actors"] if a["name"] == "MinerActor-0")
    assert miner["alive"] and miner["restarts"] == 0  # degraded, not crash-looping
    assert miner["backend"] == "ray" and miner["pid"] is None and miner["ray_node"] is None
    assert miner["state"] == "waiting for the Ray cluster"


def test_miners_auto_with_an_unreachable_cluster_is_a_one_line_error(tmp_path):
    import run_node

    address = f"127.0.0.1:{free_tcp_port()}"
    result = CliRunner().invoke(run_node.cli, ["--miners", "auto", "--ray-address", address, "--http-port", "0",
                                               "--data-dir", str(tmp_path / "d"), "--host", "127.0.0.1"])
    assert result.exit_code == 1
    assert "--miners auto: can't connect to the Ray cluster" in result.output
    assert "Traceback" not in result.output
    from mining.pool_size import stop_ray_cluster_watchers

    stop_ray_cluster_watchers()


def test_ray_worker_runs_the_same_search_loop_over_queues():
    """The Ray actor's run() drives mining.worker.run_worker itself (tested here without Ray)."""
    worker = MinerWorker()
    prefix = hash_prefix(None, "me", ("hi",), 1_700_000_000)
    worker.push(("work", 7, prefix, 3, "0-1234abcd"))
    reports = worker.run()
    found = next(r for r in reports if r[0] == "found")
    assert found[1] == 7
    import hashlib

    assert hashlib.sha256(prefix + found[2].encode()).hexdigest() == found[3] and found[3].endswith("000")
    worker.push(("stop",))
    rest = list(reports)  # the stream ends once the loop has stopped
    assert all(r[0] == "hashes" for r in rest)


def test_queue_inbox_close_ends_the_loop():
    """A closed inbox ends the loop the way a pipe's EOF does (a worker whose parent went away).
    Run on a thread, as the Ray actor runs it."""
    inbox, outbox = QueueInbox(), QueueOutbox()
    inbox.close()
    loop = threading.Thread(target=run_worker, args=(inbox, outbox), daemon=True)
    loop.start()
    loop.join(timeout=60)
    assert not loop.is_alive(), "run_worker is still waiting on a closed inbox"
    assert not inbox.poll()  # it read the close marker: that EOF, nothing else, ended it
    reports = []
    while not outbox.queue.empty():
        reports.append(outbox.queue.get_nowait())
    assert [r[0] for r in reports] == ["kernel"]  # it started, then stopped without searching or reporting work


def test_auto_pool_follows_the_ray_clusters_cpu_count(make_node):
    """Readings of the cluster (simulated here) add and remove MinerActors in the miners supervisor."""
    from mining.pool_size import ray_cluster_watcher
    from mining.ray_cluster import ClusterReading

    address = f"127.0.0.1:{free_tcp_port()}"  # unreachable: no real reading ever comes
    node = make_node(miners="auto", ray_address=address, difficulty=30)
    assert node.miner_count == 0  # nothing known about the cluster yet
    watcher = ray_cluster_watcher(address)

    def miners():
        return sorted(a["name"] for a in health(node)["actors"] if a["name"].startswith("MinerActor-"))

    watcher.update(ClusterReading(cpus=2, nodes=1))
    wait_for(lambda: miners() == ["MinerActor-0", "MinerActor-1"], timeout=20)
    watcher.update(ClusterReading(cpus=3, nodes=2))  # a node joined
    wait_for(lambda: miners() == ["MinerActor-0", "MinerActor-1", "MinerActor-2"], timeout=20)
    watcher.update(ClusterReading(cpus=1, nodes=1))  # two CPUs left
    wait_for(lambda: miners() == ["MinerActor-0"], timeout=20)
    entry = next(a for a in health(node)["actors"] if a["name"] == "MinerActor-0")
    assert entry["alive"] and entry["restarts"] == 0
