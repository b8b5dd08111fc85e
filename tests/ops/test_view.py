"""ops sees a node only through ops/view.py: `Node` must offer every member, and the HTTP server must work with any view.

The /admin endpoints are checked against a recording `FaultInjector`, so what they
parse and how they turn each documented error into a status code is tested apart
from what the node does with a fault.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

import pytest

from node import Node
from ops.http_server import OpsHttpServer
from ops.view import FaultInjector, NodeView
from tests.helpers import free_tcp_port, node_config
from tests.ops.ops_helpers import http


def _members(protocol: type) -> dict[str, Any]:
    return {name: value for name, value in vars(protocol).items() if not name.startswith("_")}


@pytest.mark.parametrize("protocol", [NodeView, FaultInjector])
def test_node_offers_every_member_of_the_protocol_with_the_same_parameters(tmp_path, protocol):
    node = Node(node_config(tmp_path))  # not started: nothing runs
    members = _members(protocol)
    assert members  # the protocol is read
    for name, declared in members.items():
        assert hasattr(node, name), f"Node has no {name}"
        if isinstance(declared, property):
            assert not callable(getattr(node, name)), f"Node.{name} should be a value, not a method"
            continue
        offered = inspect.signature(getattr(Node, name))
        assert list(offered.parameters) == list(inspect.signature(declared).parameters), f"Node.{name}"


class RecordingFaults:
    """A FaultInjector that records each call and answers, or raises, what the test set."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.error: BaseException | None = None

    def _do(self, *call: Any) -> dict[str, Any]:
        self.calls.append(call)
        if self.error is not None:
            raise self.error
        return {"done": list(call)}

    def crash(self, actor: str, reason: str = "fault injection") -> dict[str, Any]:
        return self._do("crash", actor, reason)

    def stall(self, actor: str, seconds: float) -> dict[str, Any]:
        return self._do("stall", actor, seconds)

    def kill_thread(self, thread: str) -> dict[str, Any]:
        return self._do("kill_thread", thread)

    def thread_names(self) -> list[str]:
        return ["NetworkIO.reader"]


class OnPort:
    """A stand-in view: a node's, with the HTTP port the test picked (everything else read through)."""

    def __init__(self, node: Node, http_port: int) -> None:
        self._node = node
        self.config = dataclasses.replace(node.config, http_port=http_port)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)


@pytest.fixture
def recorded(make_node):
    """(port, faults): an ops server over a running node's view with a recording FaultInjector."""
    faults = RecordingFaults()
    server = OpsHttpServer(OnPort(make_node(), free_tcp_port()), faults).start()
    try:
        yield server.port, faults
    finally:
        server.stop()


def _post(port: int, path: str, doc: Any = None) -> Any:
    return http(port, path, method="POST", body=None if doc is None else json.dumps(doc).encode())


def test_each_admin_endpoint_hands_its_fault_to_the_injector(recorded):
    port, faults = recorded
    assert _post(port, "/admin/crash/GossipManager").json() == {
        "done": ["crash", "GossipManager", "fault injection via HTTP"]}
    stalled = _post(port, "/admin/stall/ChainKeeper", {"seconds": 1.5})
    assert stalled.status == 202 and stalled.json() == {"done": ["stall", "ChainKeeper", 1.5]}
    killed = _post(port, "/admin/kill-thread/NetworkIO.reader")
    assert killed.status == 202 and killed.json() == {"done": ["kill_thread", "NetworkIO.reader"]}
    assert len(faults.calls) == 3


@pytest.mark.parametrize("body", [None, {}, {"seconds": 0}, {"seconds": -1}, {"seconds": "5"}, {"seconds": True},
                                  {"seconds": 1e9}, [5]])
def test_stall_without_a_good_seconds_is_400_and_injects_nothing(recorded, body):
    port, faults = recorded
    result = _post(port, "/admin/stall/ChainKeeper", body)
    assert result.status == 400 and "seconds" in result.json()["error"]
    assert faults.calls == []


@pytest.mark.parametrize("error, status", [
    (LookupError("no actor named 'Nope'"), 404),
    (KeyError("no thread named 'x.y'"), 404),
    (RuntimeError("ChainKeeper is not running (restarting or stopped)"), 409),
    (TimeoutError("MinerActor-0 did not answer kill_worker within 2s"), 504),
    (NotImplementedError("stalling an actor is not offered by this node yet"), 501),
])
def test_each_documented_injector_error_has_its_status_and_says_why(recorded, error, status):
    port, faults = recorded
    faults.error = error
    for path, body in (("/admin/crash/ChainKeeper", None), ("/admin/stall/ChainKeeper", {"seconds": 1}),
                       ("/admin/kill-thread/x.y", None)):
        result = _post(port, path, body)
        assert result.status == status, path
        assert result.json()["error"] == error.args[0], path


def test_a_404_for_a_crash_lists_the_actors_there_are(recorded):
    port, faults = recorded
    faults.error = LookupError("no actor named 'Nope'")
    assert _post(port, "/admin/crash/Nope").json()["actors"] == [
        "ChainKeeper", "NetworkIO", "GossipManager", "ConsensusRunner"]


def test_without_an_injector_every_admin_endpoint_is_403(make_node):
    node = make_node(http_port=free_tcp_port())  # fault injection not enabled: the runner hands ops no injector
    for path, body in (("/admin/crash/ChainKeeper", None), ("/admin/stall/ChainKeeper", {"seconds": 1}),
                       ("/admin/kill-thread/NetworkIO.reader", None)):
        result = _post(node.config.http_port, path, body)
        assert result.status == 403 and "--enable-fault-injection" in result.json()["error"], path
