"""The lab's relay on real loopback sockets: who a datagram seems to come from, its delay, a cut, counters."""
from __future__ import annotations

import json
import os
import random
import socket
import threading
import time

from sim.lab.relay import Relay


def _sock(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(5)
    return sock


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
        time.sleep(0.5)  # the command is read on the relay's loop: wait for it, then check nothing crosses
        a.sendto(b"lost", (f"127.{base + 1}.0.2", port))
        b.settimeout(1.0)
        try:
            b.recvfrom(100)
            crossed = True
        except socket.timeout:
            crossed = False
        assert not crossed
        os.write(write_end, json.dumps({"cmd": "heal"}).encode() + b"\n")
        time.sleep(0.5)
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
