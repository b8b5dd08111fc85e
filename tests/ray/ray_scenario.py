"""A node mining on a real local Ray head: run by tests/ray/test_ray_miners.py inside a
private network namespace that has only loopback (and a private pid namespace, so
nothing of Ray outlives it). Not a test module itself: it asserts and exits non-zero
with the reason, and prints one JSON line of what it measured.

Steps: start a Ray head with 2 CPUs and token authentication; check every listening
socket is on loopback; run `run_node.py --miners auto --ray-address ...`; expect 2
miners with backend ray mining valid blocks; SIGKILL one Ray worker and see it
replaced (new pid, restart counted) and mining go on; let a second Ray node
(1 CPU) join and see a third miner placed on it, kill that node's raylet and see
the pool shrink back to 2; stop the cluster and see
mining degraded with the reason; start the cluster again and see mining resume;
stop the node and see no Ray worker left behind.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from chain.block import Block, check_chain  # noqa: E402

DIFFICULTY = 5  # blocks every few ms with the native kernel, every ~0.5 s with hashlib
RAY_BIN = str(Path(sys.executable).with_name("ray"))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def miners(health: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in health["actors"] if a["name"].startswith("MinerActor-")]


def all_mining(port: int, count: int) -> list[dict[str, Any]] | None:
    found = miners(get_json(port, "/health"))
    ok = len(found) == count and all(m["alive"] and m.get("pid") and (m.get("hashrate") or 0) > 0 for m in found)
    return found if ok else None


def height(port: int) -> int:
    return int(get_json(port, "/health")["chain"]["height"] or 0)


def chain(port: int) -> list[Block]:
    """The first (up to 100) blocks of the node's chain."""
    doc = get_json(port, "/chain?from=0&limit=100")
    return [Block(b["height"], b["minedBy"], tuple(b["messages"]), b["nonce"], b["timestamp"], b["hash"]) for b in doc]


def listening_sockets() -> list[str]:
    out = subprocess.run(["ss", "-Htlnu"], capture_output=True, text=True, check=True).stdout
    return [line.split()[4] for line in out.splitlines() if line.strip()]


def ray_workers() -> list[int]:
    """Pids of our Ray miner workers (Ray names its worker processes ray::<Class>)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::MinerWorker"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="rayt", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = dict(os.environ, HOME=str(work / "home"), RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), PYTHONUNBUFFERED="1",
               # the GCS declares a dead node dead in ~1.5 s instead of ~15 s
               RAY_health_check_period_ms="500", RAY_health_check_failure_threshold="3")
    (work / "home").mkdir()
    gcs_port = free_port()
    address = f"127.0.0.1:{gcs_port}"
    head = [RAY_BIN, "start", "--head", "--num-cpus=2", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={work / 'ray'}"]
    measured: dict[str, Any] = {}
    node: subprocess.Popen[bytes] | None = None
    log = open(work / "node.log", "wb")
    try:
        t0 = time.monotonic()
        subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
        measured["head_start_s"] = round(time.monotonic() - t0, 1)
        # The namespace has only loopback, so nothing can leave it; note any socket Ray
        # binds beyond loopback all the same (the README's advice on exposed ports).
        sockets = listening_sockets()
        assert sockets, "the Ray head listens nowhere?"
        measured["non_loopback_listeners"] = [s for s in sockets if not s.startswith(("127.", "[::ffff:127.", "[::1]:"))]

        http_port = free_port()
        node = subprocess.Popen(
            [sys.executable, str(ROOT / "run_node.py"), "--host", "127.0.0.1", "--port", str(free_port(socket.SOCK_DGRAM)),
             "--name", "ray-test", "--difficulty", str(DIFFICULTY), "--miners", "auto", "--ray-address", address,
             "--data-dir", str(work / "data"), "--http-port", str(http_port), "--enable-fault-injection"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        first = wait_for("2 miners hashing on Ray", lambda: all_mining(http_port, 2), 90)
        measured["miners_up_s"] = round(time.monotonic() - t0, 1)
        from mining.kernel import select_kernel

        local_kernel = select_kernel().name  # the native one where it is built, else hashlib
        measured["kernel"] = local_kernel
        for miner in first:
            assert miner["backend"] == "ray", miner
            assert miner["kernel"] == local_kernel, miner  # the Ray worker runs the same search code
            assert miner["ray_node"] == "127.0.0.1" and miner["ray_node_id"], miner
            assert miner["restarts"] == 0
        assert set(ray_workers()) == {m["pid"] for m in first}, (ray_workers(), first)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5).read().decode()
        assert 'node_miner_hashes_total{backend="ray",miner="1"}' in metrics

        wait_for("3 mined blocks", lambda: height(http_port) >= 3, 60)
        blocks = chain(http_port)
        check_chain(blocks, DIFFICULTY)
        assert all(b.mined_by == "ray-test" for b in blocks)

        victim = first[0]
        killed_at = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)

        def replaced() -> dict[str, Any] | None:
            m = miners(get_json(http_port, "/health"))[0]
            return m if m["restarts"] == 1 and m["alive"] else None

        after = wait_for("the killed miner restarted", replaced, 30)
        measured["death_noticed_s"] = round(time.monotonic() - killed_at, 2)
        assert "Ray worker lost" in (after["last_error"] or ""), after
        again = wait_for("2 miners hashing again", lambda: all_mining(http_port, 2), 60)
        measured["replaced_s"] = round(time.monotonic() - killed_at, 1)
        assert again[0]["pid"] != victim["pid"] and again[0]["backend"] == "ray", again[0]
        assert again[1]["restarts"] == 0
        before = height(http_port)
        wait_for("2 more blocks after the restart", lambda: height(http_port) >= before + 2, 60)
        check_chain(chain(http_port), DIFFICULTY)

        # A second Ray node joins (1 CPU): --miners auto grows the pool onto it; it dies: back to 2.
        before_join = set(Path("/proc").iterdir())
        joined_at = time.monotonic()
        subprocess.run([RAY_BIN, "start", f"--address={address}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                        "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=120)

        def three_on_two_nodes() -> list[dict[str, Any]] | None:
            found = all_mining(http_port, 3)
            return found if found and len({m["ray_node_id"] for m in found}) == 2 else None

        grown = wait_for("a third miner on the joined node", three_on_two_nodes, 60)
        measured["grown_after_join_s"] = round(time.monotonic() - joined_at, 1)
        assert [m["name"] for m in grown] == ["MinerActor-0", "MinerActor-1", "MinerActor-2"]
        raylets = [int(p.name) for p in set(Path("/proc").iterdir()) - before_join
                   if p.name.isdigit() and b"raylet" in _cmdline(p)]
        assert raylets, "the joined node's raylet not found"
        left_at = time.monotonic()
        for pid in raylets:
            os.kill(pid, signal.SIGKILL)
        wait_for("the pool back to 2 miners", lambda: all_mining(http_port, 2), 60)
        measured["shrunk_after_leave_s"] = round(time.monotonic() - left_at, 1)

        # The whole cluster goes away: mining degrades with the reason and is retried.
        subprocess.run([RAY_BIN, "stop", "--force"], env=env, capture_output=True, timeout=60)

        def degraded() -> dict[str, Any] | None:
            health = get_json(http_port, "/health")
            return health if health["status"] == "degraded" and "Ray cluster" in (health["reason"] or "") else None

        measured["cluster_stopped_at_s"] = round(time.monotonic() - t0, 1)
        down = wait_for("mining degraded with the reason", degraded, 60)
        measured["degraded_at_s"] = round(time.monotonic() - t0, 1)
        measured["degraded_reason"] = down["reason"][:200]
        subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
        back_at = time.monotonic()
        wait_for("mining resumed on the new cluster", lambda: all_mining(http_port, 2), 90)
        measured["resumed_s"] = round(time.monotonic() - back_at, 1)
        assert get_json(http_port, "/health")["status"] == "ok"

        measured["resumed_at_s"] = round(time.monotonic() - t0, 1)
        os.killpg(node.pid, signal.SIGTERM)  # as a service manager stops it: the node and its Ray bridges at once
        assert node.wait(30) == 0, "node did not exit cleanly"
        log.flush()
        assert "SIGTERM received" not in (work / "node.log").read_text(errors="replace"), "a Ray process dumped its stack on a clean stop"
        measured["node_stopped_at_s"] = round(time.monotonic() - t0, 1)
        wait_for("no Ray miner worker left", lambda: not ray_workers(), 30)
        measured["total_s"] = round(time.monotonic() - t0, 1)
        print(json.dumps(measured))
    except BaseException:
        log.flush()
        sys.stderr.write((work / "node.log").read_text(errors="replace")[-6000:])
        raise
    finally:
        if node is not None and node.poll() is None:
            node.kill()
        t1 = time.monotonic()
        subprocess.run([RAY_BIN, "stop", "--force"], env=env, capture_output=True, timeout=60)
        sys.stderr.write(f"final ray stop took {time.monotonic() - t1:.1f}s\n")
        log.close()
        if os.environ.get("RAY_SCENARIO_KEEP_LOG"):
            shutil.copy(work / "node.log", os.environ["RAY_SCENARIO_KEEP_LOG"])
        shutil.rmtree(work, ignore_errors=True)


def init_then_main(scenario: Callable[[], None] = main, script: str = __file__) -> None:
    """As pid 1 of a new pid namespace, reap every orphan (Ray's processes become ours)
    while a child runs the scenario (`script` again): unreaped zombies would look alive to `ray stop`."""
    if os.getpid() != 1:
        scenario()
        return
    child = subprocess.Popen([sys.executable, script])
    while True:
        pid, status = os.wait()
        if pid == child.pid:
            sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    init_then_main()
