"""kill -9 in the middle of a long sync keeps what was validated, and the chain stays one whole version."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sim.chains import make_chain
from sim.peer import ScriptedPeer
from tests.helpers import UdpClient, free_udp_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 2000


def start(data_dir: Path, port: int, peer) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "run_node.py", "--host", "127.0.0.1", "--port", str(port), "--name", "n", "--difficulty", "2",
         "--miners", "0", "--data-dir", str(data_dir), "--http-port", "0", "--peer", f"{peer[0]}:{peer[1]}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def quiet(peer, for_seconds: float = 0.5) -> bool:
    before = len(peer.get_block_heights)
    time.sleep(for_seconds)
    return len(peer.get_block_heights) == before


def counts(db: Path) -> tuple[int, int]:
    """(blocks, staged) as another process sees them (committed transactions only)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            blocks = conn.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]
            staged = conn.execute("SELECT COUNT(*) FROM staging").fetchone()[0]
            return blocks, staged
    except sqlite3.OperationalError:
        return 0, 0


def test_kill_minus_nine_mid_sync_keeps_the_staged_segments_and_the_old_chain(tmp_path):
    # Long enough that the kill lands after two staged chunks (512 blocks each) and well
    # before the switch (another ~900 blocks to fetch), short enough to be quick.
    chain = make_chain(TOTAL, 2)
    data_dir = tmp_path / "d"
    db = data_dir / "chain.sqlite3"
    port = free_udp_port()
    client = UdpClient()
    # One block every ~2 ms, one after another: the sync takes seconds, so the kill lands in it.
    with ScriptedPeer(chain, reply_delay=0.002, name="slow") as peer:
        proc = start(data_dir, port, peer.address)
        try:
            wait_for(lambda: counts(db)[1] >= 1024, timeout=60, interval=0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            blocks, staged = counts(db)
            assert blocks == 0  # never a partial chain: the old version (empty) until the switch
            assert 1024 <= staged < TOTAL
            staged_low = TOTAL - staged
            # Let the peer work off the requests the killed node left queued at it.
            wait_for(lambda: quiet(peer), timeout=30, interval=0.01)
            asked_first = len(peer.get_block_heights)
            proc = start(data_dir, port, peer.address)
            wait_for(lambda: (client.ask(port, {"type": "STATS"}, timeout=0.5) or {}).get("height") == TOTAL, timeout=60)
            reply = client.ask(port, {"type": "STATS"})
            assert reply == {"type": "STATS_REPLY", "height": TOTAL, "hash": chain[-1].hash}
            asked_second = peer.get_block_heights[asked_first:]
            assert asked_second and max(asked_second) < staged_low  # resumed below what was staged
            assert counts(db) == (TOTAL, 0)
        finally:
            client.close()
            proc.kill()
            proc.wait()
