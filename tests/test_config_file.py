"""The node's options from a TOML file and POW_NODE_* variables: flag > environment > file > default."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import run_node
from config import NodeConfig
from run_node import cli


@pytest.fixture(autouse=True)
def no_pow_node_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("POW_NODE_") and name != "POW_NODE_CHROMIUM":
            monkeypatch.delenv(name)


@pytest.fixture
def started(monkeypatch) -> list[NodeConfig]:
    """Run the node command without a node: the NodeConfig it would start is recorded."""
    configs: list[NodeConfig] = []
    monkeypatch.setattr(run_node, "setup_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr(run_node, "run_node", lambda config, verbose=False: configs.append(config) or 0)
    return configs


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def invoke(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, args, env=env or {}, catch_exceptions=False)


# Each row: which sources give --port (and --data-dir), and the value that must win.
PRECEDENCE = [
    # flag   env     file    -> port, data-dir, source
    (None, None, None, 8999, None, "default"),
    (None, None, 9003, 9003, "/file", "file"),
    (None, 9002, 9003, 9002, "/env", "env POW_NODE_PORT"),
    (9001, 9002, 9003, 9001, "/flag", "flag"),
    (9001, None, 9003, 9001, "/flag", "flag"),
    (9001, 9002, None, 9001, "/flag", "flag"),
    (None, 9002, None, 9002, "/env", "env POW_NODE_PORT"),
]


@pytest.mark.parametrize("flag,env,file,port,data_dir,source", PRECEDENCE)
def test_precedence_flag_then_environment_then_file_then_default(tmp_path, started, flag, env, file, port, data_dir,
                                                               source):
    args, environment = ["--host", "127.0.0.1"], {}
    if file is not None:
        args += ["--config", str(write(tmp_path, f'port = {file}\ndata-dir = "/file"\n'))]
    if env is not None:
        environment = {"POW_NODE_PORT": str(env), "POW_NODE_DATA_DIR": "/env"}
    if flag is not None:
        args += ["--port", str(flag), "--data-dir", "/flag"]
    result = invoke(args, environment)
    assert result.exit_code == 0, result.output
    (config,) = started
    assert config.port == port
    if data_dir is not None:
        assert config.data_dir == Path(data_dir)
    shown = invoke(["config", *args], environment)  # `config` resolves them the same way and says whence
    assert shown.exit_code == 0, shown.output
    line = next(line for line in shown.output.splitlines() if line.startswith("port "))
    assert line.split()[1] == str(port)
    assert line.endswith(source if source != "file" else f"file {tmp_path / 'node.toml'}")


def test_every_option_from_the_file_and_from_the_environment(tmp_path, started):
    path = write(tmp_path, '\n'.join([
        'host = "127.0.0.1"', 'port = 9001', 'peer = ["a.example:8999", "10.0.0.2:9000"]', 'name = "filed"',
        'difficulty = 5', 'miners = 3', 'data-dir = "/srv/pow"', 'http-port = 0', 'http-host = "0.0.0.0"',
        'enable-fault-injection = true', 'miner-listen = 7000', 'miner-token = "t"', 'ray-address = "auto:1"',
        'log-format = "json"', 'verbose = true',
    ]) + "\n")
    assert invoke(["--config", str(path)]).exit_code == 0
    assert invoke([], {"POW_NODE_CONFIG": str(path)}).exit_code == 0  # the file itself from the environment
    env = {"POW_NODE_HOST": "127.0.0.1", "POW_NODE_PORT": "9001", "POW_NODE_PEER": "a.example:8999 10.0.0.2:9000",
           "POW_NODE_NAME": "filed", "POW_NODE_DIFFICULTY": "5", "POW_NODE_MINERS": "3",
           "POW_NODE_DATA_DIR": "/srv/pow", "POW_NODE_HTTP_PORT": "0", "POW_NODE_HTTP_HOST": "0.0.0.0",
           "POW_NODE_ENABLE_FAULT_INJECTION": "true", "POW_NODE_MINER_LISTEN": "7000", "POW_NODE_MINER_TOKEN": "t",
           "POW_NODE_RAY_ADDRESS": "auto:1"}
    assert invoke([], env).exit_code == 0
    for config in started:
        assert (config.host, config.port, config.name, config.difficulty, config.miners) == ("127.0.0.1", 9001, "filed", 5, 3)
        assert config.peers == (("a.example", 8999), ("10.0.0.2", 9000))
        assert (config.data_dir, config.http_port, config.http_host) == (Path("/srv/pow"), 0, "0.0.0.0")
        assert (config.enable_fault_injection, config.miner_listen, config.miner_token) == (True, 7000, "t")
        assert config.ray_address == "auto:1"
    assert len(started) == 3


@pytest.mark.parametrize("text,key", [
    ("prot = 9001\n", "prot"),
    ('port = 9001\n[node]\nname = "x"\n', "node"),
    ("config = 'other.toml'\n", "config"),
])
def test_an_unknown_key_is_one_line_naming_key_and_file_exit_2(tmp_path, started, text, key):
    path = write(tmp_path, text)
    result = invoke(["--config", str(path)])
    assert result.exit_code == 2 and not started
    lines = result.output.splitlines()
    assert lines == [f"Error: config file {path}: unknown key {key!r} (the keys are the long option names: "
                     + lines[0].split("long option names: ")[1]]
    assert "data-dir" in lines[0] and "port" in lines[0]


@pytest.mark.parametrize("text,key", [
    ("port = 70000\n", "port"),
    ('port = "abc"\n', "port"),
    ("port = [1, 2]\n", "port"),
    ('miners = "lots"\n', "miners"),
    ('peer = ["nohostport"]\n', "peer"),
    ('enable-fault-injection = "yes"\n', "enable-fault-injection"),
    ("difficulty = true\n", "difficulty"),
    ('log-format = "xml"\n', "log-format"),
])
def test_a_bad_value_is_one_line_naming_key_and_file_exit_2(tmp_path, started, text, key):
    path = write(tmp_path, text)
    for args in (["--config", str(path)], ["config", "--config", str(path)]):
        result = invoke(args)
        assert result.exit_code == 2 and not started
        assert len(result.output.splitlines()) == 1, result.output
        assert result.output.startswith(f"Error: config file {path}: bad value for key {key!r}: ")


def test_a_missing_or_broken_file_and_a_bad_variable_are_one_line_exit_2(tmp_path, started):
    missing = invoke(["--config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and missing.output == f"Error: config file {tmp_path / 'nope.toml'}: no such file\n"
    broken = write(tmp_path, "port = \n")
    result = invoke(["--config", str(broken)])
    assert result.exit_code == 2 and result.output.startswith(f"Error: config file {broken}: not valid TOML (")
    assert len(result.output.splitlines()) == 1
    variable = invoke([], {"POW_NODE_PORT": "abc"})
    assert variable.exit_code == 2 and variable.output.startswith("Error: environment variable POW_NODE_PORT: ")
    assert len(variable.output.splitlines()) == 1
    assert not started


def test_config_prints_every_setting_and_its_source(tmp_path):
    path = write(tmp_path, 'data-dir = "/srv/pow"\nport = 9003\npeer = ["a:1", "b:2"]\n')
    result = invoke(["--config", str(path), "config", "--difficulty", "5"], {"POW_NODE_PORT": "9002"})
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in result.output.splitlines()[1:]}
    assert result.output.splitlines()[0].split() == ["OPTION", "VALUE", "FROM"]
    assert rows["port"] == ["9002", "env POW_NODE_PORT"]
    assert rows["data-dir"] == ["/srv/pow", f"file {path}"]
    peer = next(line for line in result.output.splitlines() if line.startswith("peer "))
    assert peer.split(None, 1)[1].startswith("a:1, b:2 ") and peer.endswith(f"file {path}")
    assert rows["difficulty"] == ["5", "flag"]
    assert rows["http-port"] == ["8998", "default"]
    assert rows["config"] == [str(path), "flag"]
    for key in ("host", "name", "miners", "http-host", "enable-fault-injection", "miner-listen", "miner-token",
                "ray-address", "log-format", "log-file", "verbose"):
        assert key in rows


def test_settings_from_the_environment_or_a_file_do_not_block_a_subcommand(tmp_path):
    """Refused before a subcommand: only node options typed on its command line; status takes the file's port."""
    from tests.helpers import free_tcp_port

    free = free_tcp_port()
    path = write(tmp_path, f"http-port = {free}\ndifficulty = 5\n")
    result = invoke(["--config", str(path), "status", "--timeout", "0.5"], {"POW_NODE_DIFFICULTY": "6"})
    assert result.exit_code == 4 and f"127.0.0.1:{free}/health" in result.output
