"""The worker hash loop and the miner protocol's framing, without a node."""
from __future__ import annotations

import hashlib
import multiprocessing
import time

import pytest

from actors.miner import usable_words
from mining.protocol import LineReader, ProtocolError, decode_line, encode_line
from mining.worker import (
    LAST_SUFFIX_OFFSET,
    MAX_NONCE_CHARS,
    MAX_TAG_CHARS,
    BadWork,
    Search,
    nonce_head,
    run_worker,
)
from chain.block import compute_hash, hash_prefix
from mining.kernel import KERNEL_ENV, available_kernels, digest_meets

MP = multiprocessing.get_context("spawn")


@pytest.mark.parametrize("prefix_len", range(0, 130))
def test_nonce_layout_costs_one_compression_and_fits_the_limit(prefix_len):
    for tag_len in range(0, MAX_TAG_CHARS + 1):
        head = nonce_head(prefix_len, "t" * tag_len)
        suffix_offset = (prefix_len + len(head) + 8) % 64
        assert suffix_offset <= LAST_SUFFIX_OFFSET  # suffix + SHA padding stay in one block
        assert len(head) + 8 + 3 <= MAX_NONCE_CHARS
        assert head.startswith("t" * tag_len)


def test_bad_tags_are_refused():
    with pytest.raises(BadWork):
        nonce_head(10, "t" * (MAX_TAG_CHARS + 1))
    with pytest.raises(BadWork):
        nonce_head(10, "é")


@pytest.mark.parametrize("difficulty", range(0, 9))
def test_digest_check_matches_the_hex_rule(difficulty):
    for i in range(3000):
        digest = hashlib.sha256(b"%d" % i).digest()
        hexed = digest.hex()
        assert digest_meets(digest, difficulty) == hexed.endswith("0" * difficulty)
    assert digest_meets(bytes(32), 64)
    assert not digest_meets(bytes(31) + b"\x10", 2)
    assert digest_meets(bytes(31) + b"\x10", 1)


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_search_finds_valid_nonces_in_its_own_space(difficulty):
    prev = "ab" * 32
    prefix = hash_prefix(prev, "node", ["hello"], 1_700_000_000)
    search = Search(7, prefix, difficulty, "3-cafe")
    found = None
    while found is None:
        found = search.batch()
    nonce, block_hash = found
    assert nonce.startswith("3-cafe") and len(nonce) <= MAX_NONCE_CHARS
    assert compute_hash(prev, "node", ["hello"], 1_700_000_000, nonce) == block_hash
    assert block_hash.endswith("0" * difficulty)


def test_distinct_tags_never_share_a_nonce():
    prefix = hash_prefix(None, "n", ["m"], 1)
    heads = {nonce_head(len(prefix), tag) for tag in ("0-00000000", "1-00000000", "a-00000000", "x1-000000", "x12-000000")}
    # Heads are prefix-free, so nonces (head + fixed-width counters) can't collide.
    for a in heads:
        for b in heads:
            assert a == b or not a.startswith(b)


def test_usable_words_keeps_at_most_ten_valid_words():
    words = ["a", "", "x" * 21, "\ud800bad", *[f"w{i}" for i in range(12)]]
    assert usable_words(words, "default") == ("a", *[f"w{i}" for i in range(9)])
    assert usable_words([], "default") == ("default",)


def test_line_reader_bounds_lines_and_survives_garbage():
    reader = LineReader(max_bytes=16)
    assert reader.feed(b'{"type":"a"}\n{"ty') == [b'{"type":"a"}']
    assert reader.feed(b'pe":"b"}\r\n') == [b'{"type":"b"}']
    assert reader.feed(b"x" * 40) == [None]  # reported once, not buffered
    assert reader.feed(b"y" * 40) == []
    assert reader.feed(b"zz\nok\n") == [b"ok"]  # the overlong line's tail is dropped
    with pytest.raises(ProtocolError):
        decode_line(b"[1, 2]")
    with pytest.raises(ProtocolError):
        decode_line(b"\xff\xfe")
    assert decode_line(encode_line({"type": "t", "n": 1}).rstrip(b"\n")) == {"type": "t", "n": 1}


def _recv_until(conn, kind, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.poll(max(0.0, deadline - time.monotonic())):
            message = conn.recv()
            if message[0] == kind:
                return message
    return None


@pytest.mark.parametrize("kernel", available_kernels())
def test_worker_switches_to_new_work_between_batches_and_stops(kernel, monkeypatch):
    """New work replaces a search in progress at the next batch boundary, not when the search ends.

    The first work (difficulty 40) would take longer than the machine will run, so a block
    found for the second at all proves the worker left the first, whatever the machine's speed.
    """
    monkeypatch.setenv(KERNEL_ENV, kernel)  # the spawned worker inherits it
    work_r, work_w = MP.Pipe(duplex=False)
    report_r, report_w = MP.Pipe(duplex=False)
    process = MP.Process(target=run_worker, args=(work_r, report_w), daemon=True)
    process.start()
    work_r.close()
    report_w.close()
    try:
        assert report_r.poll(30.0) and report_r.recv() == ("kernel", kernel)  # its first report
        prev = "cd" * 32
        prefix = hash_prefix(prev, "node", ["word"], 1_700_000_000)
        work_w.send(("work", 1, prefix, 40, "0-aaaa"))  # never found: 16**40 hashes expected
        assert _recv_until(report_r, "hashes", 10.0) is not None  # it is searching work 1
        work_w.send(("work", 2, prefix, 1, "0-bbbb"))  # found within a few dozen hashes
        found = _recv_until(report_r, "found", 30.0)  # generous: only a switch can find it at all
        assert found is not None and found[1] == 2
        nonce, block_hash = found[2], found[3]
        assert nonce.startswith("0-bbbb")
        assert compute_hash(prev, "node", ["word"], 1_700_000_000, nonce) == block_hash
        work_w.send(("work", 3, prefix, 1, "t" * (MAX_TAG_CHARS + 5)))
        assert _recv_until(report_r, "bad_work", 5.0)[1] == 3  # refused, process still alive
        assert process.is_alive()
        work_w.send(("stop",))
        process.join(5.0)
        assert process.exitcode == 0
    finally:
        if process.is_alive():
            process.kill()
            process.join()


def test_mined_blocks_fit_a_1024_byte_datagram_as_a_get_block_reply():
    """Several real peers read with 1,024-byte buffers: words of multi-byte characters are held back."""
    from chain.block import MAX_NONCE_CHARS, Block
    from messages.wire import GetBlockReply, encode

    name = "\U0001f600" * 64  # a long name of 4-byte characters
    words = ["\U0001f680" * 20 for _ in range(10)]
    chosen = usable_words(words, "default", name, 10**9)
    assert 0 < len(chosen) < 10
    block = Block(10**9, name, chosen, "9" * MAX_NONCE_CHARS, 2**63 - 1, "0" * 64)
    assert len(encode(GetBlockReply(block))) <= 1024
    assert usable_words(["short"] * 10, "default", "node", 5) == ("short",) * 10  # plain words all fit


def test_a_local_worker_runs_nicer_than_the_node_that_started_it():
    """A hashing worker must not delay the node's own wake-ups (its ANNOUNCE of the block just found)."""
    import os

    import psutil

    from mining.worker import WORKER_NICE
    from mining.worker_backends import ProcessWorker

    worker = ProcessWorker(0)
    try:
        assert worker.from_worker is not None and worker.from_worker.poll(30)  # its first report: it is running
        assert worker.from_worker.recv()[0] == "kernel"
        assert psutil.Process(worker.child_pid).nice() == min(19, os.nice(0) + WORKER_NICE)
    finally:
        worker.send(("stop",))
        worker.process.join(10)
        if worker.process.is_alive():
            worker.process.kill()
