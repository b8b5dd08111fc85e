"""The command line as a user runs it: real processes, real signals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.chains import make_chain
from tests.helpers import UdpClient, free_udp_port, real_blocks, wait_for, wire_block

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_node.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def start_node(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--name", "cli",
            "--difficulty", "2", "--miners", "0", "--data-dir", str(tmp_path / "data"), "--http-port", "0", *extra]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_serving(client: UdpClient, port: int, timeout: float = 15) -> dict:
    return wait_for(lambda: client.ask(port, {"type": "STATS"}, timeout=0.3), timeout=timeout)


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "0"],
        ["--port", "70000"],
        ["--port", "abc"],
        ["--peer", "nohostport"],
        ["--peer", "host:99999"],
        ["--miners", "lots"],
        ["--miners", "-1"],
        ["--difficulty", "0"],
        ["--http-port", "-5"],
        ["--no-such-option"],
        ["--miner-listen", "7000"],
    ],
)
def test_bad_arguments_exit_2_with_one_line_error(args):
    result = run_cli(*args)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr


def test_help_lists_the_options():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ["--host", "--port", "--peer", "--name", "--difficulty", "--miners", "--data-dir",
                   "--http-port", "--enable-fault-injection"]:
        assert option in result.stdout


def test_sigterm_and_sigint_shut_down_cleanly(tmp_path):
    for sig in (signal.SIGTERM, signal.SIGINT):
        port = free_udp_port()
        proc = start_node(tmp_path, port, "--peer", "127.0.0.1:9")
        client = UdpClient()
        try:
            wait_serving(client, port)
            proc.send_signal(sig)
            assert proc.wait(timeout=15) == 0
        finally:
            client.close()
            if proc.poll() is None:
                proc.kill()


def test_unresolvable_peer_is_one_warning_and_node_serves(tmp_path):
    # "no-such..host" fails in the resolver itself (an empty label), so the test
    # sends no DNS query anywhere: only loopback traffic.
    port = free_udp_port()
    proc = start_node(tmp_path, port, "--peer", "no-such..host:8999", "--peer", "127.0.0.1:9")
    client = UdpClient()
    try:
        reply = wait_serving(client, port)
        assert reply["type"] == "STATS_REPLY"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0
        warnings = [line for line in err.splitlines() if "no-such..host" in line and "WARNING" in line]
        assert len(warnings) == 1, err
        assert "Traceback" not in err
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()


def test_kill_minus_nine_and_restart_keeps_the_chain(tmp_path):
    port = free_udp_port()
    chain = make_chain(30, 2)
    proc = start_node(tmp_path, port)
    client = UdpClient()
    try:
        wait_serving(client, port)
        for block in chain:
            client.send(port, wire_block(block))
        wait_for(lambda: (client.ask(port, {"type": "STATS"}, timeout=0.3) or {}).get("height") == 30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        proc = start_node(tmp_path, port)
        reply = wait_serving(client, port)
        assert reply == {"type": "STATS_REPLY", "height": 30, "hash": chain[-1].hash}
        assert client.ask(port, {"type": "GET_BLOCK", "height": 17}) == wire_block(chain[17], "GET_BLOCK_REPLY")
    finally:
        client.close()
        proc.kill()
        proc.wait()


def test_real_blocks_through_the_cli_at_difficulty_8(tmp_path):
    port = free_udp_port()
    proc = subprocess.Popen([sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--peer", "127.0.0.1:9",
                             "--name", "N", "--difficulty", "8", "--miners", "0", "--data-dir", str(tmp_path / "d"), "--http-port", "0"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = UdpClient()
    try:
        wait_serving(client, port)
        for block in real_blocks():
            client.send(port, wire_block(block))
        wait_for(lambda: (client.ask(port, {"type": "STATS"}, timeout=0.3) or {}).get("height") == 2)
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_detected_host_is_an_ipv4_address_and_not_the_hostname_loopback_alias():
    import ipaddress

    import psutil

    from run_node import detect_host

    address = ipaddress.IPv4Address(detect_host())
    has_other = any(a.family.name == "AF_INET" and not ipaddress.ip_address(a.address).is_loopback
                    for addrs in psutil.net_if_addrs().values() for a in addrs)
    assert address.is_loopback != has_other or str(address) == "127.0.0.1"
