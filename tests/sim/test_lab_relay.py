"""The lab's relay on real loopback sockets: who a datagram seems to come from, its delay, a cut, counters,
and how honestly it measures itself (time queued in its sockets, the kernel's drops there)."""
from __future__ import annotations

import json
import os
import random
import select
import socket
import threading
import time
from pathlib import Path

import pytest

from sim.lab.processes import RelayProcess
from sim.lab.relay import Relay, udp_sockets
from sim.lab.run import VALID_DROP_SHARE, Lab, LabConfig, relay_figures


def _sock(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(5)
    return sock


def _until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_the_relay_forwards_with_the_link_delay_as_from_the_senders_advertised_address():
    base = random.Random(os.getpid() ^ time.time_ns()).randrange(20, 240, 2)
    a, b = _sock(f"127.{base}.0.1"), _sock(f"127.{base}.0.2")
    port = a.getsockname()[1]  # the relay's sockets take the same port on their own addresses (free: nobody uses them)
    relay = Relay([[4.0, 200.0], [200.0, 4.0]], loss=0.0, jitter=0.0, uplink_bps=0.0, seed=1)
    nodes = [{"index": 0, "relay": [f"127.{base + 1}.0.1", port], "bind": list(a.getsockname()), "region": 0},
             {"index": 1, "relay": [f"127.{base + 1}.0.2", port], "bind": list(b.getsockname()), "region": 1}]
    for node in nodes:
        relay.add(node)
    read_end, write_end = os.pipe()
    commands = os.fdopen(read_end, "r")
    thread = threading.Thread(target=relay.run, args=(commands,), daemon=True)
    thread.start()
    try:
        sent = time.monotonic()
        a.sendto(b"hello", (f"127.{base + 1}.0.2", port))  # a -> b's advertised address
        data, source = b.recvfrom(100)
        assert data == b"hello"
        assert time.monotonic() - sent >= 0.1  # half of the 200 ms round trip
        assert source == (f"127.{base + 1}.0.1", port)  # b sees a's advertised address, so its reply goes back through the relay
        b.sendto(b"back", source)
        assert a.recvfrom(100) == (b"back", (f"127.{base + 1}.0.2", port))

        os.write(write_end, json.dumps({"cmd": "partition", "groups": [[0], [1]]}).encode() + b"\n")
        _until(lambda: relay.model.cut)  # the command is read on the relay's loop: wait for it, then check nothing crosses
        a.sendto(b"lost", (f"127.{base + 1}.0.2", port))
        b.settimeout(1.0)
        try:
            b.recvfrom(100)
            crossed = True
        except socket.timeout:
            crossed = False
        assert not crossed
        os.write(write_end, json.dumps({"cmd": "heal"}).encode() + b"\n")
        _until(lambda: not relay.model.cut)
        a.sendto(b"again", (f"127.{base + 1}.0.2", port))
        b.settimeout(5)
        assert b.recvfrom(100)[0] == b"again"
    finally:
        os.write(write_end, json.dumps({"cmd": "stop"}).encode() + b"\n")
        thread.join(10)
        os.close(write_end)
        a.close()
        b.close()
    assert not thread.is_alive()
    assert relay.stats["sent"] == {"0": [3, 14], "1": [1, 4]}
    assert relay.stats["received"] == {"1": [2, 10], "0": [1, 4]}
    assert relay.stats["dropped"] == {"partition": 1}


def _pair(relay: Relay) -> tuple[socket.socket, socket.socket, str]:
    """Two stand-in nodes (0 and 1, region 0) added to `relay`; b's advertised address."""
    base = random.Random(os.getpid() ^ time.time_ns()).randrange(20, 240, 2)
    a, b = _sock(f"127.{base}.0.1"), _sock(f"127.{base}.0.2")
    port = a.getsockname()[1]
    for index, sock in enumerate((a, b)):
        relay.add({"index": index, "relay": [f"127.{base + 1}.0.{index + 1}", port], "bind": list(sock.getsockname()), "region": 0})
    return a, b, f"127.{base + 1}.0.2"


def _hold(sock: socket.socket, seconds: float) -> float:
    """Wait until `sock` has a datagram queued, then let it sit there `seconds`; when it was seen queued."""
    readable, _, _ = select.select([sock], [], [], 30)
    assert readable, "the datagram never reached the relay's socket"
    queued = time.monotonic()
    while time.monotonic() < queued + seconds:  # time passing is the point here, not a synchronisation
        time.sleep(queued + seconds - time.monotonic())
    return queued


def _closing(*socks: socket.socket) -> None:
    for sock in socks:
        sock.close()


def test_a_datagram_held_in_the_relays_socket_while_it_is_busy_counts_as_late():
    relay = Relay([[0.0]], loss=0.0, jitter=0.0, uplink_bps=0.0, seed=1)  # no model delay: any delay is the relay's
    a, b, b_advertised = _pair(relay)
    try:
        a.sendto(b"held", (b_advertised, a.getsockname()[1]))
        _hold(relay.sockets[1], 0.25)  # the relay, busy elsewhere (or off the CPU), has not read it yet
        relay.on_datagram(1, relay.sockets[1])
        relay.flush()
        assert b.recvfrom(100)[0] == b"held"
        stats = relay.stats
        assert stats["socket_wait_max_ms"] >= 250
        assert stats["late_max_ms"] >= 250  # from its arrival, not from when the relay read it
        assert stats["late_ms"]["<500"] + stats["late_ms"]["<2000"] + stats["late_ms"]["more"] == 1
        assert relay_figures(stats)["late_over_100ms_share"] == 1.0 and not relay_figures(stats)["valid"]
    finally:
        relay.closed = True
        _closing(a, b, *relay.sockets.values())


def test_the_link_delay_runs_from_the_kernels_arrival_time_not_on_top_of_the_wait():
    relay = Relay([[800.0]], loss=0.0, jitter=0.0, uplink_bps=0.0, seed=1)  # 400 ms one way
    a, b, b_advertised = _pair(relay)
    try:
        sent = time.monotonic()
        a.sendto(b"x", (b_advertised, a.getsockname()[1]))
        queued = _hold(relay.sockets[1], 0.25)
        relay.on_datagram(1, relay.sockets[1])
        due = relay.queue[0][0]
        assert sent + 0.4 - 0.005 <= due <= queued + 0.4 + 0.005  # arrival (between the send and seeing it queued) + 400 ms
        assert relay.stats["socket_wait_max_ms"] >= 250
    finally:
        relay.closed = True
        _closing(a, b, *relay.sockets.values())


def test_the_relay_counts_what_the_kernel_dropped_at_its_own_full_sockets():
    relay = Relay([[0.0]], loss=0.0, jitter=0.0, uplink_bps=0.0, seed=1, socket_buffer=16384)
    a, b, b_advertised = _pair(relay)
    inode = os.fstat(relay.sockets[1].fileno()).st_ino
    try:
        assert relay.stats["kernel_drops"] == 0
        for _ in range(100):  # 400 KB at a socket holding a few tens of KB, nobody reading
            a.sendto(b"z" * 4000, (b_advertised, a.getsockname()[1]))
        _until(lambda: any(i == inode and d > 0 for _, i, d in udp_sockets()))
        in_table = sum(d for _, i, d in udp_sockets() if i == inode)
        assert in_table > 0
        stats = relay.stats
        assert stats["kernel_drops"] == in_table
        while relay.sockets[1] in select.select([relay.sockets[1]], [], [], 0)[0]:  # read what the kernel kept
            relay.on_datagram(1, relay.sockets[1])
        stats = relay.stats
        assert stats["sent"]["0"][0] + stats["kernel_drops"] == 100
        figures = relay_figures(stats)
        assert figures["kernel_drop_share"] == pytest.approx(stats["kernel_drops"] / 100, abs=1e-5)
        assert figures["kernel_drop_share"] >= VALID_DROP_SHARE and not figures["valid"]
    finally:
        relay.closed = True
        _closing(a, b, *relay.sockets.values())


def test_valid_means_under_100ms_for_99_percent_and_nearly_no_kernel_drops():
    def stats(under: int, over: int, drops: int | None) -> dict:
        late = {"<1": under, "<5": 0, "<20": 0, "<100": 0, "<500": over, "<2000": 0, "more": 0}
        return {"late_ms": late, "sent": {"0": [under + over, 0]}, "kernel_drops": drops}

    assert relay_figures(stats(9_901, 99, 0))["valid"]
    assert not relay_figures(stats(9_900, 100, 0))["valid"]  # 1% over 100 ms
    assert relay_figures(stats(10_000, 0, 10))["valid"]  # 10 of the 10,010 that reached its sockets dropped there
    assert not relay_figures(stats(10_000, 0, 11))["valid"]  # 11 of 10,011: over 0.1%
    assert not relay_figures(stats(10_000, 0, None))["valid"]  # drops unknown: nothing says it kept up
    assert not relay_figures(stats(0, 0, 0))["valid"]  # forwarded nothing


def test_drops_at_node_sockets_are_kept_per_socket_across_a_restart(tmp_path: Path):
    lab = Lab(LabConfig(out=tmp_path / "lab", nodes=1))
    node = lab._new_node(0, 0, False, None)
    lab.nodes.append(node)
    sender = _sock(f"127.{lab.base + 1}.0.1")
    counted = 0
    try:
        for life in range(2):  # the node's socket, then its socket after a restart (a new socket, counters at 0)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.bind((node.bind_ip, node.port))
            inode = os.fstat(sock.fileno()).st_ino
            for _ in range(50):
                sender.sendto(b"q" * 2000, (node.bind_ip, node.port))
            _until(lambda: any(i == inode and d > 0 for _, i, d in udp_sockets()))  # noqa: B023 - called here
            counted += sum(d for _, i, d in udp_sockets() if i == inode)
            lab._read_node_socket_drops()
            sock.close()
        assert counted > 0
        assert sum(lab.node_socket_drops.values()) == counted
    finally:
        sender.close()


def test_the_relay_process_reports_its_scheduling_and_its_sockets_drops(tmp_path: Path):
    relay = RelayProcess({"rtt_ms": [[4.0]], "loss": 0.0, "jitter": 0.0, "uplink_bps": 0.0, "seed": 1, "nodes": []},
                         tmp_path / "relay.log")
    try:
        stats = relay.stats()
        policy = os.sched_getscheduler(relay.popen.pid) & ~os.SCHED_RESET_ON_FORK
        assert stats["scheduling"] in ("realtime", "nice", "none")
        assert (stats["scheduling"] == "realtime") == (policy == os.SCHED_RR)
        if stats["scheduling"] == "nice":
            assert os.getpriority(os.PRIO_PROCESS, relay.popen.pid) < 0
        assert stats["kernel_drops"] == 0
    finally:
        relay.stop()
