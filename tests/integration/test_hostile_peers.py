"""Hostile peers over UDP on loopback: each attack of issue 10 against a real node.

Every peer here is a scripted liar, a stranger or a silent claimer next to one
honest peer; the node must stay up, bounded, and end on the honest chain.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from chain.block import Block
from messages.wire import Announce, encode
from sim.chains import make_chain, mine_block
from sim.peer import SILENT, ScriptedPeer
from tests.helpers import UdpClient, chain_tip, free_udp_port, introduce_and_run_consensus, peer_ports, seed_chain, wait_for

ROOT = Path(__file__).resolve().parents[2]
QUIET = dict(gossip_interval=30.0, peer_timeout=120.0, consensus_interval=3600.0)
DAY = 86400.0  # a timer this far off never fires during a test


@pytest.fixture(scope="module")
def honest_chain() -> list[Block]:
    return make_chain(400, 2)


def test_huge_claims_announces_and_a_consensus_storm_leave_the_node_up_bounded_and_synced(tmp_path, honest_chain):
    """10^18 with a fake (but well-formed, mined) top block, a 4,000-digit claim, and a storm for 30 s."""
    huge = 10**18
    fake_top = mine_block(Block(huge - 2, "liar", ("x",), "0", 1, "ab" * 31 + "00"), 2, mined_by="liar")
    junk = {}

    def serve_lies(height):
        if height == huge - 1:
            return fake_top
        return junk.setdefault(height % 64, dataclasses.replace(honest_chain[5], height=height, messages=("junk",)))

    digits = "9" * 4000
    port = free_udp_port()
    with ScriptedPeer([], claim=(huge, fake_top.hash), serve=serve_lies, name="liar") as liar, \
            ScriptedPeer(honest_chain, seed=1, name="honest") as honest:
        # The 4,000-digit claimer answers STATS by hand (the codec refuses to build such a reply).
        giant = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        giant.bind(("127.0.0.1", 0))
        giant.settimeout(0.05)
        proc = subprocess.Popen(
            [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--name", "victim",
             "--difficulty", "2", "--miners", "0", "--data-dir", str(tmp_path / "d"), "--http-port", "0",
             "--peer", f"{liar.address[0]}:{liar.address[1]}", "--peer", f"127.0.0.1:{giant.getsockname()[1]}",
             "--peer", f"{honest.address[0]}:{honest.address[1]}"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = UdpClient()
        try:
            target = ("127.0.0.1", port)
            big_stats = ('{"type":"STATS_REPLY","height":%s,"hash":"%s"}' % (digits, "0" * 64)).encode()
            big_announce = json.dumps({"type": "ANNOUNCE", **fake_top.to_wire()}).replace(str(fake_top.height), digits).encode()
            peak = 0
            end = time.monotonic() + 30
            while time.monotonic() < end:
                liar.send(Announce(fake_top), target)
                liar.sock.sendto(b'{"type":"CONSENSUS"}', target)
                giant.sendto(big_announce, target)
                giant.sendto(b'{"type":"CONSENSUS"}', target)
                deadline = time.monotonic() + 0.5
                while time.monotonic() < deadline:
                    try:
                        data, addr = giant.recvfrom(65536)
                    except socket.timeout:
                        continue
                    if b'"STATS"' in data:
                        giant.sendto(big_stats, addr)
                assert proc.poll() is None, "the node died"
                peak = max(peak, psutil.Process(proc.pid).memory_info().rss)
            assert peak < 250 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"
            reply = client.ask(port, {"type": "STATS"}, timeout=2)
            assert reply == {"type": "STATS_REPLY", "height": 400, "hash": honest_chain[-1].hash}
            assert len(liar.get_block_heights) < 200  # a few per round, not a download of the claim
        finally:
            client.close()
            giant.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("trial", range(4))
def test_a_probe_liar_never_keeps_the_node_off_the_honest_longer_chain(make_node, honest_chain, trial):
    """It backs the honest claim but answers heights below our top with our own (public) blocks."""
    ours = make_chain(300, 2, base=honest_chain[:200], tag=f"ours{trial}")
    liar_serves = lambda h: ours[h] if h < len(ours) else (honest_chain[h] if h < len(honest_chain) else None)  # noqa: E731
    with ScriptedPeer(honest_chain, serve=liar_serves, seed=trial, name="probe-liar") as liar, \
            ScriptedPeer(honest_chain, seed=10 + trial, drop_rate=0.1, name="honest") as honest:
        node = make_node(**QUIET)
        seed_chain(node, ours)
        introduce_and_run_consensus(node, [liar, honest])
        wait_for(lambda: chain_tip(node) == (400, honest_chain[-1].hash), timeout=20)
        status = node.ctx.registry.consensus().status().get(timeout=5)
        assert status["banned_peers"] <= 1  # the liar at most; never the honest peer


def test_forged_replies_from_a_stranger_do_not_stop_a_sync(make_node, honest_chain):
    forged = [dataclasses.replace(b, messages=("forged",)) for b in honest_chain]
    stop = threading.Event()
    with ScriptedPeer(honest_chain, seed=3, name="honest") as honest:
        port = free_udp_port()
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind(("127.0.0.2", 0))  # off-path: another host
        target = ("127.0.0.1", port)
        datagrams = [encode(Announce(b)).replace(b'"ANNOUNCE"', b'"GET_BLOCK_REPLY"') for b in forged]

        def flood():
            while not stop.is_set():
                for data in datagrams:
                    stranger.sendto(data, target)
                time.sleep(0.01)

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        try:
            node = make_node(port=port, peers=(honest.address,), **QUIET)
            wait_for(lambda: chain_tip(node) == (400, honest_chain[-1].hash), timeout=20)
            status = node.ctx.registry.consensus().status().get(timeout=5)
            assert status["banned_peers"] == 0 and status["ignored_replies"] > 0
        finally:
            stop.set()
            flooder.join(2)
            stranger.close()


def test_twelve_silent_claimers_are_set_aside_for_their_silence_not_waited_out(make_node, honest_chain, caplog):
    """A silent claimer's chain is given up because its one backer answers no GET_BLOCK (a few
    requests), never by waiting out the attempt's no-progress deadline; then the honest chain is synced."""
    caplog.set_level(logging.INFO, logger="node.sync")
    phantom = ["%062x00" % (i + 1) for i in range(12)]  # tops with the proof of work difficulty 2 asks
    silent = [ScriptedPeer([], claim=(1000 + i, phantom[i]), serve=lambda h: SILENT, name=f"silent{i}", seed=i).start()
              for i in range(12)]
    try:
        with ScriptedPeer(honest_chain, seed=5, name="honest") as honest:
            node = make_node(peers=tuple(p.address for p in silent) + (honest.address,), **QUIET)
            wait_for(lambda: chain_tip(node) == (400, honest_chain[-1].hash), timeout=90)
            assert all(len(p.get_block_heights) <= 8 for p in silent)
    finally:
        for p in silent:
            p.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "node.sync"]
    synced = next(i for i, line in enumerate(lines) if line.startswith("consensus round done: synced to height 400"))
    abandoned = [line for line in lines[:synced] if " abandoned: " in line]
    assert abandoned, lines  # the longer (silent) claims were tried before the honest chain
    assert all(line.endswith("abandoned: every peer backing it dropped out") for line in abandoned), abandoned
    set_aside = [line for line in lines[:synced] if line.endswith("answers no GET_BLOCK; set aside for this round")]
    assert len(set_aside) == len(abandoned), lines  # each one's backer, for its silence
    assert not [line for line in lines if "no progress in" in line], lines


def _one_round_synced(node, height: int) -> bool:
    """The node's first round with a peer to ask is the one that synced it to `height` (no retry, no later round)."""
    status = node.ctx.registry.consensus().status().get(timeout=5)
    return status["rounds"] == 1 and status["last_result"].startswith(f"synced to height {height} ")


def test_a_peer_that_joins_with_a_longer_chain_is_synced_by_the_round_its_join_starts(make_node, honest_chain):
    """The consensus timer (an hour) and the keep-alive (a day) can't fire during the test: only the join starts the round."""
    node = make_node(**{**QUIET, "gossip_interval": DAY})
    seed_chain(node, honest_chain[:100])
    with ScriptedPeer(honest_chain, seed=6, name="newcomer") as newcomer:
        # It joins the way a real peer does: a GOSSIP naming itself. Nobody sends CONSENSUS.
        newcomer.send(json_gossip(newcomer), ("127.0.0.1", node.config.port))
        wait_for(lambda: chain_tip(node) == (400, honest_chain[-1].hash), timeout=60)
        assert _one_round_synced(node, 400), node.ctx.registry.consensus().status().get(timeout=5)
        assert newcomer.received["Stats"] >= 1  # it was greeted with a STATS, whose answer made it a tried peer
        assert newcomer.address[1] in peer_ports(node, "tried")


def test_an_announce_far_above_our_tip_is_synced_by_the_round_it_starts(make_node, honest_chain):
    """The announcer is no peer of ours and the consensus timer (an hour) can't fire during the test:
    only the announce starts the round."""
    node = make_node(**QUIET)
    seed_chain(node, honest_chain[:100])
    with ScriptedPeer(honest_chain, seed=7, name="announcer") as announcer:
        announcer.send(Announce(honest_chain[-1]), ("127.0.0.1", node.config.port))
        wait_for(lambda: chain_tip(node) == (400, honest_chain[-1].hash), timeout=60)
        assert _one_round_synced(node, 400), node.ctx.registry.consensus().status().get(timeout=5)


def json_gossip(peer: ScriptedPeer):
    from messages.wire import Gossip

    return Gossip(peer.address[0], peer.address[1], f"join-{os.getpid()}-{peer.address[1]}", peer.name)


def test_a_slow_peer_is_synced_from_without_a_storm_of_duplicates(make_node, honest_chain):
    """It answers one GET_BLOCK every 0.1 s, one after another: requests must come at that rate."""
    node = make_node(**QUIET)
    seed_chain(node, honest_chain[:370])
    with ScriptedPeer(honest_chain, reply_delay=0.1, seed=8, name="slow") as slow:
        introduce_and_run_consensus(node, [slow])
        wait_for(lambda: chain_tip(node) == (400, honest_chain[-1].hash), timeout=30)
        assert len(slow.get_block_heights) < 2 * 30 + 10
