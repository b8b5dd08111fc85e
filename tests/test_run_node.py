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


def announce_all(client: UdpClient, port: int, chain: list) -> None:
    """ANNOUNCE each block to the node at `port` and wait until its STATS says it holds them all."""
    for block in chain:
        client.send(port, wire_block(block))
    wait_for(lambda: (client.ask(port, {"type": "STATS"}, timeout=0.3) or {}).get("height") == len(chain))


def test_kill_minus_nine_and_restart_keeps_the_chain(tmp_path):
    port = free_udp_port()
    chain = make_chain(30, 2)
    proc = start_node(tmp_path, port)
    client = UdpClient()
    try:
        wait_serving(client, port)
        announce_all(client, port, chain)
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


# ------------------------------------------------------------------ start-up failures: one line, no traceback


def _one_critical_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    critical = [line for line in lines if "CRITICAL" in line]
    assert len(critical) == 1, stderr
    return critical[0]


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    return err


def test_restart_with_another_difficulty_is_refused_and_the_chain_survives(tmp_path):
    port = free_udp_port()
    chain = make_chain(15, 2)
    proc = start_node(tmp_path, port)
    client = UdpClient()
    try:
        wait_serving(client, port)
        announce_all(client, port, chain)
        _stop(proc)
        refused = run_cli("--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path / "data"),
                          "--http-port", "0")  # default difficulty 8
        assert refused.returncode == 2
        line = _one_critical_line(refused.stderr)
        assert "15 blocks at difficulty 2" in line and "--difficulty 2" in line
        proc = start_node(tmp_path, port)
        assert wait_serving(client, port) == {"type": "STATS_REPLY", "height": 15, "hash": chain[-1].hash}
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_second_node_on_a_used_data_dir_and_port_clash_are_one_line_each(tmp_path):
    port = free_udp_port()
    proc = start_node(tmp_path, port)
    client = UdpClient()
    try:
        wait_serving(client, port)
        same_dir = run_cli("--host", "127.0.0.1", "--port", str(free_udp_port()), "--difficulty", "2",
                           "--data-dir", str(tmp_path / "data"), "--http-port", "0")
        assert same_dir.returncode == 1
        assert f"in use by pid {proc.pid}" in _one_critical_line(same_dir.stderr)
        clash = run_cli("--host", "127.0.0.1", "--port", str(port), "--difficulty", "2",
                        "--data-dir", str(tmp_path / "other"), "--http-port", "0")
        assert clash.returncode == 1
        assert f"UDP port {port} is in use" in _one_critical_line(clash.stderr)
        assert wait_serving(client, port)["type"] == "STATS_REPLY"  # the first node is unharmed
    finally:
        client.close()
        _stop(proc)


def test_corrupt_chain_file_is_one_line_and_left_untouched(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    garbage = os.urandom(8192)
    (data_dir / "chain.sqlite3").write_bytes(garbage)
    result = run_cli("--host", "127.0.0.1", "--port", str(free_udp_port()), "--data-dir", str(data_dir), "--http-port", "0")
    assert result.returncode == 1
    assert "chain.sqlite3 is not an SQLite database" in _one_critical_line(result.stderr)
    assert (data_dir / "chain.sqlite3").read_bytes() == garbage
    verbose = run_cli("--host", "127.0.0.1", "--port", str(free_udp_port()), "--data-dir", str(data_dir),
                      "--http-port", "0", "--verbose")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_a_data_dir_that_is_a_file_is_one_line_without_a_usage_block(tmp_path):
    not_a_dir = tmp_path / "chain-file"
    not_a_dir.write_text("not a directory")
    result = run_cli("--host", "127.0.0.1", "--port", str(free_udp_port()), "--data-dir", str(not_a_dir),
                     "--http-port", "0")
    assert result.returncode != 0
    assert "Usage:" not in result.stderr and "Try '" not in result.stderr, result.stderr
    assert f"data dir {not_a_dir} is not a directory" in _one_critical_line(result.stderr)
    assert not_a_dir.read_text() == "not a directory"  # left as it was


def test_a_host_not_on_this_machine_is_one_line(tmp_path):
    # 192.0.2.1 (TEST-NET-1) is never a local address; binding it fails locally, nothing is sent.
    result = run_cli("--host", "192.0.2.1", "--port", str(free_udp_port()), "--data-dir", str(tmp_path / "d"),
                     "--http-port", "0")
    assert result.returncode == 1
    assert "--host 192.0.2.1 is not an address of this machine" in _one_critical_line(result.stderr)


def test_a_lonely_node_says_how_to_join_and_where_its_page_is(tmp_path):
    from tests.helpers import free_tcp_port

    port, http_port = free_udp_port(), free_tcp_port()
    proc = start_node(tmp_path, port, "--http-port", str(http_port))
    client = UdpClient()
    try:
        wait_serving(client, port)
        time.sleep(0.3)
    finally:
        client.close()
        err = _stop(proc)
    assert proc.returncode == 0
    lonely = [line for line in err.splitlines() if "no --peer given" in line]
    assert len(lonely) == 1 and "--peer HOST:PORT" in lonely[0] and "silicon.cs.umanitoba.ca:8999" in lonely[0]
    assert f"status page (dashboard, block explorer): http://127.0.0.1:{http_port}/" in err


def test_a_node_with_a_peer_says_whom_it_joins_through(tmp_path):
    port = free_udp_port()
    proc = start_node(tmp_path, port, "--peer", "127.0.0.1:9")
    client = UdpClient()
    try:
        wait_serving(client, port)
        time.sleep(0.3)
    finally:
        client.close()
        err = _stop(proc)
    assert "no --peer given" not in err and "joining through 127.0.0.1:9" in err


def test_options_before_a_subcommand_are_used_or_refused():
    from tests.helpers import free_tcp_port

    free = free_tcp_port()
    result = run_cli("--http-port", str(free), "status")
    assert result.returncode == 4
    assert f"127.0.0.1:{free}/health" in result.stderr and "Is the node running" in result.stderr
    refused = run_cli("--difficulty", "3", "status")
    assert refused.returncode == 2 and "--difficulty is an option of the node itself" in refused.stderr


def test_version_is_the_one_in_version_py():
    from version import __version__

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout == f"pow-node {__version__}\n"


def test_a_json_log_file_from_a_running_node(tmp_path):
    import json

    port = free_udp_port()
    log_file = tmp_path / "node.log"
    proc = start_node(tmp_path, port, "--log-format", "json", "--log-file", str(log_file))
    client = UdpClient()
    try:
        wait_serving(client, port)
    finally:
        client.close()
        err = _stop(proc)
    assert "INFO" not in err  # the terminal only gets warnings once there is a log file
    docs = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(doc) for doc in docs)
    assert any(doc["message"].startswith("node cli up on udp 127.0.0.1:") for doc in docs)
    assert proc.returncode == 0 and any(doc["message"] == "all actors stopped" for doc in docs)
