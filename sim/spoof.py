"""Datagrams with a forged source address, on loopback: the off-path attacker who knows
which peer a node syncs from and sends "replies" as that peer.

A UDP source address is not authenticated: anyone who can send an IP packet can
put any address in it. `SpoofedSender` builds the IPv4 and UDP headers itself and
sends through a raw socket (which needs root, or CAP_NET_RAW); the receiving node
sees the datagram exactly as if the forged peer had sent it. Only 127.0.0.0/8
addresses are accepted, as source or destination.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from typing import Callable

from net.address import Address

NULL_REPLY = b'{"type":"GET_BLOCK_REPLY","height":null,"hash":null,"messages":null,"minedBy":null,"nonce":null,"timestamp":null}'


def _loopback(addr: Address) -> Address:
    host, port = addr
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address: spoofing is for 127.0.0.0/8 only")
    return host, int(port)


def raw_sockets_allowed() -> bool:
    """Whether this process may open a raw socket (root or CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
    except PermissionError:
        return False
    return True


class SpoofedSender:
    """Sends UDP payloads to `target` that appear to come from `source`."""

    def __init__(self, source: Address, target: Address) -> None:
        self.source = _loopback(source)
        self.target = _loopback(target)
        self.sent = 0
        self.bytes = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL is implied

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "SpoofedSender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, payload: bytes) -> None:
        (src_host, src_port), (dst_host, dst_port) = self.source, self.target
        udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload  # checksum 0: none (IPv4)
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
                             socket.inet_aton(src_host), socket.inet_aton(dst_host))  # the kernel fills in the IP checksum
        self._sock.sendto(header + udp, (dst_host, 0))
        self.sent += 1
        self.bytes += len(payload)


class SpoofFlood:
    """A thread sending `make(i)` as `source` to `target`, `rate` datagrams a second, until stopped."""

    def __init__(self, source: Address, target: Address, rate: float, make: Callable[[int], bytes] = lambda i: NULL_REPLY) -> None:
        self.sender = SpoofedSender(source, target)
        self.rate = rate
        self.make = make
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="spoof-flood")

    @property
    def sent(self) -> int:
        return self.sender.sent

    def start(self) -> "SpoofFlood":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sender.close()

    def __enter__(self) -> "SpoofFlood":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        start = time.monotonic()
        i = 0
        while not self._stop.is_set():
            due = start + i / self.rate
            now = time.monotonic()
            if due > now:
                self._stop.wait(min(due - now, 0.01))
                continue
            try:
                self.sender.send(self.make(i))
            except OSError:
                pass  # a full socket buffer: the flood goes on
            i += 1
