"""The version, defined once in version.py, in /health (`node.version`) and in `run_node.py status`."""
from __future__ import annotations

import json

from tests.helpers import free_tcp_port
from tests.ops.ops_helpers import http
from version import __version__


def test_health_names_the_version(make_node):
    node = make_node(http_port=free_tcp_port())
    doc = json.loads(http(node.config.http_port, "/health").body)
    assert doc["node"]["version"] == __version__


def test_status_shows_the_version():
    from ops.status_cmd import render

    doc = {"status": "ok", "node": {"name": "n", "version": __version__, "udp": "127.0.0.1:1", "difficulty": 8},
           "process": {}, "chain": {"height": 0, "hash": None}, "actors": [], "peers": []}
    assert f"node n  version {__version__}  udp 127.0.0.1:1" in render(doc).splitlines()[0]
