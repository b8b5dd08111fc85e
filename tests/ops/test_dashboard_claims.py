"""A peer's claim is never stale, the sync card never contradicts it, and the explorer pages blocks.

Over real UDP and HTTP on 127.0.0.1: a scripted peer ANNOUNCEs blocks and the
node's `/peers` and `/api/overview` show the new claim at once (before the
change, claims came only from a sync round's STATS replies: the ANNOUNCE test
fails on that code). The sync card's judgement (`sync_state`) is pure and tested
alone.
"""
from __future__ import annotations

import re

import pytest

from chain.datadir import DataDir
from chain.store import ChainStore
from messages.wire import GetBlockReply, encode
from ops.overview import sync_state
from sim.chains import make_chain
from tests.helpers import free_tcp_port, wait_for, wire_block
from tests.ops.ops_helpers import http

LENGTH = 45


@pytest.fixture
def seeded(tmp_path):
    chain = make_chain(LENGTH, 2)
    data_dir = tmp_path / "seeded"
    DataDir.open(data_dir, 2).close()
    store = ChainStore(data_dir)
    store.replace_from(0, chain[:30])
    store.close()
    return data_dir, chain


def _peer(peers, port):
    return next((p for p in peers if p["port"] == port), None)


def test_an_announce_refreshes_the_peers_claim_on_peers_and_the_overview(make_node, seeded, client):
    data_dir, chain = seeded
    node = make_node(http_port=free_tcp_port(), data_dir=data_dir)
    port = node.config.http_port
    # The scripted peer introduces itself (GOSSIP from its own socket), so it is in the tables.
    client.send(node.config.port, {"type": "GOSSIP", "host": "127.0.0.1", "port": client.address[1], "id": "claims-1",
                                   "name": "scripted"})
    wait_for(lambda: _peer(http(port, "/peers").json(), client.address[1]), timeout=20)
    for block in chain[30:33]:  # linked: stored, and each is the peer's new tip
        client.send(node.config.port, wire_block(block))
    entry = wait_for(lambda: (p := _peer(http(port, "/peers").json(), client.address[1])) and p["claimed_height"] == 33 and p,
                     timeout=20)
    assert entry["claimed_hash"] == chain[32].hash
    assert isinstance(entry["claim_age"], (int, float)) and 0 <= entry["claim_age"] < 60
    client.send(node.config.port, wire_block(chain[40]))  # far above our tip: a claim of 41 blocks
    overview = wait_for(lambda: (o := http(port, "/api/overview").json())["peers"]
                        and o["peers"][0]["claimed_height"] == 41 and o, timeout=20)
    assert overview["peers"][0]["claimed_hash"] == chain[40].hash
    # Our chain is shorter than the claim: the card says "behind" (or a sync is running), never "in sync".
    assert overview["sync"]["state"] in ("behind", "syncing")


def test_sync_card_never_says_in_sync_or_no_peers_while_a_peer_claims_more():
    peer = {"host": "127.0.0.1", "port": 9001, "name": "alice", "table": "tried"}
    ahead = {"127.0.0.1:9001": {"height": 20, "hash": "a" * 64, "age": 1.0}}
    level = {"127.0.0.1:9001": {"height": 12, "hash": "a" * 64, "age": 1.0}}
    assert sync_state(12, [peer], ahead, True)[0] == "behind"
    assert sync_state(12, [peer], level, True)[0] == "in sync"
    assert sync_state(12, [peer], {}, True)[0] == "checking"  # connected, claim not known yet
    # Not in the tables (any more), but it claimed more a moment ago: still behind, not "no peers".
    assert sync_state(12, [], ahead, True)[0] == "behind"
    assert sync_state(12, [], {"127.0.0.1:9001": {"height": 20, "hash": None, "age": 999.0}}, True)[0] == "no peers"
    assert sync_state(12, [], {}, False)[0] == "alone"
    state, best = sync_state(12, [peer], {**level, "127.0.0.1:9002": {"height": 30, "hash": None, "age": 2.0}}, True)
    assert state == "behind" and best["address"] == "127.0.0.1:9002" and best["height"] == 30
    assert sync_state(12, [peer], {"127.0.0.1:9001": {"height": None, "hash": None, "age": 1.0}}, True)[0] == "checking"


def test_explorer_pages_blocks_and_a_block_page_has_confirmations_size_and_time_since_previous(make_node, seeded):
    data_dir, chain = seeded
    node = make_node(http_port=free_tcp_port(), data_dir=data_dir)
    port = node.config.http_port
    top = http(port, "/blocks")
    assert top.status == 200
    heights = [int(h) for h in re.findall(r'<td class="num"><a href="/block/(\d+)">', top.text)]
    assert heights == list(range(29, 9, -1))  # the newest 20, newest first
    assert 'href="/blocks?before=10"' in top.text and 'href="/"' in top.text
    older = http(port, "/blocks?before=10").text
    assert [int(h) for h in re.findall(r'<td class="num"><a href="/block/(\d+)">', older)] == list(range(9, -1, -1))
    assert 'id="older"' not in older and 'href="/blocks?before=30"' in older  # back to the newest page
    assert http(port, "/blocks?before=x").status == 400
    assert http(port, "/blocks?before=99999999999999999999").status == 400
    assert "no blocks here" in http(port, "/blocks?before=0").text

    page = http(port, "/block/25").text
    assert re.search(r'id="block-confirmations">5 ', page)  # blocks 25..29: itself and 4 on top
    size = len(encode(GetBlockReply(chain[25])))
    assert f'id="block-size">{size} bytes' in page
    gap = chain[25].timestamp - chain[24].timestamp
    assert re.search(r'id="block-since-previous">[^<]*\d', page) and gap >= 0
    assert 'id="home" href="/"' in page
    assert 'id="block-confirmations">1 ' in http(port, "/block/29").text  # the top: one confirmation
    assert "genesis" in http(port, "/block/0").text
