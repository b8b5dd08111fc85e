"""A peer's second, longer fork, announced soon after its first, against a real node.

The attack of issue 19: a peer announces a 41-block fork (taken), 2 s later a
45-block fork, then goes quiet. The second announce fell in the per-peer gap and
was dropped, so the node stayed on the wrong tip until its periodic round. A
longer chain is never dropped: it is followed as soon as the current attempt ends.
"""
from __future__ import annotations

import time

import pytest

from chain.block import Block
from messages.wire import Announce
from sim.chains import make_chain
from sim.peer import ScriptedPeer
from tests.helpers import chain_tip, free_udp_port, seed_chain, wait_for

# No periodic round for an hour: only the announces can move the node.
QUIET = dict(gossip_interval=30.0, peer_timeout=120.0, consensus_interval=3600.0)


@pytest.fixture(scope="module")
def forks() -> tuple[list[Block], list[Block], list[Block]]:
    base = make_chain(30, 2)
    return base, make_chain(41, 2, base=base, tag="fork41"), make_chain(45, 2, base=base, tag="fork45")


def test_a_second_longer_fork_announced_2s_later_is_followed(make_node, forks):
    base, fork41, fork45 = forks
    port = free_udp_port()
    target = ("127.0.0.1", port)
    with ScriptedPeer(fork41, seed=1, name="forker") as peer:
        node = make_node(port=port, **QUIET)
        seed_chain(node, base)
        peer.send(Announce(fork41[-1]), target)
        first = time.monotonic()
        wait_for(lambda: chain_tip(node) == (41, fork41[-1].hash), timeout=30)
        # Two seconds after the first announce (within the per-peer gap), the longer fork.
        time.sleep(max(0.0, first + 2.0 - time.monotonic()))  # the attack's timing, not a synchronisation
        peer.blocks = list(fork45)
        peer.send(Announce(fork45[-1]), target)
        wait_for(lambda: chain_tip(node) == (45, fork45[-1].hash), timeout=30)


def test_a_longer_chain_announced_during_a_sync_is_followed_after_it(make_node, forks):
    """The peer's chain grows from 41 to 45 blocks while we fetch the 41 (slowly): its announce
    of the 45th comes within the per-peer gap of the first, and is followed once the 41 are in."""
    base, fork41, _ = forks
    fork45 = make_chain(45, 2, base=fork41, tag="grown")
    port = free_udp_port()
    target = ("127.0.0.1", port)
    with ScriptedPeer(fork41, seed=2, reply_delay=0.2, name="slow-forker") as peer:
        node = make_node(port=port, **QUIET)
        seed_chain(node, base)
        consensus = node.ctx.registry.consensus()
        peer.send(Announce(fork41[-1]), target)
        wait_for(lambda: consensus.status().get(timeout=5)["target_height"] == 41, timeout=30)
        peer.blocks = list(fork45)  # its chain grew ...
        peer.send(Announce(fork45[-1]), target)  # ... and it says so while we fetch the 41
        wait_for(lambda: chain_tip(node) == (45, fork45[-1].hash), timeout=60)
