"""End-to-end probes: the pure record, and the judgement /health makes of it."""
from __future__ import annotations

from ops.health import render_health
from runtime.probes import ProbeBook
from tests.helpers import health, wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def facts(probes):
    tree = {"name": "node", "kind": "supervisor", "state": "running", "children": []}
    return {"supervision": tree, "actors": [], "gave_up": None, "probes": probes}


def test_a_probe_is_ok_until_its_last_success_is_stale():
    clock = Clock()
    book = ProbeBook(clock, stale_after=4.5)
    book.register("udp", "NetworkIO", core=True)
    assert book.report()[0]["ok"]  # not had the time to run yet
    clock.now += 5
    assert not book.report()[0]["ok"]  # never succeeded in 5 s
    book.success("udp")
    clock.now += 4.0
    entry = book.report()[0]
    assert entry["ok"] and entry["last_success_age"] == 4.0
    book.failure("udp", "TimeoutError: no STATS_REPLY within 1s")
    clock.now += 1.0
    entry = book.report()[0]
    assert not entry["ok"] and "no STATS_REPLY" in entry["last_error"]


def test_a_failing_core_probe_is_down_and_an_expendable_one_degraded_naming_the_part():
    clock = Clock()
    book = ProbeBook(clock, stale_after=4.5)
    book.register("udp", "NetworkIO", core=True)
    book.register("gateway", "MinerGateway", core=False)
    book.success("udp")
    book.success("gateway")
    assert render_health(facts(book.report()))["status"] == "ok"
    clock.now += 3
    book.success("udp")
    clock.now += 3  # the gateway's last success is 6 s old
    doc = render_health(facts(book.report()))
    assert doc["status"] == "degraded" and doc["reason"].startswith("MinerGateway: gateway probe failing")
    clock.now += 3  # and now the UDP one too
    doc = render_health(facts(book.report()))
    assert doc["status"] == "down" and "NetworkIO: udp probe failing" in doc["reason"]


def test_a_live_node_proves_its_parts(make_node):
    node = make_node(probe_interval=0.2)
    wait_for(lambda: all(p["successes"] > 0 for p in node.probes.report()))
    doc = health(node)
    assert doc["status"] == "ok", doc["reason"]
    assert {p["name"] for p in doc["probes"]} == {"udp", "store", "prober"}
    assert all(p["last_success_age"] is not None and p["ok"] for p in doc["probes"])


def test_a_killed_prober_thread_is_restarted_and_counted(make_node):
    node = make_node(probe_interval=0.2)
    first = node.prober.thread
    node.kill_thread("node.prober")
    wait_for(lambda: node.prober.thread is not first and node.prober.thread.is_alive())
    kept = health(node)["threads"][0]
    assert kept["name"] == "node.prober" and kept["restarts"] == 1 and "InjectedFault" in kept["error"]
    wait_for(lambda: health(node)["status"] == "ok")


def test_a_prober_that_keeps_dying_reads_as_down_until_it_works_again(make_node, monkeypatch):
    node = make_node(probe_interval=0.2)
    wait_for(lambda: health(node)["status"] == "ok")

    def broken() -> None:
        raise OSError("the prober itself is broken")

    monkeypatch.setattr(node.prober, "run_once", broken)
    doc = wait_for(lambda: (d := health(node))["status"] == "down" and d, timeout=30)
    assert "node: prober probe failing" in doc["reason"] and "udp probe failing" in doc["reason"]
    monkeypatch.undo()
    wait_for(lambda: health(node)["status"] == "ok", timeout=60)
