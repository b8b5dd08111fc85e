"""The chain: pure rules (`block`) and durable storage (`store`)."""
from chain.block import (
    Block,
    InvalidBlock,
    check_block,
    check_chain,
    compute_hash,
    field_problem,
    hash_prefix,
    is_valid_block,
    meets_difficulty,
)

__all__ = [
    "Block",
    "InvalidBlock",
    "check_block",
    "check_chain",
    "compute_hash",
    "field_problem",
    "hash_prefix",
    "is_valid_block",
    "meets_difficulty",
]
