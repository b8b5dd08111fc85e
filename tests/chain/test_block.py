"""Chain rules against real network blocks, tampered copies and the limits."""
from __future__ import annotations

import dataclasses

import pytest

from chain.block import Block, InvalidBlock, check_block, check_chain, compute_hash, is_valid_block
from sim.chains import make_chain, mine_block
from tests.helpers import real_blocks

REAL = real_blocks()


def test_real_main_network_blocks_validate():
    check_chain(REAL, difficulty=8)
    assert all(b.hash.endswith("0" * 8) for b in REAL)


def test_genesis_hash_leaves_out_the_previous_hash():
    g = REAL[0]
    assert compute_hash(None, g.mined_by, g.messages, g.timestamp, g.nonce) == g.hash


@pytest.mark.parametrize(
    "field, value",
    [
        ("nonce", "353209355"),
        ("minedBy", "Prof"),
        ("timestamp", 1699295269),
        ("messages", ("ramifies",)),
        ("hash", "c52368025ea9253b9d4371ebec8e271f214779c18bc123a21dd8ef5f00000001"),
    ],
)
def test_tampered_real_block_fails(field, value):
    attr = {"minedBy": "mined_by"}.get(field, field)
    tampered = dataclasses.replace(REAL[1], **{attr: value})
    with pytest.raises(InvalidBlock):
        check_block(tampered, REAL[0].hash, 8)
    with pytest.raises(InvalidBlock):
        check_chain([REAL[0], tampered], 8)


def test_block_must_link_to_its_predecessor():
    with pytest.raises(InvalidBlock, match="hash does not match"):
        check_block(REAL[1], "0" * 64, 8)
    with pytest.raises(InvalidBlock, match="genesis"):
        check_block(REAL[1], None, 8)


def test_difficulty_is_enforced():
    assert is_valid_block(REAL[0], None, 8)
    assert not is_valid_block(REAL[0], None, 9)


def test_chain_heights_must_be_consecutive():
    with pytest.raises(InvalidBlock, match="expected height 0"):
        check_chain([REAL[1]], 8)


def _with(block: Block, **changes) -> Block:
    return dataclasses.replace(block, **changes)


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"timestamp": -1}, "timestamp"),
        ({"timestamp": 1.5}, "timestamp"),
        ({"timestamp": "1699295268"}, "timestamp"),
        ({"timestamp": 2**63}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"messages": (1, "a")}, "strings"),
        ({"messages": ("m",) * 11}, "more than 10"),
        ({"messages": ("x" * 21,)}, "longer than 20"),
        ({"nonce": "1" * 41}, "nonce longer"),
        ({"nonce": 5}, "nonce must be"),
        ({"height": -1}, "height"),
        ({"hash": "Z" * 64}, "hash must be"),
    ],
)
def test_limits_are_clean_rejections(changes, reason):
    with pytest.raises(InvalidBlock, match=reason):
        check_block(_with(REAL[1], **changes), REAL[0].hash, 8)


def test_limits_at_the_edge_are_accepted():
    block = mine_block(REAL[1], 2, mined_by="x", messages=("y" * 20,) * 10, timestamp=2**63 - 1)
    check_block(block, REAL[1].hash, 2)
    long_nonce = _with(block, nonce="1" * 40)
    assert not is_valid_block(long_nonce, REAL[1].hash, 2)  # hash no longer matches, but no exception


def test_zero_messages_are_accepted():
    block = mine_block(None, 2, messages=())
    check_block(block, None, 2)


def test_non_ascii_messages_hash_as_utf8():
    block = mine_block(None, 1, mined_by="Zoë", messages=("naïve", "日本語"))
    check_block(block, None, 1)
    import hashlib
    expected = hashlib.sha256("Zoë".encode() + "naïve".encode() + "日本語".encode() + block.timestamp.to_bytes(8, "big") + block.nonce.encode()).hexdigest()
    assert block.hash == expected


def test_lone_surrogate_is_a_clean_rejection():
    block = _with(mine_block(None, 1), messages=("\ud800",))
    assert not is_valid_block(block, None, 1)


def test_generated_chain_validates_and_fork_differs():
    chain = make_chain(20, 2)
    check_chain(chain, 2)
    fork = make_chain(25, 2, base=chain[:10], tag="fork")
    check_chain(fork, 2)
    assert fork[10].hash != chain[10].hash
    with pytest.raises(InvalidBlock):
        check_chain(chain[:11] + fork[11:], 2)
