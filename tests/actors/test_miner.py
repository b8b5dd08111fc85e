"""MinerActor in a real node: valid blocks, NEW_WORD, announces, worker supervision."""
from __future__ import annotations

import os
import signal
import time

import psutil

from chain.block import check_chain
from tests.helpers import health, UdpClient, metric, wait_for

NO_BLOCKS = 20  # a difficulty nothing reaches in a test: the worker just hashes


def miner_entry(node, name="MinerActor-0"):
    return next(a for a in health(node)["actors"] if a["name"] == name)


def details(node, name="MinerActor-0"):
    proxy = node.ctx.registry.proxy(name)
    return proxy.health_details().get(timeout=2) if proxy is not None else None


def chain_of(node):
    return node.ctx.registry.proxy("ChainKeeper").get_blocks(0, 10_000).get(timeout=2)


def test_mined_blocks_are_valid_named_and_announced(make_node):
    peer = UdpClient()  # a well-known peer: every mined block is ANNOUNCEd to it
    try:
        node = make_node(miners=1, difficulty=3, peers=(("127.0.0.1", peer.address[1]),))
        announce = peer.recv(timeout=10, expect="ANNOUNCE")
        wait_for(lambda: len(chain_of(node)) >= 3, timeout=10)
        blocks = chain_of(node)
        check_chain(blocks, 3)
        now = time.time()
        for block in blocks:
            assert block.mined_by == node.config.name
            assert 1 <= len(block.messages) <= 10
            assert abs(block.timestamp - now) < 60
        assert announce is not None
        assert announce["hash"] in {b.hash for b in blocks}
        assert announce["minedBy"] == node.config.name
        info = details(node)
        assert info["blocks_found"] >= 3 and info["hashes_total"] > 0
        assert metric(node, "node_blocks_mined_total") >= 3
    finally:
        peer.close()


def test_new_word_ends_up_in_a_block(make_node, client):
    node = make_node(miners=1, difficulty=3)
    wait_for(lambda: len(chain_of(node)) >= 1, timeout=10)
    client.send(node.config.port, {"type": "NEW_WORD", "word": "hello-miners"})
    client.send(node.config.port, {"type": "NEW_WORD", "word": "second word"})
    block = wait_for(lambda: next((b for b in chain_of(node) if "hello-miners" in b.messages), None), timeout=10)
    assert "second word" in block.messages  # both fit in one block, in arrival order
    assert block.messages.index("hello-miners") < block.messages.index("second word")
    assert block.mined_by == node.config.name
    assert node.ctx.registry.proxy("ChainKeeper").word_count().get(timeout=2) == 0  # removed once mined
    check_chain(chain_of(node), 3)


def test_worker_killed_with_sigkill_is_replaced(make_node):
    node = make_node(miners=1, difficulty=NO_BLOCKS)
    first = wait_for(lambda: (d := details(node)) and d["hashrate"] > 0 and d)
    assert set(first) >= {"pid", "hashrate", "cpu_percent", "rss_bytes", "hashes_total", "blocks_found"}
    assert first["rss_bytes"] > 0 and isinstance(first["cpu_percent"], float)
    assert metric(node, "node_miner_hashrate_hashes_per_second", miner="0", backend="process") > 0
    old_pid = first["pid"]
    assert psutil.Process(old_pid).ppid() == os.getpid()  # a worker process of ours, not a thread

    killed_at = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: miner_entry(node)["restarts"] == 1 and miner_entry(node)["alive"], timeout=5)
    noticed = time.monotonic() - killed_at
    assert noticed < 2.0, f"worker death noticed after {noticed:.2f}s"
    assert "WorkerDied" in (miner_entry(node)["last_error"] or "")

    fresh = wait_for(lambda: (d := details(node)) and d["pid"] != old_pid and d["hashrate"] > 0 and d)
    assert psutil.pid_exists(fresh["pid"]) and psutil.Process(fresh["pid"]).status() != psutil.STATUS_ZOMBIE
    wait_for(lambda: not psutil.pid_exists(old_pid), timeout=5)  # reaped, not left a zombie
    assert fresh["hashrate"] > 0  # mining goes on
    assert miner_entry(node)["restarts"] == 1


def test_crashed_miner_actor_is_restarted_without_leaking_its_worker(make_node):
    node = make_node(miners=1, difficulty=NO_BLOCKS)
    old_pid = wait_for(lambda: (d := details(node)) and d["pid"])
    node.ctx.registry.proxy("MinerActor-0").crash.defer("test")
    wait_for(lambda: miner_entry(node)["restarts"] == 1 and miner_entry(node)["alive"], timeout=5)
    new_pid = wait_for(lambda: (d := details(node)) and d["pid"])
    assert new_pid != old_pid
    wait_for(lambda: not psutil.pid_exists(old_pid), timeout=5)  # terminated and reaped by release()
    children = {p.pid for p in psutil.Process().children()}
    assert new_pid in children and old_pid not in children


def test_stalled_worker_is_replaced(make_node, monkeypatch):
    monkeypatch.setattr("actors.miner.STALL_TIMEOUT", 1.0)
    node = make_node(miners=1, difficulty=NO_BLOCKS)
    old_pid = wait_for(lambda: (d := details(node)) and d["hashes_total"] > 0 and d["pid"])
    os.kill(old_pid, signal.SIGSTOP)  # alive, but not hashing or reporting
    wait_for(lambda: miner_entry(node)["restarts"] == 1 and miner_entry(node)["alive"], timeout=5)
    assert "stalled" in miner_entry(node)["last_error"]
    wait_for(lambda: (d := details(node)) and d["pid"] != old_pid and d["hashrate"] > 0)
    wait_for(lambda: not psutil.pid_exists(old_pid), timeout=5)


def test_a_worker_killed_by_a_group_signal_while_starting_is_replaced_not_counted_as_a_crash(make_node, monkeypatch, caplog):
    """Regression (CI beside CPU burners): SIGTERM to the whole process group reached a worker
    whose interpreter was still starting (it ignores the signal only once it runs); it died
    with code -15 and the MinerActor crashed with WorkerDied while the node was shutting down."""
    from mining.worker_backends import ProcessWorker

    started: list[int] = []

    class FirstOneSignalled(ProcessWorker):
        def __init__(self, index: int) -> None:
            super().__init__(index)
            started.append(self.pid)
            if len(started) == 1:
                os.kill(self.pid, signal.SIGTERM)  # before it can have set SIG_IGN

    monkeypatch.setattr("actors.miner.ProcessWorker", FirstOneSignalled)
    caplog.set_level("INFO", logger="node")
    node = make_node(miners=1, difficulty=NO_BLOCKS)
    fresh = wait_for(lambda: (d := details(node)) and d["hashrate"] > 0 and d, timeout=20)
    assert len(started) == 2 and fresh["pid"] == started[1]
    assert miner_entry(node)["restarts"] == 0 and miner_entry(node)["last_error"] is None
    assert "ended by SIGTERM while still starting" in caplog.text
    wait_for(lambda: not psutil.pid_exists(started[0]), timeout=5)  # reaped


def test_a_running_worker_ignores_a_group_sigterm(make_node):
    node = make_node(miners=1, difficulty=NO_BLOCKS)
    pid = wait_for(lambda: (d := details(node)) and d["hashes_total"] > 0 and d["pid"])
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    time.sleep(0.5)
    assert details(node)["pid"] == pid and psutil.pid_exists(pid)
    assert miner_entry(node)["restarts"] == 0
