"""A real full disk under a running node (issue 11), by hand, as root.

Run:  python bench/bench_storage_full.py

Re-runs itself in a private mount namespace (`unshare --mount`) with a 1 MiB
tmpfs as the data dir's file system, plus a filler file on it. A `run_node.py`
process is sent ANNOUNCEs of a pre-mined chain (loopback only) until its writes
fail. Then, while the disk is full: more ANNOUNCEs, and STATS / GET_BLOCK, which
must still be answered. Then the filler is deleted (space is back) and the node
must take blocks again after its backoff. Prints the ERROR lines about storage
(one is expected) and the heights.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.chains import make_chain  # noqa: E402
from tests.helpers import padded, wire_block  # noqa: E402


def ask(sock: socket.socket, port: int, payload: dict, expect: str) -> dict | None:
    sock.sendto(json.dumps(padded(payload)).encode(), ("127.0.0.1", port))
    sock.settimeout(1.0)
    try:
        while True:
            message = json.loads(sock.recvfrom(65536)[0])
            if message.get("type") == expect:
                return message
    except socket.timeout:
        return None


def inner(mount: Path) -> None:
    (mount / "filler").write_bytes(b"\0" * 300 * 1024)
    data_dir = mount / "node"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = Path(tempfile.mkdtemp()) / "node.log"
    with open(log_path, "wb") as log:
        node = subprocess.Popen([sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--difficulty", "1",
                                 "--data-dir", str(data_dir), "--http-port", "0"], cwd=ROOT, stdout=log, stderr=log)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    try:
        deadline = time.monotonic() + 20
        while ask(client, port, {"type": "STATS"}, "STATS_REPLY") is None:
            if time.monotonic() > deadline:
                raise SystemExit("node did not start")
        chain = make_chain(3000, 1)
        height, stalled = 0, 0
        for block in chain:
            client.sendto(json.dumps(wire_block(block)).encode(), ("127.0.0.1", port))
            reply = ask(client, port, {"type": "STATS"}, "STATS_REPLY")
            new_height = reply["height"] if reply else height
            stalled = stalled + 1 if new_height == height else 0
            height = new_height
            if stalled >= 20:
                break
        print(f"disk full at height {height}")
        answered = 0
        for i in range(30):  # still serving what is stored while writes fail
            client.sendto(json.dumps(wire_block(chain[height])).encode(), ("127.0.0.1", port))
            stats = ask(client, port, {"type": "STATS"}, "STATS_REPLY")
            got = ask(client, port, {"type": "GET_BLOCK", "height": i % height}, "GET_BLOCK_REPLY")
            answered += bool(stats and stats["height"] == height and got and got["hash"] == chain[i % height].hash)
            time.sleep(0.3)  # ~10 s full: several retries, one ERROR line
        print(f"while full: {answered}/30 STATS+GET_BLOCK pairs answered correctly; node up: {node.poll() is None}")
        (mount / "filler").unlink()  # space is back
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            client.sendto(json.dumps(wire_block(chain[height])).encode(), ("127.0.0.1", port))
            reply = ask(client, port, {"type": "STATS"}, "STATS_REPLY")
            if reply and reply["height"] > height:
                break
            time.sleep(0.5)
        print(f"after freeing space: height {reply['height'] if reply else None} (was {height})")
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(20)
    lines = log_path.read_text(errors="replace").splitlines()
    storage = [line for line in lines if "storage" in line and ("ERROR" in line or "writable again" in line)]
    if os.environ.get("SHOW_LOG"):
        print("\n".join(line for line in lines if "ChainKeeper" in line or "Consensus" in line)[-6000:])
    print(f"storage log lines ({sum('ERROR' in line for line in storage)} ERROR):")
    for line in storage:
        print("   ", line[:200])


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--inner":
        inner(Path(sys.argv[2]))
        return
    if os.geteuid() != 0:
        raise SystemExit("needs root (unshare --mount, mount -t tmpfs)")
    mount = Path(tempfile.mkdtemp(prefix="full-disk-"))
    script = f"mount -t tmpfs -o size=1m tmpfs {mount} && exec {sys.executable} {Path(__file__).resolve()} --inner {mount}"
    sys.exit(subprocess.run(["unshare", "--mount", "sh", "-c", script], cwd=ROOT).returncode)


if __name__ == "__main__":
    main()
