"""The miner gateway's budgets: a line flood is not read (back-pressure) and is dropped
after the grace period, the actor's inbox stays bounded, and a hash-rate liar is
judged across reconnects. Plus the pure `LineBudget` and `ClaimLedger` alone."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from mining.protocol import MAX_LINE_BYTES, ClaimLedger, LineBudget
from tests.actors.test_miner_gateway import TOKEN, LineClient, gateway_details, gateway_node
from tests.helpers import health, wait_for

HASHES = b'{"type":"hashes","count":1}\n'
RATE, BURST = 50.0, 100.0  # a small budget, so the tests see it engage at once


# ---------------------------------------------------------------- pure parts

def test_line_budget_allows_its_burst_then_its_rate():
    budget = LineBudget(10, 5, 1000, 10_000, now=0.0)
    assert [budget.take(10, 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert budget.wait(10, 0.0) == pytest.approx(0.1)
    assert not budget.take(10, 0.05)
    assert budget.take(10, 0.1) and not budget.take(10, 0.1)
    assert sum(budget.take(10, 100.0) for _ in range(20)) == 5  # refills to its burst, no further


def test_line_budget_charges_bytes_too():
    budget = LineBudget(1000, 1000, 100, 1, now=0.0)  # a byte burst under one line is raised to one line
    assert budget.take(MAX_LINE_BYTES + 1, 0.0)
    assert not budget.take(1, 0.0)
    assert budget.wait(50, 0.0) == pytest.approx(0.5)
    assert budget.take(50, 0.5)
    with pytest.raises(ValueError):
        LineBudget(0, 1, 1, 1, now=0.0)


def test_claim_ledger_keeps_claims_per_key_and_evicts_the_least_recent():
    ledger = ClaimLedger(max_entries=2)
    liar = ledger.claims(("t", "10.0.0.1"))
    liar.claimed_hashes, liar.units = 10**15, 12
    assert not liar.plausible(8)
    assert ledger.claims(("t", "10.0.0.1")) is liar  # the same record on reconnect
    honest = ledger.claims(("t", "10.0.0.2"))
    honest.claimed_hashes, honest.units, honest.solutions = 16**8 * 20, 40, 18
    assert honest.plausible(8)
    ledger.claims(("t", "10.0.0.1"))  # used again: 10.0.0.2 is now the oldest
    ledger.claims(("t", "10.0.0.3"))
    assert len(ledger) == 2
    assert ledger.claims(("t", "10.0.0.1")) is liar
    assert ledger.claims(("t", "10.0.0.2")) is not honest


# ---------------------------------------------------------------- over the network

class Flooder:
    """A scripted hostile miner: authenticates, then writes `hashes` lines as fast as the kernel takes them."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(json.dumps({"type": "auth", "token": TOKEN}).encode() + b"\n")
        self.sock.setblocking(False)
        self.sent_bytes = 0
        self.blocked = 0  # sends the kernel refused (its buffers full: we are not being read)
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        chunk = HASHES * 512
        pending = b""
        try:
            while not self._stop.is_set():
                if not pending:
                    pending = chunk
                try:
                    sent = self.sock.send(pending)
                except BlockingIOError:
                    self.blocked += 1
                    self._stop.wait(0.01)
                    continue
                self.sent_bytes += sent
                pending = pending[sent:]
        except OSError:  # reset or pipe closed: the gateway dropped us
            pass
        finally:
            self.ended.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_a_line_flood_is_not_read_past_its_budget_and_is_dropped_after_the_grace(make_node):
    node, port = gateway_node(make_node, difficulty=8, miner_line_rate=RATE, miner_line_burst=BURST,
                              miner_budget_grace=1.0)
    started = time.monotonic()
    flooder = Flooder(port)
    try:
        # Back-pressure: the gateway stops reading, the flooder's kernel buffers fill.
        wait_for(lambda: gateway_details(node)["throttle_events"] >= 1, timeout=15)
        wait_for(lambda: flooder.blocked > 0, timeout=15)
        # Dropped once it stayed ahead of its budget for the grace period.
        wait_for(lambda: flooder.ended.is_set(), timeout=30)
        details = wait_for(lambda: (d := gateway_details(node))["budget_drops"] == 1 and d["clients"] == 0 and d,
                           timeout=15)
        elapsed = time.monotonic() - started
    finally:
        flooder.close()
    # What the actor handled is what the budget allows over the whole life of the
    # connection (a token bucket's ceiling), far below what the flooder wrote.
    assert details["lines"] <= BURST + RATE * elapsed
    assert details["lines"] < flooder.sent_bytes // len(HASHES)
    assert details["inbox_batches_peak"] <= 1  # one batch at a time for the one client
    assert details["throttled_clients"] == 0  # gone with it

    honest = LineClient(port)  # and the gateway serves miners as before
    try:
        honest.send({"type": "auth", "token": TOKEN})
        assert honest.recv(expect="work") is not None
        honest.send({"type": "hashes", "count": 1000})
        wait_for(lambda: gateway_details(node)["hashrate_claimed"] > 0)
    finally:
        honest.close()
    assert sum(a["restarts"] for a in health(node)["actors"]) == 0


def test_a_burst_over_the_budget_is_delayed_not_dropped(make_node):
    node, port = gateway_node(make_node, difficulty=8, miner_line_rate=RATE, miner_line_burst=BURST,
                              miner_budget_grace=30.0)
    miner = LineClient(port)
    try:
        miner.send({"type": "auth", "token": TOKEN})
        assert miner.recv(expect="work") is not None
        miner.send(HASHES * int(BURST * 1.5))  # ahead of its budget for a moment, then quiet
        wait_for(lambda: gateway_details(node)["throttle_events"] >= 1, timeout=15)
        details = wait_for(lambda: (d := gateway_details(node))["lines"] == int(BURST * 1.5) and d, timeout=30)
        assert details["clients"] == 1 and details["budget_drops"] == 0
        wait_for(lambda: gateway_details(node)["throttled_clients"] == 0)  # within its budget again
        miner.send({"type": "hashes", "count": 5})
        wait_for(lambda: gateway_details(node)["lines"] == int(BURST * 1.5) + 1)
    finally:
        miner.close()


def test_a_hash_rate_liar_is_not_believed_after_reconnecting(make_node):
    """Claims of 10**12 hashes per report with nothing found: doubt survives reconnects.

    Each connection gets 4 work units (one on connect, three refreshes): alone never
    enough to judge it, so a liar that reconnected was believed every time.
    """
    node, port = gateway_node(make_node, difficulty=8)
    gateway = node.ctx.registry.proxy("MinerGateway")
    believed = []
    for _ in range(6):
        liar = LineClient(port)
        try:
            liar.send({"type": "auth", "token": TOKEN})
            assert liar.recv(expect="work") is not None
            for _ in range(3):
                liar.send({"type": "hashes", "count": 10**12})
                gateway.refresh_work().get(timeout=5)
            details = wait_for(lambda: (d := gateway_details(node))["hashrate_claimed"] >= 10**12 / 5 and d,
                               timeout=10)
            believed.append(details["implausible_clients"] == 0 and details["hashrate"] > 0)
        finally:
            liar.close()
        wait_for(lambda: gateway_details(node)["clients"] == 0)
    assert believed[0] is True  # too little work given to judge it yet
    assert believed[-3:] == [False, False, False]
