"""The operator's figures: total hash rate, expected time per block, sync progress, the mining log line."""
from __future__ import annotations

import logging

import pytest

from ops.overview import expected_block_seconds, fmt_duration, hashrate_breakdown, sync_progress
from ops.progress_log import MiningReporter, mining_line
from tests.helpers import wait_for


def _health(*actors, consensus=None, height=0):
    return {"actors": list(actors), "consensus": consensus, "chain": {"height": height}}


def test_total_hash_rate_adds_local_ray_and_external_miners():
    doc = _health({"name": "MinerActor-0", "hashrate": 3e6}, {"name": "MinerActor-1", "hashrate": 1e6, "backend": "ray"},
                  {"name": "MinerGateway", "hashrate": 2e6, "clients": 3}, {"name": "ChainKeeper"})
    b = hashrate_breakdown(doc)
    assert (b["total"], b["local"], b["ray"], b["external"]) == (6e6, 3e6, 1e6, 2e6)
    assert (b["local_workers"], b["ray_workers"], b["external_clients"]) == (1, 1, 3)


def test_expected_time_per_block_is_16_to_the_difficulty_over_the_rate():
    assert expected_block_seconds(16**8 / 600, 8) == pytest.approx(600)
    assert expected_block_seconds(0, 8) is None
    assert [fmt_duration(s) for s in (5, 691, 3 * 3600 + 240, 3 * 86400)] == ["5s", "11m 31s", "3h 04m", "3d 0h"]


def test_mining_line_says_rate_expected_time_and_blocks_found():
    b = hashrate_breakdown(_health({"name": "MinerActor-0", "hashrate": 8e6}, {"name": "MinerGateway", "hashrate": 0, "clients": 0}))
    line = mining_line(b, 8, 2, 40)
    assert line.startswith("mining: 8.00 MH/s total (8.00 MH/s on 1 local worker(s))")
    assert "a block expected every ~8m 57s at difficulty 8" in line and "2 block(s) found since start; chain 40 blocks" in line


def test_sync_progress_is_a_percentage_of_the_blocks_to_fetch():
    doc = _health(consensus={"running": True, "stage": "fetch", "target_height": 1100, "fetched": 250}, height=100)
    progress = sync_progress(doc)
    assert progress["total"] == 1000 and progress["percent"] == pytest.approx(25.0)
    assert sync_progress(_health(consensus={"running": False})) is None


def test_a_mining_node_logs_its_hash_rate(make_node, caplog):
    node = make_node(miners=1, difficulty=30)  # never finds a block: the rate is the point
    reporter = MiningReporter(node, interval=3600, first=3600)

    def hashing_line():
        line = reporter.report()
        return line if "H/s on 1 local worker" in line and not line.startswith("mining: 0 H/s") else None

    with caplog.at_level(logging.INFO, logger="node.mining"):
        line = wait_for(hashing_line, timeout=30, interval=0.5)
    assert "a block expected every ~" in line and "at difficulty 30" in line
    assert any(r.getMessage() == line for r in caplog.records)


def test_sync_progress_prefers_what_the_sync_engine_reports():
    doc = _health(consensus={"running": True, "stage": "fetch", "target_height": 5000, "fetched": 900, "total": 3600,
                             "percent": 25.0, "blocks_per_second": 300.0, "eta_seconds": 9.0}, height=1400)
    progress = sync_progress(doc)
    assert (progress["total"], progress["percent"], progress["rate"], progress["eta_seconds"]) == (3600, 25.0, 300.0, 9.0)
