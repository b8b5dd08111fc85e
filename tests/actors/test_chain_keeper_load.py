"""ChainKeeper's load path: an invalid stored tail is quarantined with its reason, never dropped."""
from __future__ import annotations

import logging

from chain.datadir import DataDir
from chain.store import ChainStore
from sim.chains import make_chain
from tests.helpers import wait_for


def _stored(data_dir, chain, difficulty=2):
    DataDir.open(data_dir, difficulty).close()
    store = ChainStore(data_dir)
    store.replace_from(0, chain)
    return store


def test_a_tampered_block_and_everything_above_it_go_to_quarantine(tmp_path, make_node, client, caplog):
    data_dir = tmp_path / "d"
    chain = make_chain(10, 2)
    store = _stored(data_dir, chain)
    store._db.execute("UPDATE blocks SET nonce = 'tampered' WHERE height = 6")
    store.close()
    with caplog.at_level(logging.ERROR):
        node = make_node(data_dir=data_dir)
    reply = wait_for(lambda: client.ask(node.config.port, {"type": "STATS"}, timeout=0.3))
    assert reply["height"] == 6 and reply["hash"] == chain[5].hash
    node.stop()
    set_aside = ChainStore(data_dir).quarantined()
    assert [block.height for block, _ in set_aside] == [6, 7, 8, 9]
    assert [block.hash for block, _ in set_aside] == [b.hash for b in chain[6:]]
    reason = set_aside[0][1]
    assert "stored block 6" in reason and "hash does not match" in reason
    logged = [r.getMessage() for r in caplog.records if "quarantine" in r.getMessage()]
    assert len(logged) == 1 and "stored block 6" in logged[0] and "moved 4 stored blocks" in logged[0]


def test_a_gap_quarantines_the_blocks_above_it(tmp_path, make_node, client):
    data_dir = tmp_path / "d"
    chain = make_chain(8, 2)
    store = _stored(data_dir, chain)
    store._db.execute("DELETE FROM blocks WHERE height = 3")
    store.close()
    node = make_node(data_dir=data_dir)
    reply = wait_for(lambda: client.ask(node.config.port, {"type": "STATS"}, timeout=0.3))
    assert reply["height"] == 3
    node.stop()
    set_aside = ChainStore(data_dir).quarantined()
    assert [block.height for block, _ in set_aside] == [4, 5, 6, 7]
    assert "no stored block at height 3" in set_aside[0][1]


def test_a_valid_chain_loads_whole_and_nothing_is_quarantined(tmp_path, make_node, client):
    data_dir = tmp_path / "d"
    chain = make_chain(8, 2)
    _stored(data_dir, chain).close()
    node = make_node(data_dir=data_dir)
    reply = wait_for(lambda: client.ask(node.config.port, {"type": "STATS"}, timeout=0.3))
    assert reply["height"] == 8
    node.stop()
    assert ChainStore(data_dir).quarantined() == []
