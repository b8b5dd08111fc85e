"""The largest block we mine, as we send it and as a Python peer re-serves it.

Run by hand:  python bench/bench_block_size.py [--rounds 3]

A live in-process node (one miner, difficulty 2) is sent NEW_WORDs of the kinds that
grow most when re-encoded with `json.dumps` defaults (characters outside the BMP: 4
bytes as UTF-8, 12 as `\\uXXXX\\uXXXX`; BMP letters: 2 -> 6; quotes and backslashes:
1 -> 2), and mines them. For every block it mines, measured: its size as our
GET_BLOCK_REPLY (compact UTF-8) and as a Python peer re-encodes it
(`chain.block.python_reply_bytes`). Two runs in the same process: the word rule
before (our own encoding only within 1,024 bytes) and now (the re-encoded form too).
"""
from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import actors.miner as miner  # noqa: E402
from chain.block import python_reply_bytes  # noqa: E402
from config import NodeConfig  # noqa: E402
from messages.wire import GetBlockReply, encode, fits_in_a_reply  # noqa: E402
from node import Node  # noqa: E402


def words(round_no: int) -> list[str]:
    base = 0x1F680 + 16 * round_no
    return ([chr(base + i) * 20 for i in range(6)] + ['"\\' * 10, '\\"' * 10]
            + [chr(0x100 + 8 * round_no + i) * 20 for i in range(4)])


def run(rounds: int, old_rule: bool) -> tuple[int, int, int]:
    """(blocks with a queued word, largest as we send it, largest re-encoded)."""
    saved = miner.fits_however_reencoded
    if old_rule:
        miner.fits_however_reencoded = fits_in_a_reply
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            node = Node(NodeConfig(host="127.0.0.1", bind_host="127.0.0.1", port=port, name="size-bench", difficulty=2,
                                   miners=1, data_dir=Path(tmp) / "node", probe_interval=0)).start()
            keeper = node.ctx.registry.proxy("ChainKeeper")
            sent: list[str] = []
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                    for r in range(rounds):
                        for word in words(r):
                            client.sendto(('{"type":"NEW_WORD","word":"%s"}' % word.replace("\\", "\\\\").replace('"', '\\"')).encode(),
                                          ("127.0.0.1", port))
                            sent.append(word)
                        time.sleep(0.2)
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    chain = keeper.get_blocks(0, 100_000).get(timeout=10)
                    if sum(1 for b in chain for m in b.messages if m in sent) >= len(sent):
                        break
                    time.sleep(0.2)
                carrying = [b for b in chain if set(b.messages) & set(sent)]
                ours = max(len(encode(GetBlockReply(b))) for b in chain)
                python = max(python_reply_bytes(b) for b in chain)
                return len(carrying), ours, python
            finally:
                node.stop()
    finally:
        miner.fits_however_reencoded = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="batches of 12 worst-case words")
    args = parser.parse_args()
    for old_rule in (True, False):
        blocks, ours, python = run(args.rounds, old_rule)
        label = "before (our encoding only)" if old_rule else "now (re-encoded too)      "
        print(f"{label}: {12 * args.rounds} words in {blocks} blocks; largest block: {ours} B as we send it, "
              f"{python} B re-encoded by json.dumps defaults (limit 1024)")


if __name__ == "__main__":
    main()
