"""Hypothesis against a live node: random datagrams and well-formed messages with wrong types."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import Node
from sim.chains import make_chain
from tests.conftest import FAST_POLICY
from tests.helpers import health, UdpClient, node_config, wait_for

TYPES = ["GOSSIP", "GOSSIP_REPLY", "GET_BLOCK", "GET_BLOCK_REPLY", "ANNOUNCE", "STATS", "STATS_REPLY", "CONSENSUS", "NEW_WORD"]
FIELDS = ["host", "port", "id", "name", "height", "hash", "minedBy", "messages", "nonce", "timestamp", "word"]
wrong_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True),
    st.text(max_size=40), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    node = Node(node_config(tmp_path_factory.mktemp("fuzz")), FAST_POLICY).start()
    chain = make_chain(5, 2)
    assert node.ctx.registry.proxy("ChainKeeper").apply_segment(0, chain).get(timeout=5)
    client = UdpClient()
    yield node, client, chain
    client.close()
    node.stop()


def _malformed(node) -> float:
    return sum(s.value for m in node.ctx.metrics.malformed.collect() for s in m.samples if s.name.endswith("_total"))


def _restarts(node) -> int:
    return sum(a["restarts"] for a in health(node)["actors"])


def _still_serving(node, client, chain):
    reply = wait_for(lambda: client.ask(node.config.port, {"type": "STATS"}, timeout=0.5), timeout=5)
    assert reply == {"type": "STATS_REPLY", "height": 5, "hash": chain[-1].hash}
    assert health(node)["status"] == "ok"
    assert all(a["alive"] for a in health(node)["actors"])
    assert _restarts(node) == 0


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def test_random_datagrams(live):
    node, client, chain = live
    before = _malformed(node)

    @FUZZ
    @given(data=st.binary(max_size=1500))
    def send(data):
        client.sock.sendto(data, ("127.0.0.1", node.config.port))
        assert _restarts(node) == 0  # a crash from an earlier example shows up here

    send()
    _still_serving(node, client, chain)
    wait_for(lambda: _malformed(node) - before > 100)  # most random bytes are not a message


def test_valid_looking_messages_with_wrong_types(live):
    node, client, chain = live
    before = _malformed(node)

    @FUZZ
    @given(kind=st.sampled_from(TYPES), fields=st.dictionaries(st.sampled_from(FIELDS), wrong_values, max_size=8))
    def send(kind, fields):
        if "host" in fields:
            fields["host"] = "127.0.0.1"  # any reply the node sends stays on loopback
        client.sock.sendto(json.dumps({"type": kind, **fields}).encode(), ("127.0.0.1", node.config.port))
        assert _restarts(node) == 0

    send()
    _still_serving(node, client, chain)
    wait_for(lambda: _malformed(node) - before > 100)  # wrong types are refused by the codec, counted
