"""The native kernel's build is optional: without a C compiler it still succeeds, without the module.

(The build with a compiler is what `pip install -r requirements.txt` did; test_kernel.py
checks the module it made.)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

NATIVE_DIR = Path(__file__).resolve().parents[2] / "mining" / "native"
EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")

pytest.importorskip("setuptools")


def build(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[Path]]:
    source = tmp_path / "native"
    shutil.copytree(NATIVE_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "*.so"))
    result = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=source,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    return result, sorted(source.glob(f"pow_kernel*{EXT_SUFFIX}"))


def test_without_a_compiler_the_build_succeeds_without_the_module(tmp_path):
    result, built = build(tmp_path, CC="/bin/false")
    assert result.returncode == 0, result.stderr
    assert built == []
    assert 'building extension "pow_kernel" failed' in result.stdout + result.stderr
