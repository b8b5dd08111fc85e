"""pyproject.toml installs what the node imports, with requirements.txt's pins and version.py's version."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_INSTALLED = {"tests", "sim", "bench", "docs"}  # a checkout's, not the node's


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_dependencies_are_pinned_as_in_requirements_txt():
    project = pyproject()["project"]
    listed = set(project["dependencies"]) | {r for extra in project["optional-dependencies"].values() for r in extra}
    pinned = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement and not requirement.startswith("./"):
            pinned.add(requirement)
    assert listed == pinned
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9.]+", r) for r in listed)


def test_every_module_and_package_of_the_node_is_installed():
    setuptools = pyproject()["tool"]["setuptools"]
    modules = {p.stem for p in ROOT.glob("*.py")}
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - NOT_INSTALLED
    assert set(setuptools["py-modules"]) == modules
    assert set(setuptools["packages"]) == packages
    assert not list(ROOT.glob("*/*/__init__.py")) or all(
        p.parent.parent.name in NOT_INSTALLED for p in ROOT.glob("*/*/__init__.py"))  # no subpackage left out


def test_the_command_and_the_version():
    from version import __version__

    data = pyproject()
    assert data["project"]["scripts"] == {"pow-node": "run_node:cli"}
    assert data["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "version.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
