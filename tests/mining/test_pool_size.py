"""`--miners auto`: sized with psutil by the miners supervisor's child spec, not by the CLI."""
from __future__ import annotations

import psutil
import pytest
from click.testing import CliRunner

import node as node_module
import run_node
from config import NodeConfig
from mining import pool_size
from supervisor import SupervisorSpec


class FakeProcess:
    def __init__(self, affinity):
        self._affinity = affinity

    def cpu_affinity(self):
        return self._affinity


@pytest.mark.parametrize(
    ("logical", "physical", "affinity", "expected"),
    [
        (8, 4, list(range(8)), 4),  # one per physical core
        (8, 4, [0, 1], 2),  # never more than the CPUs we may run on
        (4, None, list(range(4)), 4),  # physical unknown: logical
        (2, 1, [], 1),  # at least one
        (None, None, [], 1),
    ],
)
def test_auto_miner_count(monkeypatch, logical, physical, affinity, expected):
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: logical_value if logical else physical)
    logical_value = logical
    monkeypatch.setattr(psutil, "Process", lambda: FakeProcess(affinity))
    assert pool_size.auto_miner_count() == expected


def test_cli_leaves_auto_to_the_miners_supervisor(monkeypatch):
    seen = {}
    monkeypatch.setattr(run_node, "run_node", lambda config, *args, **kwargs: seen.setdefault("config", config) and 0)
    result = CliRunner().invoke(run_node.cli, ["--miners", "auto", "--http-port", "0"])
    assert result.exit_code == 0, result.output
    assert seen["config"].miners == "auto"


def test_miners_supervisor_spec_resolves_auto_with_psutil(monkeypatch, tmp_path):
    monkeypatch.setattr(pool_size, "auto_miner_count", lambda: 3)
    config = NodeConfig(miners="auto", data_dir=tmp_path)
    specs = node_module.child_specs(config)
    miners = next(s for s in specs if isinstance(s, SupervisorSpec) and s.name == "miners")
    names = [c.name for c in miners.children(type("Ctx", (), {"config": config})())]
    assert names == ["MinerActor-0", "MinerActor-1", "MinerActor-2"]
    assert node_module.miner_count(NodeConfig(miners=2)) == 2
    assert not any(s.name == "miners" for s in node_module.child_specs(NodeConfig(miners=0)))
