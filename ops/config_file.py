"""The node's options from a TOML file (`--config FILE`) and from `POW_NODE_*` environment variables.

Every option of the node command can come from four places; the first that has it wins:

1. the command line (`--port 9001`);
2. the environment: `POW_NODE_` and the long option name upper-cased, dashes as
   underscores (`POW_NODE_PORT=9001`, `POW_NODE_DATA_DIR=/srv/pow`; a repeatable option
   takes several values separated by spaces: `POW_NODE_PEER="a:8999 b:8999"`);
3. the file named by `--config` (or `POW_NODE_CONFIG`), keys being the long option names
   (`port = 9001`, `data-dir = "/srv/pow"`, `peer = ["a:8999", "b:8999"]`);
4. the option's default.

click does the layering (an option's `envvar`, then the context's `default_map`, which
`load_config_file` fills from the file before the other options are read); its
`ParameterSource` tells `run_node.py config` where each value came from.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

ENV_PREFIX = "POW_NODE_"
NOT_FROM_FILE = {"config", "help", "version"}  # options a file cannot set


class ConfigFileError(click.ClickException):
    """A config file that can't be used: one line naming the file (and the key), exit 2 like a bad argument."""

    exit_code = 2


def long_name(param: click.Parameter) -> str:
    """The option's long name without dashes (`--data-dir` -> `data-dir`): its key in a file."""
    longs = [opt for opt in getattr(param, "opts", []) if opt.startswith("--")]
    return longs[0][2:] if longs else str(param.name)


def env_name(param: click.Parameter) -> str:
    return ENV_PREFIX + long_name(param).upper().replace("-", "_")


def settable_options(command: click.Command) -> dict[str, click.Option]:
    """The options a file or the environment can set, by long name."""
    return {long_name(p): p for p in command.params
            if isinstance(p, click.Option) and p.expose_value and p.name not in NOT_FROM_FILE}


def add_envvars(command: click.Command) -> None:
    """Give every option of `command` (and `--config` itself) its POW_NODE_* environment variable."""
    for param in command.params:
        if isinstance(param, click.Option) and param.expose_value and param.name not in ("help", "version"):
            param.envvar = env_name(param)


def read_config_file(path: Path, command: click.Command, ctx: click.Context) -> dict[str, Any]:
    """The file's settings as a click `default_map` (keyed by parameter name); ConfigFileError if unusable."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigFileError(f"config file {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigFileError(f"config file {path}: is a directory, not a file") from None
    except OSError as exc:
        raise ConfigFileError(f"config file {path}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"config file {path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"config file {path}: not valid TOML (not UTF-8 text)") from None
    options = settable_options(command)
    default_map: dict[str, Any] = {}
    for key, value in data.items():
        param = options.get(key)
        if param is None:
            known = ", ".join(sorted(options))
            raise ConfigFileError(f"config file {path}: unknown key {key!r} (the keys are the long option names: {known})")
        default_map[str(param.name)] = _checked_value(path, key, param, value, ctx)
    return default_map


def _checked_value(path: Path, key: str, param: click.Option, value: Any, ctx: click.Context) -> Any:
    """`value` as click will get it, after checking it the way click checks the option on the command line."""
    def bad(why: str) -> ConfigFileError:
        return ConfigFileError(f"config file {path}: bad value for key {key!r}: {why}")

    if isinstance(value, dict):
        raise bad("a table, not a value")
    if param.multiple:
        values = value if isinstance(value, list) else [value]
    elif isinstance(value, list):
        raise bad("a list, but the option takes one value")
    else:
        values = [value]
    for item in values:
        if isinstance(item, (dict, list)):
            raise bad(f"{item!r} is not a single value")
        if param.is_flag and not isinstance(item, bool):
            raise bad(f"{item!r} is not true or false")
        if not param.is_flag and isinstance(item, bool):
            raise bad(f"{item!r} is not a {param.type.name}")
        try:
            param.type.convert(item, param, ctx)
        except click.BadParameter as exc:
            raise bad(exc.message) from None
    return values if param.multiple else value


def check_environment(command: click.Command, ctx: click.Context) -> None:
    """A bad POW_NODE_* value is one line naming the variable (exit 2), as a bad key in a file is.

    Other POW_NODE_* variables are left alone (the tests' POW_NODE_CHROMIUM, for one).
    """
    for param in settable_options(command).values():
        raw = param.resolve_envvar_value(ctx)
        if raw is None:
            continue
        try:
            param.type_cast_value(ctx, param.value_from_envvar(ctx))
        except click.BadParameter as exc:
            raise ConfigFileError(f"environment variable {param.envvar}: {exc.message}") from None


def load_config_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """`--config`'s callback (an eager option: read before the others): the file becomes the defaults.

    It also checks the POW_NODE_* variables first, for a one-line error naming the variable.
    """
    if ctx.resilient_parsing:
        return value
    check_environment(ctx.command, ctx)
    if value is None and isinstance(ctx.obj, dict):  # `run_node.py --config FILE config`: the group's file
        value = ctx.obj.get("config")
    if value is None:
        return value
    ctx.default_map = {**(ctx.default_map or {}), **read_config_file(Path(value), ctx.command, ctx)}
    return value


def config_option(func: Any) -> Any:
    """The `--config FILE` option (a node option, and the `config` subcommand's)."""
    return click.option(
        "--config", "config", type=click.Path(dir_okay=True, path_type=Path), default=None, is_eager=True,
        expose_value=True, callback=load_config_file, metavar="FILE",
        help="A TOML file of these options (keys: the long option names, e.g. port = 9001). "
             "Every option also comes from POW_NODE_<OPTION>; a flag beats the environment, which beats the file.",
    )(func)


def source_label(ctx: click.Context, param: click.Parameter, config_path: Path | None) -> str:
    """Where `param`'s value came from: `flag`, `env POW_NODE_X`, `file PATH` or `default`."""
    source = ctx.get_parameter_source(str(param.name))
    if source == ParameterSource.COMMANDLINE:
        return "flag"
    if source == ParameterSource.ENVIRONMENT:
        return f"env {param.envvar}"
    if source == ParameterSource.DEFAULT_MAP:
        return f"file {config_path}" if config_path is not None else "file"
    return "default"
