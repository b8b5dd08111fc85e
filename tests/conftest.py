"""Fixtures: in-process nodes on loopback with free ports and low difficulty."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from node import Node
from ops.runner import ServedNode, start_node_with_http
from supervisor import SupervisorPolicy
from tests.helpers import UdpClient, node_config

FAST_POLICY = SupervisorPolicy(max_restarts=20, period=10.0, backoff_base=0.02, backoff_max=0.5, watch_interval=0.05, start_timeout=2.0)
# The subtrees' own budgets, as tolerant as the root's in tests that crash actors on purpose.
FAST_SUB_POLICY = SupervisorPolicy(max_restarts=20, period=10.0, backoff_base=0.02, backoff_max=0.5, watch_interval=0.05,
                                   start_timeout=2.0, cooldown_base=1.0, cooldown_max=2.0)


@pytest.fixture
def make_served_node(tmp_path) -> Iterator[Callable[..., ServedNode[Node]]]:
    """Start nodes, each with its ops HTTP when `http_port` is given (as run_node.py does); all stopped at the end."""
    served: list[ServedNode[Node]] = []

    def start(policy: SupervisorPolicy | None = FAST_POLICY, sub_policy: SupervisorPolicy = FAST_SUB_POLICY,
              **overrides: Any) -> ServedNode[Node]:
        node = Node(node_config(tmp_path, **overrides), policy, sync_policy=sub_policy, miners_policy=sub_policy)
        served.append(start_node_with_http(node))
        return served[-1]

    yield start
    for each in reversed(served):
        each.stop()


@pytest.fixture
def make_node(make_served_node) -> Callable[..., Node]:
    """Like `make_served_node`, for the tests that need only the node (its HTTP server is stopped with it at the end)."""

    def start(*args: Any, **overrides: Any) -> Node:
        return make_served_node(*args, **overrides).node

    return start


@pytest.fixture
def client() -> Iterator[UdpClient]:
    c = UdpClient()
    yield c
    c.close()
