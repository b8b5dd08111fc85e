"""A single node over UDP: STATS, GET_BLOCK, ANNOUNCE, GOSSIP, malformed datagrams."""
from __future__ import annotations

import dataclasses
import errno
import logging
import select
import socket
import threading
from types import SimpleNamespace

import pytest

import actors.network_io as network_io
from messages.wire import DECODE_ERROR_KINDS
from sim.chains import make_chain
from tests.helpers import health, UdpClient, metric, peer_ports, real_blocks, wait_for, wire_block


def stats(client, node):
    return client.ask(node.config.port, {"type": "STATS"})


def test_empty_chain_stats_and_get_block(make_node, client):
    node = make_node()
    assert stats(client, node) == {"type": "STATS_REPLY", "height": 0, "hash": None}
    reply = client.ask(node.config.port, {"type": "GET_BLOCK", "height": 0})
    assert reply == {"type": "GET_BLOCK_REPLY", "height": None, "minedBy": None, "messages": None,
                     "nonce": None, "timestamp": None, "hash": None}


def test_real_blocks_are_accepted_by_announce(make_node, client):
    node = make_node(difficulty=8)
    blocks = real_blocks()
    for block in blocks:
        client.send(node.config.port, wire_block(block))
    wait_for(lambda: stats(client, node)["height"] == 2)
    assert stats(client, node)["hash"] == blocks[1].hash
    reply = client.ask(node.config.port, {"type": "GET_BLOCK", "height": 1})
    assert reply == wire_block(blocks[1], "GET_BLOCK_REPLY")


def test_tampered_and_unlinked_announces_are_ignored(make_node, client):
    node = make_node(difficulty=8)
    blocks = real_blocks()
    tampered = dataclasses.replace(blocks[0], nonce="1")
    client.send(node.config.port, wire_block(tampered))
    client.send(node.config.port, wire_block(blocks[1]))  # does not link to an empty chain
    client.send(node.config.port, wire_block(blocks[0]))
    wait_for(lambda: stats(client, node)["height"] == 1)
    client.send(node.config.port, wire_block(dataclasses.replace(blocks[1], timestamp=1)))
    assert stats(client, node) == {"type": "STATS_REPLY", "height": 1, "hash": blocks[0].hash}


def test_malformed_burst_leaves_node_serving_and_chain_unchanged(make_node, client):
    node = make_node()
    chain = make_chain(3, 2)
    for block in chain:
        client.send(node.config.port, wire_block(block))
    wait_for(lambda: stats(client, node)["height"] == 3)
    garbage = [b"\xff\xfe", b"[]", b"{}", b'{"type":"ANNOUNCE"}', b'{"type":"GET_BLOCK","height":-5}',
               b'{"type":"GOSSIP","port":"x"}', b"null", b'{"type":"STATS_REPLY","height":"9"}', b"A" * 9000]
    for _ in range(200):
        for data in garbage:
            client.send(node.config.port, data)
    assert stats(client, node) == {"type": "STATS_REPLY", "height": 3, "hash": chain[-1].hash}
    wait_for(lambda: sum(metric(node, "node_malformed_datagrams_total", reason=r) for r in DECODE_ERROR_KINDS) >= 1800)
    assert all(a["alive"] for a in health(node)["actors"])


def test_gossip_reply_goes_to_the_originator_in_the_message(make_node, client):
    node = make_node()
    originator = UdpClient()
    try:
        client.send(node.config.port, {"type": "GOSSIP", "host": "127.0.0.1", "port": originator.address[1], "id": "g-1", "name": "orig"})
        reply = originator.recv(expect="GOSSIP_REPLY")
        assert reply == {"type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": node.config.port, "name": node.config.name}
        # A peer seen for the first time is also greeted: a STATS (catch-up on first sight), never our
        # GOSSIP; its answer, from the greeted address, makes it a tried peer.
        assert originator.recv() == {"type": "STATS"}
        assert client.recv(timeout=0.3) is None  # not to the datagram's source
        assert originator.address[1] not in peer_ports(node, "tried")
        originator.send(node.config.port, {"type": "STATS_REPLY", "height": 0, "hash": None})
        wait_for(lambda: originator.address[1] in peer_ports(node, "tried"))
        client.send(node.config.port, {"type": "GOSSIP", "host": "127.0.0.1", "port": originator.address[1], "id": "g-1", "name": "orig"})
        assert originator.recv(timeout=0.3, expect="GOSSIP_REPLY") is None  # a seen id is not answered again
    finally:
        originator.close()


def test_new_word_is_queued_durably(make_node, client):
    node = make_node()
    client.send(node.config.port, {"type": "NEW_WORD", "word": "hello"})
    keeper = node.ctx.registry.proxy("ChainKeeper")
    wait_for(lambda: keeper.pending_words().get() == ["hello"])


def test_datagrams_for_a_restarting_actor_are_held_not_lost(make_node, client):
    node = make_node()
    keeper = node.ctx.registry.proxy("ChainKeeper")
    keeper.crash.defer("test")
    # Sent while ChainKeeper is down or restarting: held by NetworkIO, then delivered.
    client.send(node.config.port, {"type": "NEW_WORD", "word": "held"})
    reply = client.ask(node.config.port, {"type": "STATS"}, timeout=3.0)
    assert reply == {"type": "STATS_REPLY", "height": 0, "hash": None}
    wait_for(lambda: node.ctx.registry.proxy("ChainKeeper").pending_words().get(timeout=5) == ["held"])
    assert node.supervisor.children["ChainKeeper"].restarts == 1


def test_sends_to_addresses_sendto_cannot_take_are_dropped_and_counted(make_node, client):
    """Defence in depth behind the codec: a bad address in a send never reaches sendto() (no DNS, no TypeError)."""
    from messages.wire import Stats

    node = make_node()
    proxy = node.ctx.registry.proxy("NetworkIO")
    for addr in [("\ud800", 9), ("127.0.0.1\x00", 9), ("\x80", 9), ("localhost", 9), ("::1", 9), ("127.0.0.1", 0), (None, 9), "junk"]:
        proxy.send.defer(Stats(), addr)
    assert client.ask(node.config.port, {"type": "STATS"}) is not None
    assert metric(node, "node_datagrams_dropped_total", reason="bad_address") == 8
    assert sum(a["restarts"] for a in health(node)["actors"]) == 0


# ---------------------------------------------------------------- the reader thread

def actor_entry(node, name):
    """`name`'s /health entry, read from the supervisor (never asks the actor)."""
    return next(e for e in node.supervisor.actor_entries() if e["name"] == name)


def answered(client, node):
    """True once the node answers a STATS (each try waits briefly: the node may be restarting NetworkIO)."""
    return client.ask(node.config.port, {"type": "STATS"}, timeout=0.3) is not None


class ReaderFaults:
    """Make the NetworkIO reader's next `select` calls (or the next `recvfrom`s) raise given OSErrors.

    Only the thread named NetworkIO.reader is affected: other threads and the
    sockets of other code are left alone.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[str, list[OSError]] = {"select": [], "recvfrom": []}
        self.raised = 0

    def fail(self, call: str, *errors: OSError) -> None:
        with self.lock:
            self.pending[call].extend(errors)

    def take(self, call: str) -> None:
        if threading.current_thread().name != "NetworkIO.reader":
            return
        with self.lock:
            error = self.pending[call].pop(0) if self.pending[call] else None
            if error is not None:
                self.raised += 1
        if error is not None:
            raise error

    def left(self) -> int:
        with self.lock:
            return sum(len(errors) for errors in self.pending.values())


@pytest.fixture
def reader_faults(monkeypatch) -> ReaderFaults:
    """Installed before the node starts: NetworkIO's socket class and select() go through it."""
    faults = ReaderFaults()

    def faulty_select(*args, **kwargs):
        faults.take("select")
        return select.select(*args, **kwargs)

    class FaultySocket(socket.socket):
        def recvfrom(self, *args, **kwargs):
            faults.take("recvfrom")
            return super().recvfrom(*args, **kwargs)

    fake_socket_module = SimpleNamespace(**{name: getattr(socket, name) for name in dir(socket) if name.isupper()})
    fake_socket_module.socket = FaultySocket
    monkeypatch.setattr(network_io, "select", SimpleNamespace(select=faulty_select))
    monkeypatch.setattr(network_io, "socket", fake_socket_module)
    return faults


def test_a_reader_killed_by_a_fault_restarts_network_io_and_stats_are_answered_again(make_node, client):
    node = make_node()
    assert stats(client, node) is not None
    reader = node.supervisor.thread("NetworkIO.reader")
    assert reader is not None and reader.is_alive()
    assert [t["name"] for t in actor_entry(node, "NetworkIO")["threads"]] == ["NetworkIO.reader"]
    reader.inject()
    wait_for(lambda: actor_entry(node, "NetworkIO")["restarts"] == 1)
    entry = actor_entry(node, "NetworkIO")
    assert "NetworkIO.reader" in entry["last_error"] and "InjectedFault" in entry["last_error"]
    wait_for(lambda: answered(client, node))
    # (The supervisor lists the new instance's threads once it has seen it start.)
    fresh = wait_for(lambda: node.supervisor.thread("NetworkIO.reader"))
    assert fresh is not reader and fresh.is_alive()
    assert not reader.is_alive()
    assert actor_entry(node, "NetworkIO")["restarts"] == 1


def test_transient_errors_do_not_end_the_reader_and_are_counted(make_node, client, reader_faults, caplog):
    caplog.set_level(logging.WARNING, logger="node.NetworkIO")
    node = make_node()
    reader = node.supervisor.thread("NetworkIO.reader")
    reader_faults.fail("select", *[OSError(errno.EMFILE, "Too many open files") for _ in range(4)])
    wait_for(lambda: reader_faults.left() == 0)
    reader_faults.fail("recvfrom", OSError(errno.ENOBUFS, "No buffer space available"))
    wait_for(lambda: answered(client, node))  # its datagram makes the reader call recvfrom (which fails once)
    assert reader_faults.raised == 5
    assert node.supervisor.thread("NetworkIO.reader") is reader and reader.is_alive()
    assert reader.transient_errors == 5
    assert metric(node, "node_thread_transient_errors_total", thread="NetworkIO.reader") == 5
    assert actor_entry(node, "NetworkIO")["restarts"] == 0
    reported = [r.getMessage() for r in caplog.records if r.name == "node.NetworkIO" and "retrying" in r.getMessage()]
    # One line per kind of error; the repeats within 10 s are only counted.
    assert len([m for m in reported if "select failed" in m]) == 1
    assert len([m for m in reported if "recvfrom failed" in m]) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_non_transient_error_in_the_reader_crashes_network_io(make_node, client, reader_faults):
    node = make_node()
    reader = node.supervisor.thread("NetworkIO.reader")
    reader_faults.fail("select", OSError(errno.EIO, "Input/output error"))
    wait_for(lambda: actor_entry(node, "NetworkIO")["restarts"] == 1)
    entry = actor_entry(node, "NetworkIO")
    assert "NetworkIO.reader" in entry["last_error"] and "Input/output error" in entry["last_error"]
    assert not reader.is_alive() and reader.error is not None and "OSError" in reader.error
    wait_for(lambda: answered(client, node))
    assert actor_entry(node, "NetworkIO")["restarts"] == 1
    assert reader.transient_errors == 0
