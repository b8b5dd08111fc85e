"""External miners over TCP: auth, work, verification, invalidation, garbage, the CLI client."""
from __future__ import annotations

import errno
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil

from mining.kernel import available_kernels
from mining.worker import Search
from chain.block import check_chain
from sim.chains import mine_block
from tests.helpers import health, free_tcp_port, wait_for, wire_block

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"


class LineClient:
    """A test's own TCP connection speaking line-delimited JSON."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""

    def send(self, message) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        self.sock.sendall(data)

    def recv(self, timeout: float = 5.0, expect: str | None = None):
        """The next message (of type `expect`, skipping others); None on EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                message = json.loads(line)
                if expect is None or message["type"] == expect:
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            except ConnectionResetError:  # dropped by the gateway with unread data: EOF for us
                return None
            if not data:
                return None
            self.buffer += data

    def close(self) -> None:
        self.sock.close()


def gateway_node(make_node, **overrides):
    port = free_tcp_port()
    node = make_node(miner_listen=port, miner_token=TOKEN, **overrides)
    return node, port


def gateway_details(node):
    return node.ctx.registry.proxy("MinerGateway").health_details().get(timeout=2)


def chain_of(node):
    return node.ctx.registry.proxy("ChainKeeper").get_blocks(0, 10_000).get(timeout=2)


def solve(work) -> str:
    """What an external miner does: search the work's nonce space."""
    search = Search(work["work_id"], bytes.fromhex(work["prefix"]), work["difficulty"], work["tag"] + "0-")
    while True:
        found = search.batch()
        if found is not None:
            return found[0]


def test_wrong_or_missing_token_is_refused_and_logged(make_node, caplog):
    node, port = gateway_node(make_node)
    caplog.set_level(logging.WARNING, logger="node.MinerGateway")
    attempts = [
        {"type": "auth", "token": "wrong"},
        {"type": "auth"},
        {"type": "auth", "token": TOKEN[:-1]},
        b"GET / HTTP/1.0\r\n\r\n",
        {"type": "submit", "work_id": 1, "nonce": "1"},
    ]
    for attempt in attempts:
        miner = LineClient(port)
        miner.send(attempt)
        assert miner.recv() == {"type": "error", "error": "unauthorized"}
        assert miner.recv(timeout=2) is None  # and the connection is closed
        miner.close()
    wait_for(lambda: gateway_details(node)["auth_refused"] == len(attempts))
    refusals = [r for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.getMessage()]
    assert len(refusals) == len(attempts)
    assert gateway_details(node)["clients"] == 0
    assert chain_of(node) == []

    good = LineClient(port)  # the gateway still serves miners with the token
    good.send({"type": "auth", "token": TOKEN})
    assert good.recv(expect="welcome")["difficulty"] == node.config.difficulty
    good.close()


def test_external_miner_mines_and_stale_or_bad_nonces_are_refused(make_node, client):
    node, port = gateway_node(make_node, difficulty=3)
    miner = LineClient(port)
    miner.send({"type": "auth", "token": TOKEN})
    work = miner.recv(expect="work")
    assert work["height"] == 0 and work["difficulty"] == 3 and len(work["tag"]) <= work["tag_max"]

    miner.send({"type": "submit", "work_id": work["work_id"], "nonce": work["tag"] + "not-a-solution"})
    result = miner.recv(expect="result")
    assert result["accepted"] is False and result["reason"].startswith("invalid")

    nonce = solve(work)
    miner.send({"type": "submit", "work_id": work["work_id"], "nonce": nonce})
    result = miner.recv(expect="result")
    assert result["accepted"] is True and result["height"] == 0
    blocks = chain_of(node)
    assert len(blocks) == 1 and blocks[0].nonce == nonce and blocks[0].mined_by == node.config.name
    assert len(blocks[0].messages) >= 1
    fresh = miner.recv(expect="work")  # the tip moved: new work at once
    assert fresh["height"] == 1 and fresh["work_id"] != work["work_id"]

    miner.send({"type": "submit", "work_id": work["work_id"], "nonce": nonce})  # a replay of old work
    assert miner.recv(expect="result")["accepted"] is False
    assert len(chain_of(node)) == 1

    # A block from the network moves the tip too: work is invalidated and replaced.
    other = mine_block(blocks[0], 3, mined_by="someone-else", messages=("hi",), timestamp=int(time.time()))
    client.send(node.config.port, wire_block(other))
    pushed = miner.recv(expect="work", timeout=3)
    while pushed is not None and pushed["height"] != 2:  # skip periodic refreshes of height 1
        pushed = miner.recv(expect="work", timeout=3)
    assert pushed is not None and pushed["height"] == 2
    miner.send({"type": "submit", "work_id": fresh["work_id"], "nonce": solve(fresh)})
    late = miner.recv(expect="result")
    assert late["accepted"] is False
    assert [b.hash for b in chain_of(node)] == [blocks[0].hash, other.hash]
    check_chain(chain_of(node), 3)
    stats = gateway_details(node)
    assert stats["accepted"] == 1 and stats["rejected"] == 3
    miner.close()


def test_a_nonce_without_the_assigned_tag_is_refused(make_node):
    """A valid solution found under another tag (another client's, or none) is not accepted."""
    node, port = gateway_node(make_node, difficulty=2)
    first, second = LineClient(port), LineClient(port)
    try:
        first.send({"type": "auth", "token": TOKEN})
        second.send({"type": "auth", "token": TOKEN})
        work_a, work_b = first.recv(expect="work"), second.recv(expect="work")
        assert work_a["tag"] != work_b["tag"]
        stolen = solve(work_b)  # same template, other client's tag: a valid block ...
        first.send({"type": "submit", "work_id": work_a["work_id"], "nonce": stolen})
        result = first.recv(expect="result")
        assert result["accepted"] is False and "tag" in result["reason"]  # ... but not first's to submit
        untagged = Search(0, bytes.fromhex(work_a["prefix"]), 2, "zz-")
        while (found := untagged.batch()) is None:
            pass
        first.send({"type": "submit", "work_id": work_a["work_id"], "nonce": found[0]})
        assert "tag" in first.recv(expect="result")["reason"]
        assert chain_of(node) == []
    finally:
        first.close()
        second.close()


def test_a_miner_with_the_token_gets_in_while_100_unauthenticated_connections_sit_idle(make_node):
    node, port = gateway_node(make_node)
    idle = []
    try:
        for _ in range(100):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.2)
        for attempt in range(5):
            miner = LineClient(port)
            miner.send({"type": "auth", "token": TOKEN})
            welcome = miner.recv(expect="welcome", timeout=5)
            miner.close()
            assert welcome is not None, f"refused on attempt {attempt}"
        assert gateway_details(node)["pending"] <= 16
    finally:
        for sock in idle:
            sock.close()


def test_a_miner_that_never_reads_is_dropped_and_the_gateway_stays_responsive(make_node):
    node, port = gateway_node(make_node, difficulty=2)
    deaf = socket.create_connection(("127.0.0.1", port), timeout=5)
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    deaf.sendall(json.dumps({"type": "auth", "token": TOKEN}).encode() + b"\n")
    try:
        wait_for(lambda: gateway_details(node)["clients"] == 1, timeout=5)
        gateway = node.ctx.registry.proxy("MinerGateway")
        for _ in range(3000):  # work pushes pile up in a socket nobody reads
            gateway.refresh_work().get(timeout=5)
            if gateway_details(node)["clients"] == 0:
                break
        assert gateway_details(node)["clients"] == 0  # dropped, not waited on
        assert health(node)["status"] == "ok"
        assert sum(a["restarts"] for a in health(node)["actors"]) == 0
    finally:
        deaf.close()


def test_an_implausible_hash_rate_claim_is_not_counted(make_node):
    node, port = gateway_node(make_node, difficulty=8)
    liar = LineClient(port)
    try:
        liar.send({"type": "auth", "token": TOKEN})
        assert liar.recv(expect="work") is not None
        gateway = node.ctx.registry.proxy("MinerGateway")
        for _ in range(12):  # work units go out; the liar claims 4.5e16 hashes and finds nothing
            liar.send({"type": "hashes", "count": 10**12})
            gateway.refresh_work().get(timeout=5)
        details = wait_for(lambda: (d := gateway_details(node))["implausible_clients"] == 1 and d, timeout=5)
        assert details["hashrate"] == 0 and details["hashrate_claimed"] > 1e11
    finally:
        liar.close()


def test_gateway_survives_garbage_disconnects_and_reconnects(make_node):
    node, port = gateway_node(make_node, difficulty=2)
    miner = LineClient(port)
    miner.send({"type": "auth", "token": TOKEN})
    work = miner.recv(expect="work")
    for garbage in [b"not json\n", b"[1,2]\n", b"\xff\xfe\n", b'{"type":"warp"}\n', b"x" * 10_000 + b"\n",
                    b'{"type":"submit","work_id":"1","nonce":5}\n', b'{"type":"hashes","count":-1}\n']:
        miner.send(garbage)
        assert miner.recv(expect="error") is not None
    miner.send({"type": "hashes", "count": 500_000})
    miner.send({"type": "submit", "work_id": work["work_id"], "nonce": solve(work)})
    assert miner.recv(expect="result")["accepted"] is True  # still served after all that
    details = gateway_details(node)
    assert details["garbage_lines"] == 7 and details["clients"] == 1 and details["hashrate"] > 0

    miner.sock.close()  # vanish without a word...
    wait_for(lambda: gateway_details(node)["clients"] == 0)
    again = LineClient(port)  # ...and come back
    again.send({"type": "auth", "token": TOKEN})
    work = again.recv(expect="work")
    assert work["height"] == len(chain_of(node))
    sent = 0
    for sent in range(1, 61):  # a flood of garbage gets the connection dropped
        try:
            again.send(b"garbage\n")
        except (BrokenPipeError, ConnectionResetError):
            break  # already dropped (after the 50th bad line): what this checks
    assert sent > 50
    assert again.recv(expect="never", timeout=5) is None  # EOF
    wait_for(lambda: gateway_details(node)["clients"] == 0)


@contextmanager
def cli_miner(port: int, token: str = TOKEN) -> Iterator[subprocess.Popen[str]]:
    """`run_node.py miner` with one worker against 127.0.0.1:`port`; killed on the way out if still running."""
    args = [sys.executable, "run_node.py", "miner", "--connect", f"127.0.0.1:{port}", "--token", token, "--workers", "1"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_miner_mines_blocks_for_the_node(make_node):
    node, port = gateway_node(make_node, difficulty=3)
    with cli_miner(port) as proc:
        wait_for(lambda: len(chain_of(node)) >= 3, timeout=20)
        blocks = chain_of(node)
        check_chain(blocks, 3)
        assert all(b.mined_by == node.config.name and b.messages for b in blocks)
        assert all(b.nonce.startswith("x") for b in blocks)  # external miners' nonce space
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    stderr = proc.stderr.read()
    assert "accepted" in stderr
    assert f"workers hash with the {available_kernels()[0]} kernel" in stderr  # the node's own kernel choice
    wait_for(lambda: gateway_details(node)["clients"] == 0)


def test_cli_miner_with_a_wrong_token_exits_1():
    port = free_tcp_port()
    with socket.create_server(("127.0.0.1", port)) as server, cli_miner(port, token="nope") as proc:
        server.settimeout(10)
        conn, _ = server.accept()
        with conn:
            line = conn.makefile("rb").readline()
            assert json.loads(line) == {"type": "auth", "token": "nope"}
            conn.sendall(b'{"type":"error","error":"unauthorized"}\n')
            assert proc.wait(timeout=10) == 1


def test_cli_miner_replaces_a_worker_that_dies(make_node):
    node, port = gateway_node(make_node, difficulty=3)
    with cli_miner(port) as proc:
        wait_for(lambda: len(chain_of(node)) >= 2, timeout=20)
        miner = psutil.Process(proc.pid)

        def workers() -> list[int]:  # spawned worker processes (not multiprocessing's helpers)
            pids = []
            for child in miner.children():
                try:
                    if "spawn_main" in " ".join(child.cmdline()):
                        pids.append(child.pid)
                except psutil.Error:  # the killed worker, a zombie until it is reaped, or gone
                    pass
            return pids

        first = wait_for(workers, timeout=10)[0]
        os.kill(first, signal.SIGKILL)
        fresh = wait_for(lambda: [pid for pid in workers() if pid != first], timeout=10)
        before = len(chain_of(node))
        wait_for(lambda: len(chain_of(node)) >= before + 2, timeout=20)  # the new worker mines
        assert psutil.Process(fresh[0]).ppid() == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    stderr = proc.stderr.read()
    assert f"worker 0 (pid {first}) died (exit -9); starting a new one" in stderr
    check_chain(chain_of(node), 3)


# ---------------------------------------------------------------- owned threads, health line

def actor_entry(node, name):
    """`name`'s /health entry, read from the supervisor (never asks the actor)."""
    return next(e for e in node.supervisor.actor_entries() if e["name"] == name)


def health_check(port: int, timeout: float = 5.0):
    """Send the health line as a connection's first line; (the answer, what followed it: None for EOF)."""
    probe = LineClient(port)
    try:
        probe.send({"type": "health"})
        return probe.recv(timeout=timeout), probe.recv(timeout=timeout)
    finally:
        probe.close()


def healthy(port: int) -> bool:
    """True if the gateway answers the health line (False while it is refused: e.g. restarting)."""
    try:
        return health_check(port, timeout=1.0)[0] == {"type": "health_ok"}
    except OSError:
        return False


def test_the_health_line_is_answered_without_a_token_and_without_a_trace(make_node, caplog):
    caplog.set_level(logging.DEBUG, logger="node.MinerGateway")
    node, port = gateway_node(make_node)
    for _ in range(3):
        assert health_check(port) == ({"type": "health_ok"}, None)  # answered, then closed
    details = gateway_details(node)
    assert details["clients"] == 0 and details["connections"] == 0 and details["auth_refused"] == 0
    assert not [r for r in caplog.records if r.name == "node.MinerGateway" and "accepting" not in r.getMessage()]
    # The connection threads ended cleanly: /health lists only the acceptor.
    wait_for(lambda: [t["name"] for t in actor_entry(node, "MinerGateway")["threads"]] == ["MinerGateway.accept"])
    # Only as the first line: after auth it is an unknown type like any other.
    miner = LineClient(port)
    try:
        miner.send({"type": "auth", "token": TOKEN})
        assert miner.recv(expect="welcome") is not None
        miner.send({"type": "health"})
        assert "unknown type" in miner.recv(expect="error")["error"]
    finally:
        miner.close()


def test_an_injected_fault_in_the_acceptor_or_a_connection_restarts_the_gateway(make_node):
    node, port = gateway_node(make_node)
    acceptor = node.supervisor.thread("MinerGateway.accept")
    assert acceptor is not None and acceptor.is_alive()
    acceptor.inject()
    wait_for(lambda: actor_entry(node, "MinerGateway")["restarts"] == 1)
    assert "MinerGateway.accept" in actor_entry(node, "MinerGateway")["last_error"]
    wait_for(lambda: healthy(port))

    miner = LineClient(port)  # a connection thread that dies (as of a bug) takes the gateway down too
    try:
        miner.send({"type": "auth", "token": TOKEN})
        assert miner.recv(expect="welcome") is not None
        # The supervisor lists the new instance's threads once it has seen it start, and
        # the health checks' connection threads are forgotten once they have ended.
        conns = wait_for(lambda: len(names := [t["name"] for t in actor_entry(node, "MinerGateway")["threads"]
                                               if t["name"] != "MinerGateway.accept"]) == 1 and names)
        assert conns[0].startswith("MinerGateway.conn-")
        node.supervisor.thread(conns[0]).inject()
        wait_for(lambda: actor_entry(node, "MinerGateway")["restarts"] == 2)
        assert conns[0] in actor_entry(node, "MinerGateway")["last_error"]
    finally:
        miner.close()
    wait_for(lambda: healthy(port))


def test_the_acceptor_survives_running_out_of_file_descriptors(make_node, caplog):
    """With the process out of descriptors, accept() fails with EMFILE: retried, counted, logged once."""
    caplog.set_level(logging.INFO, logger="node.MinerGateway")
    # No health probes: their sockets open and close every 2 s, and a descriptor one of
    # them frees while the table is full would let accept() through.
    node, port = gateway_node(make_node, probe_interval=0)
    acceptor = node.supervisor.thread("MinerGateway.accept")
    waiting = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # its descriptor, taken while there are some
    fillers: list[int] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
        try:
            while True:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE
        waiting.connect(("127.0.0.1", port))  # completed by the kernel: it waits in the listen backlog
        wait_for(lambda: acceptor.transient_errors >= 3)
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    waiting.settimeout(5)
    waiting.sendall(json.dumps({"type": "health"}).encode() + b"\n")
    assert waiting.makefile("rb").readline() == b'{"type":"health_ok"}\n'  # accepted once descriptors were free
    waiting.close()
    miner = LineClient(port)  # and a real miner gets in
    try:
        miner.send({"type": "auth", "token": TOKEN})
        assert miner.recv(expect="welcome") is not None
    finally:
        miner.close()
    assert node.supervisor.thread("MinerGateway.accept") is acceptor and acceptor.is_alive()
    assert actor_entry(node, "MinerGateway")["restarts"] == 0
    assert node.ctx.metrics.registry.get_sample_value(
        "node_thread_transient_errors_total", {"thread": "MinerGateway.accept"}) == acceptor.transient_errors
    about_it = [r for r in caplog.records if r.name == "node.MinerGateway" and "accept failed" in r.getMessage()]
    assert 1 <= len(about_it) <= 2 and all(r.levelno == logging.WARNING for r in about_it)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
