"""MinerActor in a real node: valid blocks, NEW_WORD, announces, worker supervision."""
from __future__ import annotations

import contextlib
import os
import signal
import time
import types

import psutil
import pykka
import pytest

import actors.miner as miner_module
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
    second = wait_for(lambda: next((b for b in chain_of(node) if "second word" in b.messages), None), timeout=10)
    block = next(b for b in chain_of(node) if "hello-miners" in b.messages)
    # Mined in arrival order: in one block when both were queued before the miner built its next work
    # (the usual case); on a loaded machine a block found between the two arrivals carries the first alone.
    assert block.height <= second.height
    if block.height == second.height:
        assert block.messages.index("hello-miners") < block.messages.index("second word")
    assert block.mined_by == node.config.name
    assert node.ctx.registry.proxy("ChainKeeper").word_count().get(timeout=2) == 0  # removed once mined
    check_chain(chain_of(node), 3)


def test_worker_killed_with_sigkill_is_replaced(make_node, monkeypatch):
    """A worker's death is noticed from the death itself (the pipe's EOF, its exit code), not from silence.

    The silence judge is put an hour away, so it cannot be what notices here: the restart
    happening at all, for an exit, is the proof, whatever the machine's speed.
    """
    monkeypatch.setattr("actors.miner.STALL_TIMEOUT", 3600.0)
    node = make_node(miners=1, difficulty=NO_BLOCKS)
    first = wait_for(lambda: (d := details(node)) and d["hashrate"] > 0 and d)
    assert set(first) >= {"pid", "hashrate", "cpu_percent", "rss_bytes", "hashes_total", "blocks_found"}
    assert first["rss_bytes"] > 0 and isinstance(first["cpu_percent"], float)
    assert metric(node, "node_miner_hashrate_hashes_per_second", miner="0", backend="process") > 0
    old_pid = first["pid"]
    assert psutil.Process(old_pid).ppid() == os.getpid()  # a worker process of ours, not a thread

    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: miner_entry(node)["restarts"] == 1 and miner_entry(node)["alive"], timeout=30)
    reason = miner_entry(node)["last_error"] or ""
    assert "WorkerDied" in reason and "exited" in reason, reason  # its death, not silence
    assert "stalled" not in reason

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


# ---------------------------------------------------------------- silent but not hung (mining/stall.py)

class FakeProbe:
    """Stands in for the actor's look at one worker's process (`pid`): what it reports, and how often it
    was asked. Any other worker (the replacement) is looked at for real."""

    def __init__(self, status="running", cpu_step=0.0, on_other=None) -> None:
        self.status = status
        self.on_other = on_other  # called (once) before another worker is first looked at
        self.cpu_step = cpu_step  # CPU seconds the "worker" burns between two looks
        self.calls = 0
        self.pid: int | None = None
        self.real = getattr(miner_module, "probe_worker", None)

    def __call__(self, process):
        if process.pid != self.pid:
            if self.on_other is not None:
                self.on_other, on_other = None, self.on_other
                on_other()
            return self.real(process)
        self.calls += 1
        return types.SimpleNamespace(status=self.status, cpu_seconds=self.calls * self.cpu_step)


def live_details(node):
    """details(), or None while the miner is between instances (its old one stopping)."""
    try:
        return details(node)
    except pykka.ActorDeadError:
        return None


def silence_a_worker(node, monkeypatch, probe):
    """A node whose worker hashes, is then stopped (silent), and is judged through `probe`."""
    pid = wait_for(lambda: (d := details(node)) and d["hashes_total"] > 0 and d["pid"], timeout=30)
    probe.pid = pid
    monkeypatch.setattr("actors.miner.probe_worker", probe, raising=False)
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_a_silent_worker_that_is_runnable_but_given_no_cpu_is_kept(make_node, monkeypatch, caplog):
    """Regression (lab runs under a tiny cgroup CPU quota): workers that were runnable but got no CPU
    were killed as stalled after 10 s of silence, 177 times in 5 minutes. Starved is not hung."""
    monkeypatch.setattr("actors.miner.STALL_TIMEOUT", 1.0)
    caplog.set_level("INFO", logger="node")
    node = make_node(miners=1, difficulty=NO_BLOCKS)
    probe = FakeProbe("running", cpu_step=0.0)
    pid = silence_a_worker(node, monkeypatch, probe)
    try:
        # Judged again and again past the timeout (8 looks: 2 s more at 0.25 s), or, the bug, killed.
        wait_for(lambda: miner_entry(node)["restarts"] >= 1 or probe.calls >= 8, timeout=30)
        assert miner_entry(node)["restarts"] == 0, miner_entry(node)["last_error"]
        assert details(node)["pid"] == pid and psutil.pid_exists(pid)
        assert "starved, not hung" in caplog.text
    finally:
        with contextlib.suppress(ProcessLookupError):  # (killed, the bug: let the assertion above speak)
            os.kill(pid, signal.SIGCONT)
    hashed = details(node)["hashes_total"]
    wait_for(lambda: details(node)["hashes_total"] > hashed, timeout=30)  # the same worker mines on
    assert details(node)["pid"] == pid and miner_entry(node)["restarts"] == 0


def test_a_silent_worker_burning_cpu_is_replaced_as_spinning(make_node, monkeypatch):
    monkeypatch.setattr("actors.miner.STALL_TIMEOUT", 1.0)
    node = make_node(miners=1, difficulty=NO_BLOCKS)
    pid = silence_a_worker(node, monkeypatch, FakeProbe("running", cpu_step=0.4))  # 1 s of CPU by the 4th look
    wait_for(lambda: miner_entry(node)["restarts"] == 1 and miner_entry(node)["alive"], timeout=30)
    assert "spinning" in miner_entry(node)["last_error"]
    wait_for(lambda: (d := live_details(node)) and d["pid"] != pid and d["hashrate"] > 0, timeout=30)
    wait_for(lambda: not psutil.pid_exists(pid), timeout=5)


def test_a_worker_starved_for_too_long_is_replaced_and_says_why(make_node, monkeypatch, caplog):
    monkeypatch.setattr("actors.miner.STALL_TIMEOUT", 1.0)
    monkeypatch.setattr("actors.miner.STARVED_LIMIT", 2.0, raising=False)
    caplog.set_level("INFO", logger="node")
    node = make_node(miners=1, difficulty=NO_BLOCKS)
    # The replacement, slow to start on a loaded machine, must not be held to the 2 s limit too: the
    # limit is back to normal before the actor first judges it (probe first, then judgement).
    def normal_limit():
        monkeypatch.setattr("actors.miner.STARVED_LIMIT", 300.0, raising=False)

    pid = silence_a_worker(node, monkeypatch, FakeProbe("running", cpu_step=0.0, on_other=normal_limit))
    wait_for(lambda: miner_entry(node)["restarts"] == 1 and miner_entry(node)["alive"], timeout=30)
    error = miner_entry(node)["last_error"]
    assert "replaced" in error and "starved of CPU for longer than 2s" in error
    assert "replaced although not seen hung" in caplog.text
    wait_for(lambda: (d := live_details(node)) and d["pid"] != pid and d["hashrate"] > 0, timeout=30)
    wait_for(lambda: not psutil.pid_exists(pid), timeout=5)


CGROUP_CPU = "/sys/fs/cgroup/cpu"


def _tiny_cpu_cgroup():
    """A cgroup v1 cpu group allowed 1 ms of CPU a second, or None (not root, no cgroup v1 cpu controller)."""
    path = os.path.join(CGROUP_CPU, f"pow-test-starve-{os.getpid()}")
    try:
        os.mkdir(path)
    except OSError:
        return None
    try:
        with open(os.path.join(path, "cpu.cfs_period_us"), "w") as f:
            f.write("1000000")
        with open(os.path.join(path, "cpu.cfs_quota_us"), "w") as f:
            f.write("1000")
    except OSError:
        os.rmdir(path)
        return None
    return path


def test_a_worker_throttled_by_a_real_cgroup_quota_is_kept(make_node, monkeypatch):
    """The same as above, with a real scheduler: 1 ms of CPU a second, so the worker reports ~once a second."""
    from mining import stall

    cgroup = _tiny_cpu_cgroup()
    if cgroup is None:
        pytest.skip("needs root and the cgroup v1 cpu controller")
    verdicts: list[str] = []

    def judge(*args, **kwargs):
        verdict = stall.judge_silence(*args, **kwargs)
        verdicts.append(verdict.kind)
        return verdict

    monkeypatch.setattr("actors.miner.STALL_TIMEOUT", 0.5)
    monkeypatch.setattr("actors.miner.judge_silence", judge, raising=False)
    pid = None
    try:
        node = make_node(miners=1, difficulty=NO_BLOCKS)
        pid = wait_for(lambda: (d := details(node)) and d["hashes_total"] > 0 and d["pid"], timeout=30)
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        wait_for(lambda: miner_entry(node)["restarts"] >= 1 or verdicts.count(stall.STARVED) >= 6, timeout=60)
        assert miner_entry(node)["restarts"] == 0, miner_entry(node)["last_error"]
        assert details(node)["pid"] == pid
        assert set(verdicts) == {stall.STARVED}
    finally:
        if pid is not None and psutil.pid_exists(pid):
            try:
                with open(os.path.join(CGROUP_CPU, "cgroup.procs"), "w") as f:
                    f.write(str(pid))  # back to the root group, so ours can go
            except OSError:
                pass
        wait_for(lambda: _try_rmdir(cgroup), timeout=10)


def _try_rmdir(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False
