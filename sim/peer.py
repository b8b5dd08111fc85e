"""A scripted peer on loopback: serves a fixed chain, loses replies on purpose.

Used by tests and benchmarks as a stand-in for other people's nodes: it answers
STATS (optionally with a made-up claim), GET_BLOCK (dropping a fraction of
replies), GOSSIP (replying to the originator) and records what it received.
"""
from __future__ import annotations

import heapq
import itertools
import random
import socket
import threading
import time
from collections import Counter
from typing import Callable, Sequence, Union

from chain.block import Block
from messages.wire import (
    Announce,
    DecodeError,
    GetBlock,
    GetBlockReply,
    Gossip,
    GossipReply,
    Stats,
    StatsReply,
    decode,
    encode,
)
from net.address import Address

# What a scripted peer answers a GET_BLOCK for a height with: a block, None (the
# "no such block" reply), or SILENT (no answer at all).
SILENT = "silent"
Serve = Callable[[int], Union[Block, None, str]]


class ScriptedPeer:
    def __init__(
        self,
        blocks: Sequence[Block],
        *,
        drop_rate: float = 0.0,
        claim: tuple[int, str | None] | None = None,
        name: str = "scripted",
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        reply_delay: float = 0.0,
        jitter: tuple[float, float] = (0.0, 0.0),
        serve: Serve | None = None,
    ) -> None:
        self.blocks = list(blocks)
        self.drop_rate = drop_rate
        self.reply_delay = reply_delay  # seconds before each GET_BLOCK reply, one after another: a slow peer
        self.jitter = jitter  # a uniform delay of each GET_BLOCK reply, without slowing the others: a far peer
        self.serve = serve  # overrides what is served (liars, silent claimers)
        self._later: list[tuple[float, int, bytes, Address]] = []
        self._seq = itertools.count()
        self.claim = claim
        self.name = name
        self.rng = random.Random(seed)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind((host, port))
        self.sock.settimeout(0.1)
        self.address: Address = self.sock.getsockname()[:2]
        self.received: Counter[str] = Counter()
        self.gossip_ids: list[tuple[str, Address]] = []
        self.announced: list[Block] = []
        self.get_block_heights: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"peer-{name}")

    def start(self) -> "ScriptedPeer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> "ScriptedPeer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def send(self, message: object, addr: Address) -> None:
        self.sock.sendto(encode(message), addr)  # type: ignore[arg-type]

    def _send_due(self) -> None:
        now = time.monotonic()
        while self._later and self._later[0][0] <= now:
            _, _, data, addr = heapq.heappop(self._later)
            try:
                self.sock.sendto(data, addr)
            except OSError:
                pass
        self.sock.settimeout(min(0.1, max(0.0005, self._later[0][0] - now)) if self._later else 0.1)

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._send_due()
            try:
                data, addr = self.sock.recvfrom(65536)
            except (socket.timeout, ConnectionRefusedError, BlockingIOError):
                continue
            except OSError:
                return
            try:
                message = decode(data)
            except DecodeError:
                self.received["malformed"] += 1
                continue
            self.received[type(message).__name__] += 1
            if isinstance(message, Stats):
                height, top = self.claim or (len(self.blocks), self.blocks[-1].hash if self.blocks else None)
                self.send(StatsReply(height, top), addr)
            elif isinstance(message, GetBlock):
                self.get_block_heights.append(message.height)
                if self.drop_rate and self.rng.random() < self.drop_rate:
                    continue
                if self.reply_delay:
                    time.sleep(self.reply_delay)
                if self.serve is not None:
                    answer = self.serve(message.height)
                    if answer == SILENT:
                        continue
                    block = answer if isinstance(answer, Block) else None
                else:
                    block = self.blocks[message.height] if message.height < len(self.blocks) else None
                if self.jitter[1] > 0:
                    due = time.monotonic() + self.rng.uniform(*self.jitter)
                    heapq.heappush(self._later, (due, next(self._seq), encode(GetBlockReply(block)), addr))
                else:
                    self.send(GetBlockReply(block), addr)
            elif isinstance(message, Gossip):
                self.gossip_ids.append((message.id, addr))
                self.send(GossipReply(self.address[0], self.address[1], self.name), (message.host, message.port))
            elif isinstance(message, Announce):
                self.announced.append(message.block)
