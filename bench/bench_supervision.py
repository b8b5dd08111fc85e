"""Supervision against real node processes: what the supervisor and /health say under faults.

Run by hand:  python bench/bench_supervision.py [--blocks 3000] [--idle-seconds 60]

Each scenario starts `run_node.py` (loopback only, its own data dir, ops HTTP on,
`--enable-fault-injection`) and drives it through the fault endpoints:

1. busy: a scripted peer on 127.0.0.1 serves a `--blocks` chain; five stalls of 3 s
   are queued on ChainKeeper (15 s of backlog) as the sync starts. Reports the sync
   time, ChainKeeper's restarts and the most `instances` /health ever showed,
   against a baseline sync of the same chain without stalls;
2. reader: `NetworkIO.reader` is killed; reports how long until /health shows it
   (not ok, or NetworkIO restarted naming the thread) and until STATS are answered
   and /health is ok again;
3. hang: ChainKeeper stalled 600 s (over its 30 s budget): the exit code, the time to
   exit against the budget, the CRITICAL lines, and the height after a restart on
   the same data dir; then ConsensusRunner stalled 600 s: the time until a new
   instance runs, and whether the node still syncs a longer chain afterwards;
4. fds: with the node's descriptor limit at 256, 400 connections to its ops port,
   released after 3 s: how long until the gateway accepts a miner, and how many log
   lines the episode cost;
5. idle: the node's CPU over `--idle-seconds` with the ops HTTP on (psutil).

Prints one line per figure; exits non-zero if a scenario broke its promise.
"""
from __future__ import annotations

import argparse
import json
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.chains import make_chain  # noqa: E402
from sim.peer import ScriptedPeer  # noqa: E402

CHAIN_KEEPER_BUDGET = 30.0


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NodeProcess:
    def __init__(self, data_dir: Path, peers: list[tuple[str, int]] = (), name: str = "bench",
                 extra: list[str] = (), fd_limit: int | None = None) -> None:
        self.port, self.http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        self.data_dir = data_dir
        args = [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(self.port), "--name", name,
                "--difficulty", "2", "--data-dir", str(data_dir), "--http-port", str(self.http_port),
                "--enable-fault-injection", *extra]
        for host, port in peers:
            args += ["--peer", f"{host}:{port}"]
        self.log = tempfile.TemporaryFile()

        def limit() -> None:
            if fd_limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log, preexec_fn=limit)
        self.started = time.monotonic()
        wait(lambda: self.health_or_none() is not None, 30, "the node's /health")

    def health_or_none(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=2) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())
        except OSError:
            return None

    def health(self) -> dict[str, Any]:
        doc = self.health_or_none()
        if doc is None:
            raise RuntimeError("no /health answer")
        return doc

    def actor(self, name: str) -> dict[str, Any]:
        return next(a for a in self.health()["actors"] if a["name"] == name)

    def post(self, path: str, body: dict[str, Any] | None = None) -> int:
        data = json.dumps(body).encode() if body is not None else b""
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", method="POST", data=data)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def stats(self) -> dict[str, Any] | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.5)
            sock.sendto(json.dumps({"type": "STATS", "pad": "-" * 300}).encode(), ("127.0.0.1", self.port))
            try:
                while True:
                    reply = json.loads(sock.recv(65536))
                    if reply.get("type") == "STATS_REPLY":
                        return reply
            except (socket.timeout, ValueError):
                return None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_lines(self) -> list[str]:
        self.log.seek(0)
        return self.log.read().decode(errors="replace").splitlines()


def wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def sync_time(blocks: int, stalls: int, workdir: Path) -> tuple[float, int, int]:
    """Seconds to sync `blocks` from a scripted peer introduced after `stalls` 3 s stalls were
    queued on ChainKeeper; ChainKeeper's restarts; the most instances /health showed."""
    chain = make_chain(blocks, 2)
    with ScriptedPeer(chain, seed=1) as peer:
        node = NodeProcess(workdir / f"sync-{stalls}")
        try:
            most = [0]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    doc = node.health_or_none()
                    if doc:
                        entry = next(a for a in doc["actors"] if a["name"] == "ChainKeeper")
                        most[0] = max(most[0], entry.get("instances") or 0)
                    stop.wait(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            for _ in range(stalls):
                assert node.post("/admin/stall/ChainKeeper", {"seconds": 3}) == 202
            started = time.monotonic()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                # A peer tells the node about the serving peer, then asks for a consensus round.
                sock.sendto(json.dumps({"type": "GOSSIP", "host": "127.0.0.1", "port": peer.address[1],
                                        "id": f"bench-{stalls}", "name": "server"}).encode(), ("127.0.0.1", node.port))

                def synced() -> bool:
                    sock.sendto(b'{"type": "CONSENSUS"}', ("127.0.0.1", node.port))
                    return (node.stats() or {}).get("height") == blocks

                wait(synced, 300, f"a {blocks}-block sync", interval=1.0)
            elapsed = time.monotonic() - started
            stop.set()
            sampler.join()
            return elapsed, node.actor("ChainKeeper")["restarts"], most[0]
        finally:
            node.stop()


def scenario_busy(blocks: int, workdir: Path) -> bool:
    base, _, _ = sync_time(blocks, 0, workdir)
    took, restarts, most = sync_time(blocks, 5, workdir)
    print(f"busy: {blocks}-block sync {base:.1f}s without stalls, {took:.1f}s with 5 x 3 s stalls queued on "
          f"ChainKeeper ({took / base:.1f}x); ChainKeeper restarts {restarts}; most instances seen {most}")
    return restarts == 0 and most == 1


def scenario_reader(workdir: Path) -> bool:
    node = NodeProcess(workdir / "reader")
    try:
        wait(lambda: node.health()["status"] == "ok", 20, "ok before")
        killed = time.monotonic()
        assert node.post("/admin/kill-thread/NetworkIO.reader") == 202

        def seen() -> bool:
            doc = node.health()
            entry = next(a for a in doc["actors"] if a["name"] == "NetworkIO")
            return doc["status"] != "ok" or (entry["restarts"] >= 1 and "NetworkIO.reader" in (entry["last_error"] or ""))

        wait(seen, 30, "/health to show the dead reader", interval=0.01)
        shown = time.monotonic() - killed
        wait(lambda: node.stats() is not None and node.health()["status"] == "ok", 30, "STATS and ok again")
        back = time.monotonic() - killed
        entry = node.actor("NetworkIO")
        print(f"reader: killed; /health showed it after {shown:.2f}s (NetworkIO restarts {entry['restarts']}, "
              f"last_error {entry['last_error']!r}); STATS answered and /health ok after {back:.2f}s")
        return shown <= 5 and back <= 10
    finally:
        node.stop()


def scenario_hang(workdir: Path) -> bool:
    chain = make_chain(40, 2)
    with ScriptedPeer(chain, seed=2) as peer:
        node = NodeProcess(workdir / "hang", peers=[peer.address])
        wait(lambda: (node.stats() or {}).get("height") == 40, 60, "the first sync")
        stalled = time.monotonic()
        assert node.post("/admin/stall/ChainKeeper", {"seconds": 600}) == 202
        try:
            code = node.proc.wait(CHAIN_KEEPER_BUDGET + 60)
        except subprocess.TimeoutExpired:
            node.stop()
            print("hang: the node did not exit")
            return False
        took = time.monotonic() - stalled
        lines = node.log_lines()
        critical = [line for line in lines if " CRITICAL " in line or "CRITICAL" in line.split(" ", 3)[:3]]
        stack = any("stack of ChainKeeper's thread" in line for line in lines)
        print(f"hang: ChainKeeper stalled 600 s: exit {code} after {took:.1f}s (budget {CHAIN_KEEPER_BUDGET:g}s, "
              f"{took - CHAIN_KEEPER_BUDGET:.1f}s past it); {len(critical)} CRITICAL line(s); stack logged: {stack}")
        for line in critical:
            print(f"  {line}")
        again = NodeProcess(workdir / "hang")
        try:
            height = (again.stats() or {}).get("height")
            print(f"hang: restarted on the same data dir: height {height} (was 40)")
            ok = code == 1 and took <= CHAIN_KEEPER_BUDGET + 10 and len(critical) == 1 and stack and height == 40
        finally:
            again.stop()
    longer = make_chain(80, 2)
    with ScriptedPeer(longer, seed=3) as peer:
        node = NodeProcess(workdir / "hang-consensus", peers=[peer.address])
        try:
            wait(lambda: (node.stats() or {}).get("height") == 80, 60, "the first sync")
            old = node.actor("ConsensusRunner")["urn"]
            stalled = time.monotonic()
            assert node.post("/admin/stall/ConsensusRunner", {"seconds": 600}) == 202
            wait(lambda: (e := node.actor("ConsensusRunner"))["urn"] not in (None, old) and e["alive"], 120,
                 "a new ConsensusRunner")
            replaced = time.monotonic() - stalled
            peer.blocks = make_chain(120, 2)  # the peer's chain grows: the node must follow
            peer.claim = None
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # as a peer that sees it would
                sock.sendto(b'{"type": "CONSENSUS"}', ("127.0.0.1", node.port))
            wait(lambda: (node.stats() or {}).get("height") == 120, 200, "a sync after the replacement")
            synced = time.monotonic() - stalled
            entry = node.actor("ConsensusRunner")
            print(f"hang: ConsensusRunner stalled 600 s: replaced after {replaced:.1f}s "
                  f"(instances {entry['instances']}, last_error {entry['last_error']!r}); synced 120 blocks "
                  f"{synced:.1f}s after the stall")
            ok = ok and entry["instances"] == 1
        finally:
            node.stop()
    return ok


def scenario_idle(seconds: float, workdir: Path) -> bool:
    node = NodeProcess(workdir / "idle")
    try:
        wait(lambda: node.health()["status"] == "ok", 20, "ok")
        process = psutil.Process(node.proc.pid)
        time.sleep(5)  # past start-up
        before = process.cpu_times()
        time.sleep(seconds)
        after = process.cpu_times()
        used = (after.user - before.user) + (after.system - before.system)
        share = 100 * used / seconds
        print(f"idle: {share:.2f}% of one core over {seconds:.0f}s with the ops HTTP on and probes every 2 s "
              f"(goal at most 0.5%)")
        return share <= 0.5
    finally:
        node.stop()


def scenario_fds(workdir: Path) -> bool:
    """Descriptors exhausted through the ops port (the node's limit 256), then released."""
    gateway_port = free_port(socket.SOCK_STREAM)
    node = NodeProcess(workdir / "fds", extra=["--miner-listen", str(gateway_port), "--miner-token", "bench-token"],
                       fd_limit=256)
    held: list[socket.socket] = []
    try:
        wait(lambda: node.health()["status"] == "ok", 20, "ok before")
        before = len(node.log_lines())
        for _ in range(400):  # far more than the node has left
            try:
                held.append(socket.create_connection(("127.0.0.1", node.http_port), timeout=0.5))
            except OSError:
                pass
        for _ in range(50):  # and miners knocking meanwhile: the gateway's accept() fails with EMFILE
            try:
                held.append(socket.create_connection(("127.0.0.1", gateway_port), timeout=0.5))
            except OSError:
                pass
        time.sleep(3)  # the node runs out of descriptors meanwhile
        for sock in held:
            sock.close()
        held.clear()
        released = time.monotonic()

        def miner_in() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", gateway_port), timeout=1) as sock:
                    sock.sendall(b'{"type": "auth", "token": "bench-token"}\n')
                    sock.settimeout(1)
                    line = sock.recv(4096).split(b"\n", 1)[0]
                    return bool(line) and json.loads(line).get("type") != "error"
            except (OSError, ValueError):
                return False

        wait(miner_in, 60, "a miner accepted after the descriptors came back", interval=0.1)
        took = time.monotonic() - released
        wait(lambda: node.health()["status"] == "ok", 30, "ok after")
        lines = node.log_lines()[before:]
        about = [line for line in lines if "Too many open files" in line or "out of system resource" in line
                 or "refused" in line or "accept failed" in line]
        print(f"fds: 400 connections to the ops port and 50 to the gateway with the node's limit at 256, released: a miner accepted "
              f"{took:.2f}s later; {len(about)} log line(s) about it ({len(lines)} lines in all)")
        for line in about[:12]:
            print(f"  {line[:200]}")
        return took <= 10 and len(about) <= 10
    finally:
        for sock in held:
            sock.close()
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=3000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--only", choices=["busy", "reader", "hang", "idle", "fds"])
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.only in (None, "busy"):
            results["busy"] = scenario_busy(args.blocks, workdir)
        if args.only in (None, "reader"):
            results["reader"] = scenario_reader(workdir)
        if args.only in (None, "hang"):
            results["hang"] = scenario_hang(workdir)
        if args.only in (None, "fds"):
            results["fds"] = scenario_fds(workdir)
        if args.only in (None, "idle"):
            results["idle"] = scenario_idle(args.idle_seconds, workdir)
    print("results: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in results.items()))
    sys.exit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()
