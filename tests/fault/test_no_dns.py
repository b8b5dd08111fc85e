"""Wire input never causes a DNS query (issue 11), checked with a counting DNS server.

The node runs in a private network namespace with only loopback up, and a private
mount namespace whose /etc/resolv.conf points at 127.0.0.1:53, where
tests/fault/dns_probe.py counts queries. Needs root (unshare); skipped otherwise.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _namespace_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for unshare --net --mount"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2)"
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"unshare refused here: {probe.stderr.decode(errors='replace').strip()[:100]}"
    return None


@pytest.mark.skipif(_namespace_unavailable() is not None, reason=str(_namespace_unavailable()))
def test_gossip_naming_hosts_causes_no_dns_query(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    script = (
        "set -e; ip link set lo up; "
        f"mount --bind {resolv} /etc/resolv.conf; "
        f"exec {sys.executable} -m tests.fault.dns_probe"
    )
    done = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", script], cwd=ROOT,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["control_queries"] >= 1  # the counter does see a lookup made in the namespace
    assert result["wire_queries"] == 0
    assert result["restarts"] == 0
