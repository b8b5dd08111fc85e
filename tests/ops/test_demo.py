"""`python run_node.py demo` as a user runs it: URLs that answer, progress lines, Ctrl-C."""
from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.ops.ops_helpers import http

ROOT = Path(__file__).resolve().parents[2]
URL = re.compile(r"(demo-\d): status http://127\.0\.0\.1:(\d+)/")
PROGRESS = re.compile(r"^\s*\d+\.\ds\s+(\d+) ")


class Demo:
    """The demo in a subprocess, its stdout read line by line on a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "run_node.py", "demo", *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_matching(self, pattern: re.Pattern[str], timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern.pattern!r} within {timeout}s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            match = pattern.search(line)
            if match:
                return match

    def interrupt(self, timeout: float = 20.0) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def demo_factory():
    demos: list[Demo] = []

    def start(*args: str) -> Demo:
        demo = Demo(*args)
        demos.append(demo)
        return demo

    yield start
    for demo in demos:
        demo.kill()


def test_demo_prints_live_status_urls_and_stops_cleanly_on_ctrl_c(demo_factory):
    demo = demo_factory("--miners-per-node", "0", "--interval", "0.5")
    urls = dict(demo.next_matching(URL).groups() for _ in range(3))
    assert sorted(urls) == ["demo-1", "demo-2", "demo-3"]
    demo.next_matching(PROGRESS)
    for name, port in urls.items():
        health = http(int(port), "/health").json()
        assert health["status"] == "ok" and health["node"]["name"] == name
    # Nodes 2 and 3 joined through node 1.
    wait_for(lambda: sorted(p["name"] for p in http(int(urls["demo-1"]), "/peers").json()) == ["demo-2", "demo-3"],
             timeout=5)
    code, stderr = demo.interrupt()
    assert code == 0, stderr
    for port in urls.values():  # everything is down, ports released
        with pytest.raises(OSError):
            http(int(port), "/health", timeout=1)


CELL = re.compile(r"(\d+)\s+([0-9a-f]{8})\s+(demo-\d)")


AUTO_LINE = re.compile(r"difficulty (\d+) \(auto: kernel ([\w-]+) at ([\d.]+) MH/s per core, a block about every ([\d.]+) s\)")


@pytest.mark.timeout(600)  # a hang's safety net, not a speed claim: beside busy cores the miners get little CPU
def test_demo_picks_a_difficulty_this_machine_mines_at_a_demo_pace_and_the_nodes_agree(demo_factory):
    """Regression: a fixed difficulty 5 gave a block every few ms per node with the SHA-NI kernel; the nodes
    forked faster than they could agree (heights 341/339/335, never one tip). Auto must pick a pace they can follow:
    the expected interval it prints is a demo pace, and the nodes end on one tip of height 3 or more."""
    demo = demo_factory("--miners-per-node", "1", "--interval", "0.5")
    difficulty, kernel, per_core, expected = demo.next_matching(AUTO_LINE).groups()
    assert 0.5 <= float(expected) <= 8.0, f"expected block interval {expected}s is no demo pace"
    assert int(difficulty) >= 4 and kernel in {"sha-ni", "portable", "hashlib"}
    seen: list[list[tuple[str, ...]]] = []
    while True:  # until one common tip of height 3 or more (forking faster than they agree never gets there)
        cells = CELL.findall(demo.next_matching(PROGRESS).string)
        seen.append(cells)
        if len(cells) == 3 and min(int(h) for h, _, _ in cells) >= 3 and len({top for _, top, _ in cells}) == 1:
            break
    miners = {miner for cells in seen for _, _, miner in cells}
    assert miners <= {"demo-1", "demo-2", "demo-3"}
    code, stderr = demo.interrupt()
    assert code == 0, stderr


@pytest.mark.parametrize("value, message", [("fast", "neither 'auto' nor a whole number"), ("0", "not in the range 1..64")])
def test_demo_refuses_a_bad_difficulty_in_one_line(value, message):
    result = subprocess.run([sys.executable, "run_node.py", "demo", "--difficulty", value], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
