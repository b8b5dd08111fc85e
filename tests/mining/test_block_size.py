"""A block we mine fits 1,024 bytes however a Python peer serves it again.

Our own encoding is compact UTF-8; a Python peer that stores the block as a dict
re-serves it with `json.dumps` defaults (`\\uXXXX` escapes, `", "` separators), up to
twice as large for words of non-ASCII text. Some peers read with a 1,024-byte buffer,
and one refuses anything over 1,500 bytes: words that would push the re-encoded
GET_BLOCK_REPLY past 1,024 bytes are left queued for a later block.
"""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.miner import usable_words
from chain.block import MAX_NONCE_CHARS, MAX_TIMESTAMP, Block, python_reply_bytes
from messages.wire import GetBlockReply, encode
from tests.helpers import UdpClient, wait_for

ASTRAL = "\U0001f680" * 20  # 20 characters outside the BMP: 80 bytes as UTF-8, 240 escaped
# Distinct words (the queue takes each once), with escapes of every width.
WORST_WORDS = ([chr(0x1F680 + i) * 20 for i in range(6)] + ['"\\' * 10, '\\"' * 10]
               + [chr(0xE9 + i) * 20 for i in range(4)])


def _worst_block(height: int, name: str, messages: tuple[str, ...]) -> Block:
    return Block(height, name, messages, "x" * MAX_NONCE_CHARS, MAX_TIMESTAMP - 1, "0" * 64)


def test_python_reply_bytes_is_what_json_dumps_defaults_produce():
    block = Block(7, "n\u00e9", (ASTRAL, 'a"b'), "ab12", 1_700_000_000, "0" * 64)
    python_peer = json.dumps({"type": "GET_BLOCK_REPLY", **block.to_wire()})
    assert python_reply_bytes(block) == len(python_peer.encode())
    assert python_reply_bytes(block) > len(encode(GetBlockReply(block)))  # larger than ours


def test_words_that_would_break_1024_bytes_re_encoded_are_left_for_a_later_block():
    chosen = usable_words(WORST_WORDS, "default", "node-1", 10**6)
    assert 0 < len(chosen) < len(WORST_WORDS)
    assert list(chosen) == WORST_WORDS[: len(chosen)]  # in queue order: the rest stay queued
    assert python_reply_bytes(_worst_block(10**6, "node-1", chosen)) <= 1024
    # Under the old rule (our compact encoding only) these words made a block that a
    # Python peer re-serves at well over 1,024 bytes.
    assert python_reply_bytes(_worst_block(10**6, "node-1", tuple(WORST_WORDS[:5]))) > 1024
    assert usable_words(["plain"] * 10, "default", "node-1", 5) == ("plain",) * 10  # ASCII words all fit


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Zl", "Zp")), min_size=1, max_size=20),
                      max_size=20),
       name=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=24),
       height=st.integers(0, 10**9))
def test_any_queued_words_give_a_block_within_1024_bytes_re_encoded(words, name, height):
    chosen = usable_words(words, "pow-node miner 0", name, height)
    if chosen == ("pow-node miner 0",):
        return  # nothing fitted: the default message (short ASCII) alone
    assert python_reply_bytes(_worst_block(height, name, chosen)) <= 1024


def test_a_mining_node_keeps_every_block_within_1024_bytes_re_encoded(make_node):
    """Worst-case words queued on a mining node: every block it mines stays within 1,024
    bytes as a Python peer re-serves it, and the words held back are mined later."""
    node = make_node(miners=1, difficulty=2)
    keeper = node.ctx.registry.proxy("ChainKeeper")
    client = UdpClient()
    try:
        for word in WORST_WORDS:
            client.send(node.config.port, {"type": "NEW_WORD", "word": word})

        def mined_words() -> int:
            return sum(1 for b in keeper.get_blocks(0, 10_000).get(timeout=5) for m in b.messages if m in WORST_WORDS)

        wait_for(lambda: mined_words() == len(WORST_WORDS), timeout=60)
    finally:
        client.close()
    chain = keeper.get_blocks(0, 10_000).get(timeout=5)
    carrying = [b for b in chain if set(b.messages) & set(WORST_WORDS)]
    assert len(carrying) >= 2  # not all in one block: some were left for a later one
    assert sum(len(b.messages) for b in carrying) == len(WORST_WORDS)
    assert max(python_reply_bytes(b) for b in chain) <= 1024

