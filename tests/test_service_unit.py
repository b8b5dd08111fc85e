"""contrib/pow-node.service: the systemd unit the README documents.

Parsed here (systemd's unit syntax: sections, `Key=value` lines, `#` comments, a
key may repeat) and checked: it restarts on failure, keeps the chain in the
directory systemd makes for it, carries the usual hardening, and its ExecStart
is a valid invocation of the installed `pow-node` command. That last one is run
for real, through the CLI's own `config` subcommand with the same arguments (and
the unit's environment): click parses and validates every option exactly as for
the node, and the effective settings are printed instead of a node starting.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "pow-node.service"

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "DynamicUser": "yes",
}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values, in order]}} of a systemd unit file."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"line {number}: a setting before any [Section]"
        key, sep, value = line.partition("=")
        assert sep, f"line {number}: not Key=value: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key) or []
    assert len(values) == 1, f"{key}: expected one value, found {values}"
    return values[0]


def test_the_unit_restarts_on_failure_keeps_state_in_its_state_directory_and_is_hardened():
    unit = parse_unit(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert one(service, "Restart") == "on-failure"
    assert one(service, "StateDirectory") == "pow-node"
    for key, value in HARDENING.items():
        assert one(service, key) == value, key
    argv = shlex.split(one(service, "ExecStart"))
    data_dir = argv[argv.index("--data-dir") + 1]
    assert data_dir == "/var/lib/" + one(service, "StateDirectory")  # where systemd makes it
    assert one(unit["Install"], "WantedBy") == "multi-user.target"


def test_exec_start_is_a_valid_invocation_of_the_installed_command():
    service = parse_unit(UNIT.read_text())["Service"]
    program, *args = shlex.split(one(service, "ExecStart"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert Path(program).name in scripts  # the command `pip install .` puts in the venv's bin/
    assert scripts[Path(program).name] == "run_node:cli"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POW_NODE_")}
    for assignment in service.get("Environment", []):
        for word in shlex.split(assignment):
            key, _, value = word.partition("=")
            env[key] = value
    result = subprocess.run([sys.executable, "run_node.py", "config", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    settings = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:] if line.split()}
    assert settings["data-dir"] == ["/var/lib/pow-node", "flag"]
    assert settings["log-format"] == ["json", "flag"]
    # A mistake in ExecStart would be caught the same way: click refuses it, exit 2, one line.
    bad = subprocess.run([sys.executable, "run_node.py", "config", *args, "--log-format", "xml"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "log-format" in bad.stderr
