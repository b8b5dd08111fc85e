"""Miners on a real local Ray head, in a private loopback-only network namespace.

The scenario (tests/ray/ray_scenario.py) runs under `unshare --net --pid`: Ray's
processes can reach nothing but 127.0.0.1 (Ray even tries to reach 8.8.8.8 to
find its own address), and all of them die with the namespace. Where that is not
possible (not root, no unshare) the test is skipped with the reason.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).with_name("ray_scenario.py")
NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]


def namespace_problem() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install -r requirements.txt)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2) for a loopback-only network namespace"
    probe = subprocess.run([*NAMESPACE, "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"can't make a loopback-only network namespace (needs root): {probe.stderr.strip()[:200]}"
    return None


def run_scenario(script: Path, timeout: float) -> dict:
    """Run a scenario script in the loopback-only namespace; what it measured (its last stdout line)."""
    run = subprocess.run(
        [*NAMESPACE, "sh", "-c", f'ip link set lo up && exec "{sys.executable}" "{script}"'],
        capture_output=True, text=True, timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-8000:]
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    print(measured)
    return measured


@pytest.mark.timeout(300)
def test_miners_on_a_ray_cluster_mine_survive_a_killed_worker_follow_the_cluster_size_and_a_lost_cluster():
    problem = namespace_problem()
    if problem:
        pytest.skip(problem)
    measured = run_scenario(SCENARIO, timeout=280)
    # "Noticed within a few seconds": the restart is counted this soon after the SIGKILL.
    assert measured["death_noticed_s"] < 10
    assert "Ray cluster" in measured["degraded_reason"]


@pytest.mark.timeout(180)
def test_auto_address_finds_the_head_started_on_this_machine():
    """`--ray-address auto` as the README says: `ray start --head` on this machine, then the node."""
    problem = namespace_problem()
    if problem:
        pytest.skip(problem)
    measured = run_scenario(SCENARIO.with_name("ray_auto_scenario.py"), timeout=170)
    assert measured["node_exit"] == 0 and "2 CPUs on 1 nodes" in measured["cluster_line"]


@pytest.mark.timeout(180)
def test_a_cluster_without_token_authentication_gets_one_warning_line():
    """Ray 2.60 starts an open cluster unless asked for tokens: the node notices and says so once."""
    problem = namespace_problem()
    if problem:
        pytest.skip(problem)
    measured = run_scenario(SCENARIO.with_name("ray_open_scenario.py"), timeout=170)
    assert measured["warning_lines"] == 1 and measured["node_exit"] == 0
