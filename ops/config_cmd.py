"""`run_node.py config [OPTIONS]`: the node's effective settings and where each came from.

It takes the node's own options (and `--config FILE`), resolved exactly as the node
resolves them (ops/config_file.py: flag > environment > file > default), and prints
one line per option instead of starting a node:

    OPTION      VALUE     FROM
    port        9001      env POW_NODE_PORT
    data-dir    /srv/pow  file /etc/pow-node.toml

A bad file, key or value is the same one-line error (exit 2) as for the node.
"""
from __future__ import annotations

from typing import Any

import click

from ops.config_file import settable_options, source_label


def show_value(value: Any) -> str:
    """A value as an operator would type it: `-` for unset, `true`/`false`, HOST:PORT for a peer."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return f"{value[0]}:{value[1]}"
    return str(value)


def settings_lines(ctx: click.Context) -> list[str]:
    """The table: every option a file or the environment can set, its value and its source."""
    config_path = ctx.params.get("config")
    rows = [["OPTION", "VALUE", "FROM"]]
    for key, param in settable_options(ctx.command).items():
        value = ctx.params.get(str(param.name))
        if param.multiple:
            shown = ", ".join(show_value(v) for v in value) if value else "-"
        else:
            shown = show_value(value)
        rows.append([key, shown, source_label(ctx, param, config_path)])
    if config_path is not None:
        config_param = next(p for p in ctx.command.params if p.name == "config")
        label = source_label(ctx, config_param, None)
        rows.append(["config", str(config_path), "flag" if label == "default" else label])  # default: given before `config`
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return [f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}".rstrip() for r in rows]


def make_config_command(node_command: click.Command) -> click.Command:
    """The `config` subcommand, with the node command's options (the same parameter objects)."""
    params = [p for p in node_command.params if p.name not in ("version",)]

    def show(**_: Any) -> None:
        ctx = click.get_current_context()
        for line in settings_lines(ctx):
            click.echo(line)

    return click.Command(
        "config", params=params, callback=show,
        help="Print the node's effective settings (these options, POW_NODE_* variables, --config FILE) "
             "and where each came from: flag, env, file or default.",
    )

