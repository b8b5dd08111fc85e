"""The poison-datagram measurement of issue 11, full length, against a real node process.

Run by hand:  python bench/bench_poison.py [--seconds 40]

Starts `run_node.py` (loopback, its own data dir, ops HTTP on), sends the poison
datagrams of tests/fault/test_poison.py for `--seconds`, waits past the next 30 s
keep-alive (which goes to whatever the peer table holds), then reads /health:
actor restarts must be 0 and the process up. Then stops the node, starts a new one
on the same data dir (peers.json included), waits past a keep-alive and reads the
restarts again. Prints the counts; loopback only.
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fault.test_poison import poison_datagrams  # noqa: E402


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(http_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=5) as response:
        return json.loads(response.read())


def start(data_dir: Path, port: int, http_port: int) -> subprocess.Popen:
    node = subprocess.Popen([sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--name", "poisoned",
                             "--difficulty", "2", "--data-dir", str(data_dir), "--http-port", str(http_port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            health(http_port)
            return node
        except OSError:
            time.sleep(0.2)
    node.kill()
    raise SystemExit("the node did not start")


def restarts(doc: dict) -> int:
    return sum(actor["restarts"] for actor in doc["actors"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args()
    port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "node"
        node = start(data_dir, port, http_port)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        datagrams = poison_datagrams()
        sent = 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            for data in datagrams:
                sender.sendto(data, ("127.0.0.1", port))
                sent += 1
            time.sleep(0.02)
        time.sleep(max(0.0, 35 - args.seconds % 30))  # past the next keep-alive
        doc = health(http_port)
        print(f"{sent} poison datagrams in {args.seconds:.0f}s; node up: {node.poll() is None}; "
              f"status {doc['status']}; actor restarts: {restarts(doc)}")
        node.send_signal(signal.SIGTERM)
        node.wait(20)
        saved = json.loads((data_dir / "peers.json").read_text())
        print(f"peers.json: {len(saved)} entries, hosts {sorted({entry['host'] for entry in saved})}")
        again = start(data_dir, port, http_port)
        time.sleep(35)  # past a keep-alive to the restored table
        doc = health(http_port)
        print(f"restart on the same data dir: up {again.poll() is None}; status {doc['status']}; actor restarts: {restarts(doc)}")
        again.send_signal(signal.SIGTERM)
        again.wait(20)


if __name__ == "__main__":
    main()
