"""Fixtures: in-process nodes on loopback with free ports and low difficulty."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from node import Node
from supervisor import SupervisorPolicy
from tests.helpers import UdpClient, node_config

FAST_POLICY = SupervisorPolicy(max_restarts=20, period=10.0, backoff_base=0.02, backoff_max=0.5, watch_interval=0.05, ping_timeout=2.0)
# The subtrees' own budgets, as tolerant as the root's in tests that crash actors on purpose.
FAST_SUB_POLICY = SupervisorPolicy(max_restarts=20, period=10.0, backoff_base=0.02, backoff_max=0.5, watch_interval=0.05,
                                   ping_timeout=2.0, cooldown_base=1.0, cooldown_max=2.0)


@pytest.fixture
def make_node(tmp_path) -> Iterator[Callable[..., Node]]:
    """Start nodes; all are stopped at the end of the test."""
    nodes: list[Node] = []

    def start(policy: SupervisorPolicy | None = FAST_POLICY, sub_policy: SupervisorPolicy = FAST_SUB_POLICY,
              **overrides: Any) -> Node:
        node = Node(node_config(tmp_path, **overrides), policy, sync_policy=sub_policy, miners_policy=sub_policy).start()
        nodes.append(node)
        return node

    yield start
    for node in reversed(nodes):
        node.stop()


@pytest.fixture
def client() -> Iterator[UdpClient]:
    c = UdpClient()
    yield c
    c.close()
