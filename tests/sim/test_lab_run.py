"""A small lab run (8 nodes, 60 s, one partition, one kill and restart, one join), its report checked
against the nodes themselves: what each node's /health and /chain say before the lab stops them."""
from __future__ import annotations

import json

import psutil
import pytest

from sim.lab import observe
from sim.lab.run import Lab, LabConfig


@pytest.mark.timeout(900)
def test_a_small_lab_run_reports_what_the_nodes_say(tmp_path):
    config = LabConfig(out=tmp_path / "lab", nodes=8, miners=2, minutes=1.0, block_interval=4.0, regions=5, loss=0.01,
                       partitions=[(15.0, 15.0)], churn=1.0, joins=1.0, down_s=3.0, seed=7)
    lab = Lab(config)
    pids: list[int] = []
    try:
        lab.start()
        listed = json.loads((tmp_path / "lab" / "nodes.json").read_text())
        assert [n["name"] for n in listed] == [f"n{i:03d}" for i in range(8)]
        for entry in listed:  # every node's ops HTTP answers from the host during the run
            host, port = entry["http"].split(":")
            assert observe.health(host, int(port)) is not None, entry
        lab.play()
        collected = lab.collect()

        # The nodes themselves, read before anything is stopped.
        running = [n for n in lab.nodes if n.running]
        pids = [n.popen.pid for n in running]
        listed = json.loads((tmp_path / "lab" / "nodes.json").read_text())
        assert {n["name"] for n in listed} == {n.name for n in lab.nodes}  # the joined node was added as it started
        assert len(lab.nodes) == 9 and len(running) == 9
        for (height, top), count in collected["tips"].items():
            holders = [n for n in running if (collected["final"]["nodes"][n.name]["height"], collected["final"]["nodes"][n.name]["hash"]) == (height, top)]
            assert len(holders) == count
            for node in holders:  # the node still has that block where the report says (it may have moved on since)
                chain = observe.chain_hashes(node.bind_ip, node.http_port, height)
                assert chain is not None and chain[height - 1] == top
                doc = observe.health(node.bind_ip, node.http_port)
                assert doc is not None and doc["chain"]["height"] >= height
        assert sum(collected["tips"].values()) == len(running)  # every running node answered the last reading
        best = max(collected["tips"].items(), key=lambda kv: (kv[0][0] or 0, kv[1]))[0]  # longest, then most held
        holder = next(n for n in running if collected["final"]["nodes"][n.name]["hash"] == best[1])
        assert observe.chain_hashes(holder.bind_ip, holder.http_port, best[0]) == collected["chain"]
    finally:
        lab.stop()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert lab.relay is not None and lab.relay.popen.poll() is not None

    report = lab.report()
    on_disk = json.loads((tmp_path / "lab" / "report.json").read_text())
    assert on_disk["final_tips"] == report["final_tips"]
    assert (tmp_path / "lab" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for key in ("nodes", "blocks", "propagation_ms", "stale_rate", "partition_heal_s", "churn_catchup_s", "peers_known",
                "bytes_per_block_per_node", "node_rss_mb", "exits", "final_tips"):
        assert key in report, key

    assert report["nodes"] == 9
    assert report["exits"] == []
    assert report["blocks"] == len(collected["chain"]) > 0
    assert sum(report["final_tips"].values()) == 9
    assert report["final_tips"] == {f"{h}:{x[:16]}": c for (h, x), c in sorted(collected["tips"].items(), key=lambda kv: -kv[1])}
    assert report["mined"] == report["blocks_in_run"] + report["stale"]  # every block mined in the run: final or stale
    assert report["stale_rate"] == round(report["stale"] / report["mined"], 4)
    assert [e["kind"] for e in report["events"]].count("kill") == 1
    assert [e["kind"] for e in report["events"]].count("restart") == 1
    assert [e["kind"] for e in report["events"]].count("join") == 1
    assert len(report["cuts"]) == 1 and len(report["partition_heal_s_each"]) == 1
    if len(report["final_tips"]) == 1:  # the nodes agreed at the end, so they agreed some time after the heal
        assert report["partition_heal_s"] is not None and report["partition_heal_s"] >= 0
    assert report["churn_catchup_s"]["restarts"] == 1
    assert report["mined"] > 0 and report["blocks_in_run"] > 0  # the nodes' log lines were read
    p = report["propagation_ms"]
    assert p["pairs"] > 0 and 0 <= p["p50"] <= p["p90"] <= p["p99"] <= p["max"]
    assert 1 <= report["peers_known"]["min"] <= report["peers_known"]["median"] <= 8
    assert report["bytes_per_block_per_node"] > 0
    assert 5 < report["node_rss_mb"]["median"] <= report["node_rss_mb"]["max"] < 1000
