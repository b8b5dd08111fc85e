"""The ops HTTP's /health latency while slow uploaders and idle connections hold it, on loopback only.

Run by hand:  python bench/bench_http_abuse.py [--seconds 30] [--uploaders 64] [--idle 64] [--root DIR]

The node runs as its own process (`run_node.py` from --root, this tree by default:
point it at a checkout of older code to compare) with its ops HTTP on. The attack:
`--uploaders` connections each declaring a 64 KiB body (POST /admin/stall/...) and
sending one byte of it every --trickle seconds, plus `--idle` connections that
send nothing; any of them the server closes is opened again at once, so the load
stays whole for the run. Measured in the same run: GET /health every 0.25 s,
quiet and then under that load (status codes, median, p95 and max latency).
"""
from __future__ import annotations

import argparse
import http.client
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

UPLOAD = (b"POST /admin/stall/ChainKeeper HTTP/1.1\r\nHost: 127.0.0.1\r\n"
          b"Content-Type: application/json\r\nContent-Length: 65536\r\n\r\n{")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Attack:
    """Keeps `uploaders` slow uploads and `idle` silent connections open until stopped."""

    def __init__(self, port: int, uploaders: int, idle: int, trickle: float) -> None:
        self.port, self.uploaders, self.idle, self.trickle = port, uploaders, idle, trickle
        self.reopened = 0
        self.answers: dict[bytes, int] = {}  # what the server said to the uploads it cut
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Attack":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    def _open(self, upload: bool) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            if upload:
                sock.sendall(UPLOAD)
            sock.setblocking(False)
            return sock
        except OSError:
            return None

    def _run(self) -> None:
        kinds: dict[socket.socket, bool] = {}
        last_byte = time.monotonic()
        try:
            while not self._stop.is_set():
                want = {True: self.uploaders, False: self.idle}
                for kind in (True, False):
                    while sum(1 for k in kinds.values() if k is kind) < want[kind]:
                        sock = self._open(kind)
                        if sock is None:
                            break
                        kinds[sock] = kind
                readable, _, _ = select.select(list(kinds), [], [], 0.2)
                for sock in readable:  # the server answered or closed: open another
                    try:
                        data = sock.recv(4096)
                    except OSError:
                        data = b""
                    status = data[9:12] if data.startswith(b"HTTP/") else b"closed"
                    self.answers[status] = self.answers.get(status, 0) + 1
                    del kinds[sock]
                    sock.close()
                    self.reopened += 1
                if time.monotonic() - last_byte >= self.trickle:
                    last_byte = time.monotonic()
                    for sock, kind in list(kinds.items()):
                        if kind:
                            try:
                                sock.send(b" ")
                            except OSError:
                                del kinds[sock]
                                sock.close()
        finally:
            for sock in kinds:
                sock.close()


def sample_health(port: int, seconds: float, interval: float = 0.25) -> tuple[list[float], dict[int, int], int]:
    """/health every `interval` for `seconds`: (latencies, count per status, answers that were a 200 within 1 s)."""
    latencies: list[float] = []
    good = 0
    statuses: dict[int, int] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            status = response.status
            conn.close()
        except OSError:
            status = 0
        latencies.append(time.monotonic() - start)
        statuses[status] = statuses.get(status, 0) + 1
        good += status == 200 and latencies[-1] <= 1.0
        time.sleep(max(0.0, interval - (time.monotonic() - start)))
    return latencies, statuses, good


def describe(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return (f"median {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.1f} ms over {len(ordered)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--quiet-seconds", type=float, default=10.0)
    parser.add_argument("--uploaders", type=int, default=64)
    parser.add_argument("--idle", type=int, default=64)
    parser.add_argument("--trickle", type=float, default=3.0, help="seconds between an uploader's bytes")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()

    udp, port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(udp), "--name", "bench",
                   "--difficulty", "8", "--data-dir", str(Path(tmp) / "node"), "--http-port", str(port),
                   "--log-file", str(Path(tmp) / "node.log")]
        proc = subprocess.Popen(command, cwd=args.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sample_health(port, 0.01)[1].get(200) is None:
                time.sleep(0.2)
            quiet, quiet_status, _ = sample_health(port, args.quiet_seconds)
            with Attack(port, args.uploaders, args.idle, args.trickle) as attack:
                time.sleep(2)  # every connection open and past its headers
                loud, loud_status, loud_good = sample_health(port, args.seconds)
        finally:
            proc.terminate()
            proc.wait(10)
    within = loud_good / len(loud)
    print(f"root: {args.root}")
    print(f"/health quiet: {describe(quiet)}; statuses {quiet_status}")
    print(f"/health under {args.uploaders} slow uploaders (a byte every {args.trickle:g} s) + {args.idle} idle: "
          f"{describe(loud)}; statuses {loud_status}; a 200 within 1 s: {within:.1%}")
    print(f"p95 loaded/quiet: {sorted(loud)[int(0.95 * (len(loud) - 1))] / sorted(quiet)[int(0.95 * (len(quiet) - 1))]:.2f}x; "
          f"attack connections reopened after the server ended them: {attack.reopened} (answers: "
          f"{ {k.decode(): v for k, v in attack.answers.items()} })")


if __name__ == "__main__":
    main()
