"""`--bind`: the UDP socket binds one address while GOSSIP advertises another (NAT, a relay in front).

Real processes on loopback: every address of 127.0.0.0/8 is local on Linux, so the
node binds 127.77.0.1 and advertises 127.78.0.1, where a test socket plays the
network's side of the NAT.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import free_udp_port, padded, wait_for

ROOT = Path(__file__).resolve().parent

BOUND, ADVERTISED = "127.77.0.1", "127.78.0.1"


def _udp(host: str, port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    sock.settimeout(0.5)
    return sock


def _start(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "run_node.py", "--port", str(port), "--name", "natted", "--difficulty", "2",
            "--miners", "0", "--data-dir", str(tmp_path / "data"), "--http-port", "0", *extra]
    return subprocess.Popen(args, cwd=ROOT.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_bind_listens_on_one_address_and_gossip_names_the_other(tmp_path):
    port = free_udp_port()
    peer = _udp("127.0.0.1")  # a well-known peer: the node's GOSSIP must tell it to answer the advertised address
    proc = _start(tmp_path, port, "--host", ADVERTISED, "--bind", BOUND, "--peer", f"127.0.0.1:{peer.getsockname()[1]}")
    client = _udp("127.0.0.1")
    try:
        def stats_reply() -> dict | None:
            client.sendto(json.dumps(padded({"type": "STATS"})).encode(), (BOUND, port))
            try:
                return json.loads(client.recvfrom(65536)[0])
            except socket.timeout:
                return None

        assert wait_for(stats_reply, timeout=30, interval=0.2)["type"] == "STATS_REPLY"  # served on the bound address

        def gossip() -> dict | None:
            try:
                data, source = peer.recvfrom(65536)
            except socket.timeout:
                return None
            message = json.loads(data)
            return {**message, "source": source} if message.get("type") == "GOSSIP" else None

        hello = wait_for(gossip, timeout=30, interval=0)
        assert (hello["host"], hello["port"]) == (ADVERTISED, port)  # where peers must answer
        assert hello["source"] == (BOUND, port)  # sent from the bound socket
        # Nothing of the node is on the advertised address itself: the NAT (here: nobody) owns it.
        probe = _udp(ADVERTISED, port)
        probe.close()
    finally:
        _stop(proc)
        client.close()
        peer.close()


def test_without_bind_the_host_is_bound_as_before(tmp_path):
    port = free_udp_port()
    proc = _start(tmp_path, port, "--host", BOUND)
    client = _udp("127.0.0.1")
    try:
        def stats_reply() -> dict | None:
            client.sendto(json.dumps(padded({"type": "STATS"})).encode(), (BOUND, port))
            try:
                return json.loads(client.recvfrom(65536)[0])
            except socket.timeout:
                return None

        assert wait_for(stats_reply, timeout=30, interval=0.2)["type"] == "STATS_REPLY"
    finally:
        _stop(proc)
        client.close()


def test_a_bind_address_not_on_this_machine_is_one_line_naming_bind(tmp_path):
    # 192.0.2.1 (TEST-NET-1) is never local: binding it fails here, nothing is sent.
    result = subprocess.run([sys.executable, "run_node.py", "--host", ADVERTISED, "--bind", "192.0.2.1",
                             "--port", str(free_udp_port()), "--data-dir", str(tmp_path / "d"), "--http-port", "0"],
                            cwd=ROOT.parent, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    critical = [line for line in result.stderr.splitlines() if "CRITICAL" in line]
    assert len(critical) == 1 and "--bind 192.0.2.1 is not an address of this machine" in critical[0], result.stderr
