"""Fault injection: every actor crashed again and again comes back; nothing is lost.

Through the supervisor directly (in-process) and through POST /admin/crash/{actor}
on a real node process, as a chaos drill would.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from sim.chains import make_chain
from supervisor import SupervisorPolicy
from tests.helpers import health, UdpClient, free_tcp_port, free_udp_port, node_config, wait_for, wire_block
from tests.ops.ops_helpers import http, wait_http_ready

ROOT = Path(__file__).resolve().parents[2]
ACTORS = ["ChainKeeper", "NetworkIO", "GossipManager", "ConsensusRunner"]
# What the supervisor logs when a stop runs into its deadline (an actor that did not end when asked).
_STOP_DEADLINE_HIT = "did not stop within"
_ABANDONED_AT_SHUTDOWN = "abandoned at shutdown"


def entry(health, name):
    return next(a for a in health["actors"] if a["name"] == name)


@pytest.mark.parametrize("name", ACTORS)
def test_repeated_crashes_lose_nothing(make_node, client, name):
    node = make_node()
    chain = make_chain(20, 2)
    for block in chain[:10]:
        client.send(node.config.port, wire_block(block))
    wait_for(lambda: (client.ask(node.config.port, {"type": "STATS"}, timeout=0.3) or {}).get("height") == 10)
    client.send(node.config.port, {"type": "NEW_WORD", "word": "keepme"})
    wait_for(lambda: node.ctx.registry.proxy("ChainKeeper").pending_words().get(timeout=5) == ["keepme"])
    for i in range(5):
        node.ctx.registry.proxy(name).crash.defer(f"drill {i}")
        wait_for(lambda: entry(health(node), name)["restarts"] == i + 1 and health(node)["status"] == "ok", timeout=10)
        stats = client.ask(node.config.port, {"type": "STATS"}, timeout=1.0)
        assert stats is not None and stats["height"] >= 10  # never shortened, always served
    # Still fully working: it takes new blocks and kept the queued word.
    for block in chain[10:]:
        client.send(node.config.port, wire_block(block))
    wait_for(lambda: (client.ask(node.config.port, {"type": "STATS"}, timeout=0.3) or {}).get("height") == 20)
    assert node.ctx.registry.proxy("ChainKeeper").pending_words().get(timeout=5) == ["keepme"]


def _start_ready(tmp_path: Path, client: UdpClient) -> tuple[subprocess.Popen, int, int]:
    """A node process with fault injection, serving UDP and its ops HTTP: (process, udp port, http port)."""
    port, http_port = free_udp_port(), free_tcp_port()
    proc = subprocess.Popen(
        [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--name", "chaos", "--difficulty", "2",
         "--miners", "0", "--data-dir", str(tmp_path / "d"), "--http-port", str(http_port), "--enable-fault-injection"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: client.ask(port, {"type": "STATS"}, timeout=0.3), timeout=15)
        wait_http_ready(http_port)
    except BaseException:
        proc.kill()
        client.close()
        raise
    return proc, port, http_port


def test_crash_endpoint_drill_on_a_node_process(tmp_path):
    client = UdpClient()
    proc, port, http_port = _start_ready(tmp_path, client)
    try:
        chain = make_chain(15, 2)
        for block in chain:
            client.send(port, wire_block(block))
        wait_for(lambda: (client.ask(port, {"type": "STATS"}, timeout=0.3) or {}).get("height") == 15)
        for name in ACTORS:
            before = entry(http(http_port, "/health").json(), name)
            assert http(http_port, f"/admin/crash/{name}", method="POST").status == 202
            wait_for(lambda: entry(http(http_port, "/health").json(), name)["restarts"] == before["restarts"] + 1, timeout=10)
            wait_for(lambda: http(http_port, "/health").json()["status"] == "ok", timeout=10)
            after = entry(http(http_port, "/health").json(), name)
            assert after["urn"] != before["urn"] and after["alive"]
            stats = wait_for(lambda: client.ask(port, {"type": "STATS"}, timeout=0.5), timeout=5)
            assert stats == {"type": "STATS_REPLY", "height": 15, "hash": chain[-1].hash}
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_passing_the_core_restart_intensity_ends_run_node_with_exit_1(tmp_path, monkeypatch, caplog):
    """run_node (the CLI's body, in-process) with a small core budget: exit 1 and a CRITICAL line."""
    import node as node_module
    from run_node import run_node

    policy = SupervisorPolicy(max_restarts=3, period=60.0, backoff_base=0.02, backoff_max=0.05, watch_interval=0.05)
    monkeypatch.setattr(node_module, "NODE_POLICY", policy)
    http_port = free_tcp_port()
    config = node_config(tmp_path, http_port=http_port, enable_fault_injection=True)
    stop = threading.Event()

    def crash_loop():
        while not stop.is_set():
            try:
                http(http_port, "/admin/crash/GossipManager", method="POST", timeout=1.0)
            except OSError:
                pass  # not listening yet, or going away with the node
            time.sleep(0.05)

    crasher = threading.Thread(target=crash_loop, daemon=True)
    crasher.start()
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with caplog.at_level(logging.INFO):
            code = run_node(config)
    finally:
        stop.set()
        crasher.join(timeout=5)
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    assert code == 1
    messages = [r.getMessage() for r in caplog.records]
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "restart intensity exceeded" in critical[0] and "GossipManager" in critical[0], critical
    # The restarts it counted were the crash loop's, each scheduled with this test's short backoff ...
    delays = [float(m.rsplit(" in ", 1)[1].rstrip("s")) for m in messages if m.startswith("GossipManager down (")]
    assert len(delays) == policy.max_restarts and all(d <= policy.backoff_max * 1.25 for d in delays), delays
    # ... and the shutdown that followed ran into no stop deadline: no actor was left to time out.
    assert not [m for m in messages if _STOP_DEADLINE_HIT in m or _ABANDONED_AT_SHUTDOWN in m], messages


def _marked_processes(mark: str) -> list[psutil.Process]:
    """Every live process started with POW_TEST_MARK=mark in its environment (the node and its workers)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("POW_TEST_MARK") == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize("actor", ["MinerActor-0", "NetworkIO"])
def test_sigterm_right_after_a_crash_exits_0_and_leaves_no_process(tmp_path, actor):
    port, http_port = free_udp_port(), free_tcp_port()
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--name", "term", "--difficulty", "40",
         "--miners", "1", "--data-dir", str(tmp_path / "d"), "--http-port", str(http_port), "--enable-fault-injection"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "POW_TEST_MARK": mark},
    )
    try:
        wait_http_ready(http_port)
        wait_for(lambda: entry(http(http_port, "/health").json(), "MinerActor-0").get("pid"), timeout=20)
        assert len(_marked_processes(mark)) >= 2  # the node and its worker
        assert http(http_port, f"/admin/crash/{actor}", method="POST").status == 202
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    # A clean stop, not one that waited out a deadline: every actor, the restarted one too, ended when asked.
    assert _STOP_DEADLINE_HIT not in err and _ABANDONED_AT_SHUTDOWN not in err, err[-2000:]
    wait_for(lambda: not _marked_processes(mark), timeout=15)


def test_sigterm_to_the_whole_process_group_is_a_clean_shutdown_not_a_miner_crash(tmp_path):
    """`timeout`, Ctrl-C and service managers signal every process of the group: the
    workers must leave stopping to the node, not die first and look like a crash."""
    port, http_port = free_udp_port(), free_tcp_port()
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--name", "group", "--difficulty", "40",
         "--miners", "2", "--data-dir", str(tmp_path / "d"), "--http-port", str(http_port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "POW_TEST_MARK": mark},
        start_new_session=True,
    )
    try:
        wait_http_ready(http_port)
        for name in ("MinerActor-0", "MinerActor-1"):
            wait_for(lambda name=name: entry(http(http_port, "/health").json(), name).get("pid"), timeout=20)
        assert len(_marked_processes(mark)) >= 3  # the node and its two workers
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "WorkerDied" not in err and "restart #" not in err, err[-2000:]
    wait_for(lambda: not _marked_processes(mark), timeout=3)
