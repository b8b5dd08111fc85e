"""Blocks and the network's chain rules, as pure functions.

Nothing here does I/O or reads a clock, so the rules can be tested and fuzzed
alone and shared by the codec, the ChainKeeper, the sync and the miners.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

MAX_MESSAGES = 10
MAX_MESSAGE_CHARS = 20
MAX_NONCE_CHARS = 40
MAX_TIMESTAMP = 2**63  # exclusive
MAX_MINED_BY_CHARS = 256  # the protocol sets none; this keeps a block inside one datagram
HASH_RE = re.compile(r"[0-9a-f]{64}\Z")


class InvalidBlock(ValueError):
    """A block breaks a chain rule; `reason` says which, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Block:
    """One block as it travels on the wire. Immutable so actors can share it."""

    height: int
    mined_by: str
    messages: tuple[str, ...]
    nonce: str
    timestamp: int
    hash: str

    def to_wire(self) -> dict[str, Any]:
        """The block's fields under their wire names (as they travel in ANNOUNCE and GET_BLOCK_REPLY)."""
        return {
            "height": self.height,
            "minedBy": self.mined_by,
            "messages": list(self.messages),
            "nonce": self.nonce,
            "timestamp": self.timestamp,
            "hash": self.hash,
        }


def python_reply_bytes(block: Block) -> int:
    """The size of `block` as a GET_BLOCK_REPLY re-encoded by a Python peer with `json.dumps` defaults.

    Peers that store blocks as dicts serve them again as `json.dumps(reply)`:
    non-ASCII text becomes `\\uXXXX` escapes (12 bytes for a character outside the
    BMP) and `", "` / `": "` separators add a byte each. That is the largest form a
    block we mine takes on the network (ours is compact UTF-8), so it is the one
    that must fit the 1,024-byte buffers some peers read with.
    """
    return len(json.dumps({"type": "GET_BLOCK_REPLY", **block.to_wire()}).encode("ascii"))


def _is_int(value: Any) -> bool:
    # bool is a subclass of int in Python, but `true` is not a height.
    return isinstance(value, int) and not isinstance(value, bool)


def field_problem(block: Block) -> str | None:
    """The first rule the block's own fields break, or None.

    Checks types and limits only; whether the hash is right needs the previous
    block and is done by `check_block`.
    """
    if not _is_int(block.height) or block.height < 0:
        return "height must be a non-negative int"
    if not isinstance(block.mined_by, str):
        return "minedBy must be a string"
    if len(block.mined_by) > MAX_MINED_BY_CHARS:
        return f"minedBy longer than {MAX_MINED_BY_CHARS} characters"
    if not isinstance(block.messages, (tuple, list)):
        return "messages must be a list"
    if len(block.messages) > MAX_MESSAGES:
        return f"more than {MAX_MESSAGES} messages"
    for message in block.messages:
        if not isinstance(message, str):
            return "messages must be strings"
        if len(message) > MAX_MESSAGE_CHARS:
            return f"message longer than {MAX_MESSAGE_CHARS} characters"
    if not isinstance(block.nonce, str):
        return "nonce must be a string"
    if len(block.nonce) > MAX_NONCE_CHARS:
        return f"nonce longer than {MAX_NONCE_CHARS} characters"
    if not _is_int(block.timestamp):
        return "timestamp must be an int"
    if not 0 <= block.timestamp < MAX_TIMESTAMP:
        return "timestamp out of range [0, 2**63)"
    if not isinstance(block.hash, str) or not HASH_RE.match(block.hash):
        return "hash must be 64 lowercase hex characters"
    return None


def hash_prefix(prev_hash: str | None, mined_by: str, messages: Iterable[str], timestamp: int) -> bytes:
    """Everything that is hashed before the nonce; miners hash it once per work unit."""
    parts = []
    if prev_hash is not None:
        parts.append(prev_hash.encode("ascii"))
    parts.append(mined_by.encode("utf-8"))
    parts.extend(message.encode("utf-8") for message in messages)
    parts.append(timestamp.to_bytes(8, "big", signed=False))
    return b"".join(parts)


def compute_hash(prev_hash: str | None, mined_by: str, messages: Iterable[str], timestamp: int, nonce: str) -> str:
    """The block hash the network agrees on. Fields must already have passed `field_problem`."""
    digest = hashlib.sha256(hash_prefix(prev_hash, mined_by, messages, timestamp))
    digest.update(nonce.encode("utf-8"))
    return digest.hexdigest()


def meets_difficulty(block_hash: str, difficulty: int) -> bool:
    """True when the hex hash ends with `difficulty` ASCII zeros."""
    return difficulty <= 0 or block_hash.endswith("0" * difficulty)


def check_block(block: Block, prev_hash: str | None, difficulty: int) -> None:
    """Raise InvalidBlock unless `block` is valid on top of a block hashing to `prev_hash`.

    `prev_hash` is None only for genesis (height 0).
    """
    problem = field_problem(block)
    if problem:
        raise InvalidBlock(problem)
    if (block.height == 0) != (prev_hash is None):
        raise InvalidBlock("only the genesis block has no previous block")
    try:
        actual = compute_hash(prev_hash, block.mined_by, block.messages, block.timestamp, block.nonce)
    except UnicodeEncodeError:
        # Lone surrogates (possible from JSON "\ud800") cannot be UTF-8: no valid hash.
        raise InvalidBlock("text is not encodable as UTF-8") from None
    if actual != block.hash:
        raise InvalidBlock("hash does not match the block's contents and previous hash")
    if not meets_difficulty(block.hash, difficulty):
        raise InvalidBlock(f"hash does not end with {difficulty} zeros")


def is_valid_block(block: Block, prev_hash: str | None, difficulty: int) -> bool:
    """`check_block` as a predicate."""
    try:
        check_block(block, prev_hash, difficulty)
    except InvalidBlock:
        return False
    return True


def check_chain(blocks: Sequence[Block], difficulty: int, *, base_height: int = 0, base_prev_hash: str | None = None) -> None:
    """Raise InvalidBlock unless `blocks` form a valid run of the chain.

    By default the run starts at genesis; a segment on top of a known block starts at
    `base_height` with `base_prev_hash` the hash of block `base_height - 1`.
    """
    prev_hash = base_prev_hash
    for offset, block in enumerate(blocks):
        expected_height = base_height + offset
        if block.height != expected_height:
            raise InvalidBlock(f"expected height {expected_height}, got {block.height!r}")
        check_block(block, prev_hash, difficulty)
        prev_hash = block.hash
