"""The ops HTTP endpoints of a real in-process node, over real HTTP on 127.0.0.1."""
from __future__ import annotations

import os
import socket

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

import node as node_module
from chain.store import ChainStore
from sim.chains import make_chain
from supervisor import ChildSpec, SupervisorPolicy
from tests.helpers import health, free_tcp_port, free_udp_port, wait_for
from tests.ops.ops_helpers import FakeMiner, actor_entry, http

CORE_ACTORS = ["ChainKeeper", "NetworkIO", "GossipManager", "ConsensusRunner"]
CHAIN_LENGTH = 120


@pytest.fixture(scope="module")
def chain():
    return make_chain(CHAIN_LENGTH, 2)


@pytest.fixture
def seeded(make_node, tmp_path, chain):
    """A node started on a data dir that already holds CHAIN_LENGTH blocks."""
    data_dir = tmp_path / "seeded"
    store = ChainStore(data_dir)
    store.replace_from(0, chain)
    store.close()
    return make_node(http_port=free_tcp_port(), data_dir=data_dir)


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_health_names_every_actor_with_its_supervision_state(make_node):
    node = make_node(http_port=free_tcp_port())
    result = http(node.config.http_port, "/health")
    assert result.status == 200
    assert result.headers["Content-Type"].startswith("application/json")
    doc = result.json()
    assert doc["status"] == "ok" and doc["reason"] is None
    assert [a["name"] for a in doc["actors"]] == CORE_ACTORS
    supervision = health(node.supervisor)["actors"]
    for entry, expected in zip(doc["actors"], supervision):
        assert entry["alive"] is True
        assert entry["restarts"] == 0
        assert entry["last_restart"] is None and entry["last_error"] is None
        assert entry["urn"] == expected["urn"] and entry["urn"].startswith("urn:uuid:")
        assert entry["messages"] >= 1  # at least the supervisor's start-up ping
        # (the node's own probes keep ChainKeeper and NetworkIO lightly busy: a message may be queued)
        assert isinstance(entry["queue_depth"], int) and entry["instances"] == 1
        assert entry["activity"] in ("idle", "busy") and entry["budget"] > 0
    assert doc["chain"] == {"height": 0, "hash": None}
    assert doc["peers"] == []
    assert doc["process"]["pid"] == os.getpid()
    assert doc["process"]["rss_bytes"] > 10 * 2**20
    assert isinstance(doc["process"]["cpu_percent"], float)
    assert doc["node"]["udp"] == f"127.0.0.1:{node.config.port}"


def test_health_shows_chain_tip_and_peers(seeded, chain, client):
    client.send(seeded.config.port, {"type": "GOSSIP", "host": "127.0.0.1", "port": client.address[1],
                                     "id": "ops-test-1", "name": "friend"})
    assert client.recv(expect="GOSSIP_REPLY") is not None
    doc = http(seeded.config.http_port, "/health").json()
    assert doc["chain"] == {"height": CHAIN_LENGTH, "hash": chain[-1].hash}
    assert [(p["name"], p["host"], p["port"]) for p in doc["peers"]] == [("friend", "127.0.0.1", client.address[1])]
    assert 0 <= doc["peers"][0]["last_seen_age"] < 5


def test_metrics_has_per_actor_series_from_the_start_and_chain_height(seeded):
    result = http(seeded.config.http_port, "/metrics")
    assert result.status == 200
    assert result.headers["Content-Type"].startswith("text/plain")
    samples = metric_samples(result.text)
    for actor in CORE_ACTORS:
        labels = (("actor", actor),)
        # Present (as 0) before any restart or error: dashboards see the series at once.
        assert samples[("node_actor_restarts_total", labels)] == 0
        assert samples[("node_actor_errors_total", labels)] == 0
        assert samples[("node_actor_up", labels)] == 1
        assert samples[("node_actor_messages_total", labels)] >= 1
        assert ("node_actor_queue_depth", labels) in samples
    assert samples[("node_chain_height", ())] == CHAIN_LENGTH
    assert samples[("node_peers", ())] == 0
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert ("node_process_cpu_percent", ()) in samples
    assert ("node_supervisor_gave_up", ()) in samples and samples[("node_supervisor_gave_up", ())] == 0


def test_metrics_count_datagrams_by_type_and_malformed_by_reason(make_node, client):
    node = make_node(http_port=free_tcp_port())
    assert client.ask(node.config.port, {"type": "STATS"}) is not None
    client.send(node.config.port, b"\xff\xfe not json")
    wait_for(lambda: 'node_malformed_datagrams_total{reason=' in http(node.config.http_port, "/metrics").text)
    samples = metric_samples(http(node.config.http_port, "/metrics").text)
    # Ours, and the node's own end-to-end probes (a real STATS every 2 s, runtime/probes.py).
    assert samples[("node_datagrams_received_total", (("type", "STATS"),))] >= 1
    assert samples[("node_datagrams_sent_total", (("type", "STATS_REPLY"),))] >= 1
    assert sum(v for (name, _), v in samples.items() if name == "node_malformed_datagrams_total") == 1


def test_prometheus_app_answers_only_at_metrics(make_node):
    node = make_node(http_port=free_tcp_port())
    for path in ["/metrics/extra", "/nope", "/metricsx"]:
        result = http(node.config.http_port, path)
        assert result.status == 404, path
        assert "error" in result.json()
        assert b"node_chain_height" not in result.body


def test_status_page_is_html_with_tip_blocks_actors_and_escaped_peer_names(seeded, chain, client):
    client.send(seeded.config.port, {"type": "GOSSIP", "host": "127.0.0.1", "port": client.address[1],
                                     "id": "ops-test-2", "name": "<script>x</script>"})
    assert client.recv(expect="GOSSIP_REPLY") is not None
    result = http(seeded.config.http_port, "/")
    assert result.status == 200
    assert result.headers["Content-Type"].startswith("text/html")
    page = result.text
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert 'http-equiv="refresh"' not in page  # updated in place by the script, never reloaded
    assert chain[-1].hash in page and chain[-10].hash in page  # the tip and recent blocks (first paint)
    assert chain[-11].hash not in page  # only the 10 most recent
    for actor in CORE_ACTORS:
        assert f'"name":"{actor}"' in page.replace(" ", "")
    assert "<script>x</script>" not in page  # the peer's name is data, never markup
    assert "\\u003cscript\\u003ex\\u003c/script\\u003e" in page


def test_chain_returns_blocks_in_wire_form(seeded, chain):
    port = seeded.config.http_port
    blocks = http(port, "/chain?from=5&limit=3").json()
    assert blocks == [b.to_wire() for b in chain[5:8]]
    assert set(blocks[0]) == {"height", "minedBy", "messages", "nonce", "timestamp", "hash"}
    assert http(port, "/chain").json() == [b.to_wire() for b in chain[:20]]
    assert len(http(port, "/chain?limit=1000").json()) == 100  # capped
    assert http(port, f"/chain?from={CHAIN_LENGTH - 2}&limit=50").json() == [b.to_wire() for b in chain[-2:]]
    assert http(port, f"/chain?from={CHAIN_LENGTH + 5}").json() == []


@pytest.mark.parametrize("query, word", [("from=x", "from"), ("from=-1", "from"), ("limit=0", "limit"),
                                         ("limit=abc", "limit"), ("from=1.5", "from")])
def test_chain_bad_parameters_are_400_with_a_clear_error(make_node, query, word):
    node = make_node(http_port=free_tcp_port())
    result = http(node.config.http_port, f"/chain?{query}")
    assert result.status == 400
    assert result.headers["Content-Type"].startswith("application/json")
    assert f"'{word}'" in result.json()["error"]


def test_peers_is_json(make_node, client):
    node = make_node(http_port=free_tcp_port())
    assert http(node.config.http_port, "/peers").json() == []
    client.send(node.config.port, {"type": "GOSSIP", "host": "127.0.0.1", "port": client.address[1],
                                   "id": "ops-test-3", "name": "p1"})
    assert client.recv(expect="GOSSIP_REPLY") is not None
    peers = http(node.config.http_port, "/peers").json()
    assert [(p["name"], p["port"]) for p in peers] == [("p1", client.address[1])]


def _non_loopback_ipv4() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


def test_http_listens_on_loopback_only(make_node):
    node = make_node(http_port=free_tcp_port())
    port = node.config.http_port
    listening = [c.laddr for c in psutil.Process().net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert [addr.ip for addr in listening] == ["127.0.0.1"]
    other = _non_loopback_ipv4()
    if other is not None:
        with pytest.raises(OSError):
            socket.create_connection((other, port), timeout=1).close()


def test_stop_releases_the_port_for_the_next_node(make_served_node):
    port = free_tcp_port()
    first = make_served_node(http_port=port)
    assert http(port, "/health").status == 200
    first.stop()  # the HTTP server first, then the node
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    second = make_served_node(http_port=port)
    assert http(port, "/health").json()["node"]["udp"] == f"127.0.0.1:{second.node.config.port}"


def test_a_taken_port_fails_the_start_with_one_line_naming_it(make_node):
    from runtime.startup import StartupError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"ops HTTP port {port} is in use on 127.0.0.1"):
            make_node(http_port=port, port=free_udp_port())


def test_a_port_taken_after_the_check_fails_the_start_and_stops_the_actors(make_node, monkeypatch):
    import ops.runner

    monkeypatch.setattr(ops.runner, "check_http_port", lambda host, port: None)  # lose the race
    udp_port = free_udp_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            make_node(http_port=port, port=udp_port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", udp_port))  # NetworkIO was stopped and its socket closed


def start_node_with_fake_miner(make_node, monkeypatch, **overrides):
    """A node with ops HTTP whose children include a FakeMiner as MinerActor-0."""
    real_specs = node_module.child_specs
    spec = ChildSpec("MinerActor-0", lambda ctx, name: FakeMiner.start(ctx, name), shutdown_timeout=1.0)
    monkeypatch.setattr(node_module, "child_specs", lambda config, *policies: real_specs(config, *policies) + [spec])
    return make_node(http_port=free_tcp_port(), enable_fault_injection=True, **overrides)


@pytest.fixture
def node_with_fake_miner(make_node, monkeypatch):
    return start_node_with_fake_miner(make_node, monkeypatch)


def test_miner_details_appear_in_health_metrics_and_page(node_with_fake_miner):
    port = node_with_fake_miner.config.http_port
    miner = actor_entry(http(port, "/health").json(), "MinerActor-0")
    assert miner["alive"] is True
    assert miner["pid"] == os.getpid() and miner["hashrate"] == FakeMiner.HASHRATE
    assert miner["cpu_percent"] == 12.5 and miner["rss_bytes"] == 4096
    samples = metric_samples(http(port, "/metrics").text)
    assert samples[("node_miner_hashrate_hashes_per_second", (("backend", "process"), ("miner", "0")))] == FakeMiner.HASHRATE
    assert samples[("node_miner_worker_cpu_percent", (("backend", "process"), ("miner", "0")))] == 12.5
    assert samples[("node_actor_restarts_total", (("actor", "MinerActor-0"),))] == 0
    overview = http(port, "/api/overview").json()
    assert overview["mining"]["total"] == FakeMiner.HASHRATE and overview["mining"]["local_workers"] == 1


NEVER = 3600.0  # seconds: longer than any test runs, so "after it ends" never comes within one


def test_a_hung_actor_does_not_hang_health(make_node, monkeypatch):
    """/health collects the actors' answers before one deadline and reports a silent one as such.

    The miner is stalled for an hour and its budget is an hour (so the supervisor leaves the
    stalled instance in place): a /health that waited for the miner could not answer during
    the test at all, so any answer proves the deadline cut the wait, whatever the machine's speed.
    """
    node = start_node_with_fake_miner(make_node, monkeypatch, message_budgets=(("MinerActor-0", NEVER),))
    node.ctx.registry.proxy("MinerActor-0").stall.defer(NEVER)
    wait_for(lambda: "stall" in (actor_entry(health(node), "MinerActor-0")["current"] or ""), timeout=10)
    result = http(node.config.http_port, "/health", timeout=60)  # generous: it only must not wait for the hour
    assert result.status == 200
    assert "stall" in (actor_entry(health(node), "MinerActor-0")["current"] or "")  # still hung when answered
    doc = result.json()
    miner = actor_entry(doc, "MinerActor-0")
    assert "no answer" in miner["details_error"]
    assert miner["hashrate"] is None  # the key is there, the value unknown
    assert doc["chain"] == {"height": 0, "hash": None}  # the others still answered


def test_endpoints_keep_answering_while_chain_keeper_is_down(make_node):
    slow_restart = SupervisorPolicy(backoff_base=20.0, backoff_max=20.0, watch_interval=0.05, start_timeout=2.0)
    node = make_node(policy=slow_restart, http_port=free_tcp_port())
    port = node.config.http_port
    node.ctx.registry.proxy("ChainKeeper").crash.defer("test")
    doc = wait_for(lambda: (d := http(port, "/health").json())["status"] == "degraded" and d, timeout=5)
    assert doc["reason"] == "restarting: ChainKeeper"
    assert doc["chain"]["height"] is None and doc["chain"]["hash"] is None and "not running" in doc["chain"]["error"]
    assert actor_entry(doc, "ChainKeeper")["alive"] is False
    assert actor_entry(doc, "NetworkIO")["alive"] is True
    page = http(port, "/")
    assert page.status == 200
    overview = http(port, "/api/overview").json()
    assert overview["status"] == "degraded" and overview["reason"] == "restarting: ChainKeeper"
    assert overview["chain"]["height"] is None and "not running" in overview["chain"]["error"]
    assert http(port, "/block/0").status == 503
    chain = http(port, "/chain")
    assert chain.status == 503 and "ChainKeeper" in chain.json()["error"]
    assert 'node_actor_up{actor="ChainKeeper"} 0.0' in http(port, "/metrics").text


def test_the_serving_thread_is_kept_a_fault_in_it_is_counted_and_it_serves_again(make_node):
    node = make_node(http_port=free_tcp_port(), enable_fault_injection=True)
    port = node.config.http_port
    threads = {t["name"]: t for t in http(port, "/health").json()["threads"]}
    assert threads["ops.http"]["alive"] is True and threads["ops.http"]["restarts"] == 0
    killed = http(port, "/admin/kill-thread/ops.http", method="POST")
    assert killed.status == 202

    def restarted():
        try:
            doc = http(port, "/health", timeout=2).json()
        except OSError:  # between the dying run and the next one
            return None
        thread = next(t for t in doc["threads"] if t["name"] == "ops.http")
        return thread["restarts"] == 1 and thread["alive"] and thread

    thread = wait_for(restarted, timeout=20)
    assert "InjectedFault" in thread["error"]
    assert http(port, "/chain").status == 200  # the same port, serving again
