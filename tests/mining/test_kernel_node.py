"""Nodes mining with each kernel: valid blocks, `kernel` in /health, one log line, the fallback."""
from __future__ import annotations

import logging
import sys

import pytest

from chain.block import check_chain
from mining import kernel as kernel_mod
from mining.kernel import HASHLIB, PORTABLE, available_kernels, native_module
from ops.snapshot import NodeInspector
from tests.helpers import wait_for

BLOCKS = 4


def chain_of(node):
    return node.ctx.registry.chain().get_blocks(0, 10_000).get(timeout=2)


def miners(node):
    """The miners' entries of the /health document."""
    return [a for a in NodeInspector(node).health()["actors"] if a["name"].startswith("MinerActor-")]


def mine_and_check(make_node, kernel_name, caplog):
    caplog.set_level(logging.INFO)
    difficulty = 4 if kernel_name == HASHLIB else 5  # a few blocks a second either way
    node = make_node(miners=2, difficulty=difficulty)
    wait_for(lambda: len(chain_of(node)) >= BLOCKS, timeout=60)
    check_chain(chain_of(node), difficulty)
    entries = wait_for(lambda: (m := miners(node)) and all(e.get("kernel") for e in m) and m, timeout=10)
    assert [e["kernel"] for e in entries] == [kernel_name, kernel_name]
    logged = [r.getMessage() for r in caplog.records if "kernel" in r.getMessage() and "hashes with" in r.getMessage()]
    assert len(logged) == 2 and all(f"the {kernel_name} kernel" in line for line in logged), logged
    return node


def test_node_mines_valid_blocks_with_the_best_kernel(make_node, caplog, monkeypatch):
    monkeypatch.delenv(kernel_mod.KERNEL_ENV, raising=False)
    mine_and_check(make_node, available_kernels()[0], caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "kernel" in r.getMessage()]


@pytest.mark.skipif(native_module() is None, reason="pow_kernel not built")
def test_node_mines_valid_blocks_with_the_portable_kernel(make_node, caplog, monkeypatch):
    monkeypatch.setenv(kernel_mod.KERNEL_ENV, PORTABLE)  # inherited by the spawned workers
    mine_and_check(make_node, PORTABLE, caplog)


def test_node_without_the_extension_mines_with_hashlib_and_warns_once(make_node, caplog, monkeypatch, tmp_path):
    """pow_kernel absent: a module of that name that fails to import comes first on sys.path.

    Spawned workers start with the parent's sys.path, so they don't find it either.
    """
    stub = tmp_path / "no_kernel"
    stub.mkdir()
    (stub / "pow_kernel.py").write_text('raise ImportError("pow_kernel not built (simulated)")\n')
    monkeypatch.syspath_prepend(str(stub))
    monkeypatch.delitem(sys.modules, "pow_kernel", raising=False)
    monkeypatch.delenv(kernel_mod.KERNEL_ENV, raising=False)
    monkeypatch.setattr(kernel_mod, "_warned", False)
    assert native_module() is None
    mine_and_check(make_node, HASHLIB, caplog)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "native hash kernel not built" in r.getMessage()]
    assert len(warnings) == 1  # one line for the node, not one per miner
