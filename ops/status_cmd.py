"""`python run_node.py status`: a running node's version, uptime, sync state, actors, supervision
tree, chain and peers (with the chain length each last claimed), in a terminal.

Reads the node's `GET /health` (so it works against any node whose ops HTTP port
is reachable) and, for the sync state, uptime and peers' claims, the dashboard's
`GET /api/overview` (left out, saying so, when that can't be read), and prints tables. The exit code lets scripts act on it:

* 0: status ok (every actor alive)
* 1: status degraded (an actor is restarting); the table is printed too
* 3: status down (the supervisor gave up)
* 4: unreachable, or what answered is not a pow-node ops endpoint
* 2 stays click's code for a bad argument.

Every non-zero exit prints one line on stderr saying why.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

import click

from ops.formatting import fmt_bytes, fmt_percent, fmt_rate
from ops.overview import expected_block_seconds, fmt_duration, hashrate_breakdown, sync_progress

EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_DOWN = 3
EXIT_UNREACHABLE = 4
ERROR_WIDTH = 48


class Unreachable(Exception):
    """The node could not be asked: the message is the one-line reason."""


def fetch_health(host: str, port: int, timeout: float) -> dict[str, Any]:
    """GET /health and parse it; raise Unreachable with a one-line reason otherwise."""
    url = f"http://{_host_for_url(host)}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:  # 503 carries the document of a node that is down
        body = exc.read()
        if exc.code != 503:
            raise Unreachable(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach the node at {url}: {reason}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise Unreachable(f"{url} did not answer JSON: is this a pow-node ops port?") from None
    if not isinstance(doc, dict) or "status" not in doc or not isinstance(doc.get("actors"), list):
        raise Unreachable(f"{url} did not answer a pow-node health document")
    return doc


def fetch_overview(host: str, port: int, timeout: float) -> dict[str, Any] | None:
    """GET /api/overview (sync state, uptime, peers' claims), or None when it can't be had."""
    url = f"http://{_host_for_url(host)}:{port}/api/overview"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            doc = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart, a header line first."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _syncing_note(doc: dict[str, Any]) -> str:
    """`, SYNCING 25.0%` on the headline while a sync runs: healthy actors are not a synced node."""
    progress = sync_progress(doc)
    if progress is None:
        return ""
    return ", SYNCING" + (f" {progress['percent']:.1f}%" if progress["percent"] is not None else "")


def sync_line(overview: dict[str, Any] | None) -> str | None:
    """`sync: in sync (longest claim 136 blocks: alice, 2s ago)` when no sync runs; None while one does."""
    if overview is None:
        return "sync: unknown (the node's /api/overview could not be read)"
    sync = overview.get("sync") or {}
    state = sync.get("state")
    if state == "syncing" or not isinstance(state, str):
        return None
    best = sync.get("best_claim") or {}
    claim = ""
    if isinstance(best.get("height"), int):
        who = best.get("name") or best.get("address")
        claim = f"{'longest claim' if state == 'in sync' else 'claimed'}: {best['height']} blocks by {who}, " \
                f"{fmt_duration(best.get('age'))} ago"
    label = {"alone": "on its own (no --peer)", "behind": "BEHIND", "checking": "asking peers for their chains"}
    text = f"sync: {label.get(state, state)}"
    if claim:
        text += f" ({claim}; we have {sync.get('chain_height')})" if state == "behind" else f" ({claim})"
    return text


def render(doc: dict[str, Any], overview: dict[str, Any] | None = None) -> str:
    """The whole terminal report for one /health document (and the dashboard's overview, when read)."""
    node = doc.get("node") or {}
    process = doc.get("process") or {}
    uptime = ((overview or {}).get("node") or {}).get("uptime_seconds")
    out = [
        f"node {node.get('name', '?')}  version {node.get('version', '?')}  udp {node.get('udp', '?')}  difficulty {node.get('difficulty', '?')}  "
        f"status {str(doc['status']).upper()}" + (f" ({doc['reason']})" if doc.get("reason") else "")
        + _syncing_note(doc),
        f"process pid {_cell(process.get('pid'))}  cpu {fmt_percent(process.get('cpu_percent'))}  "
        f"rss {fmt_bytes(process.get('rss_bytes'))}  uptime {fmt_duration(uptime)}",
    ]
    chain = doc.get("chain") or {}
    if chain.get("height") is None:
        out.append(f"chain: unavailable ({chain.get('error', 'no answer')})")
    else:
        height = chain["height"]
        top = f"top #{height - 1} {chain.get('hash')}" if height else "(empty chain)"
        out.append(f"chain: {height} blocks  {top}")
    progress = sync_progress(doc)
    if progress is not None:
        done = f"{progress['fetched']}/{progress['total']} blocks" if progress["total"] else f"{progress['fetched']} blocks"
        percent = f" {progress['percent']:.1f}%" if progress["percent"] is not None else ""
        rate = f", {progress['rate']:.0f} blocks/s" if isinstance(progress.get("rate"), (int, float)) else ""
        eta = f", ETA {fmt_duration(progress['eta_seconds'])}" if isinstance(progress.get("eta_seconds"), (int, float)) else ""
        out.append(f"sync: {progress['stage']} to {progress['target_height']} blocks:{percent} ({done}{rate}{eta})")
    else:
        line = sync_line(overview)
        if line:
            out.append(line)
    mining = hashrate_breakdown(doc)
    if mining["local_workers"] or mining["ray_workers"] or mining["external_clients"] or mining["total"]:
        expected = expected_block_seconds(mining["total"], int(node.get("difficulty") or 0))
        when = f"a block every ~{fmt_duration(expected)}" if expected else "no hashes yet"
        out.append(f"mining: {fmt_rate(mining['total'])} total (local {fmt_rate(mining['local'])}, "
                   f"external {fmt_rate(mining['external'])}" + (f", Ray {fmt_rate(mining['ray'])}" if mining["ray_workers"] else "")
                   + f"); {when}")
    out.append("")
    rows = []
    for actor in doc["actors"]:
        is_miner = "hashrate" in actor
        rows.append([
            str(actor.get("name")),
            _cell(actor.get("alive")),
            _cell(actor.get("restarts")),
            _cell(actor.get("messages")),
            _cell(actor.get("queue_depth")),
            _cell(actor.get("pid")) if is_miner else "",
            fmt_rate(actor.get("hashrate")) if is_miner else "",
            _shorten(actor.get("last_error") or "-", ERROR_WIDTH),
        ])
    out.append(table(["ACTOR", "ALIVE", "RESTARTS", "MESSAGES", "QUEUE", "PID", "HASHRATE", "LAST ERROR"], rows))
    out.append("")
    if isinstance(doc.get("supervision"), dict):
        out.append("supervision:")
        out.extend(render_tree(doc["supervision"]))
        out.append("")
    peers = doc.get("peers")
    if peers is None:
        out.append("peers: unavailable")
    elif not peers:
        out.append("peers: none")
    else:
        claims = {p.get("address"): p for p in (overview or {}).get("peers") or [] if isinstance(p, dict)}
        tables = [p.get("table") for p in peers]
        out.append(f"peers: {len(peers)} ({tables.count('tried')} tried, {tables.count('new')} new)")
        rows = []
        for p in peers:
            address = f"{p.get('host')}:{p.get('port')}"
            claim = claims.get(address) or {}
            height = claim.get("claimed_height")
            rows.append([str(p.get("name")), address, str(p.get("table") or "-"),
                         f"{height} blocks" if isinstance(height, int) else "-",
                         f"{fmt_duration(claim.get('claim_age'))} ago" if isinstance(height, int) else "-",
                         f"{p.get('last_seen_age', 0):.1f}s ago"])
        out.append(table(["PEER", "ADDRESS", "TABLE", "CLAIMS", "CLAIMED", "LAST SEEN"], rows))
    return "\n".join(out)


def render_tree(node: dict[str, Any], prefix: str = "", last: bool = True, root: bool = True) -> list[str]:
    """The /health `supervision` tree, one line per supervisor or actor, drawn with branches."""
    state = str(node.get("state", "?"))
    if node.get("restart_in") is not None:
        state += f" (restart in {node['restart_in']:.0f}s)"
    parts = [str(node.get("name", "?"))]
    if node.get("kind") == "supervisor":
        intensity = node.get("intensity") or {}
        parts.append(f"[{node.get('strategy', '?')}, {_cell(intensity.get('max_restarts'))} restarts in "
                     f"{_cell(intensity.get('period'))}s]")
    parts += [state, f"restarts {_cell(node.get('restarts'))}"]
    error = node.get("reason") or node.get("last_error")
    if error and state != "running":
        parts.append(f"- {_shorten(str(error), ERROR_WIDTH * 2)}")
    branch = "" if root else ("└── " if last else "├── ")
    lines = [prefix + branch + "  ".join(parts)]
    children = node.get("children") or []
    inner = prefix if root else prefix + ("    " if last else "│   ")
    for i, child in enumerate(children):
        lines.extend(render_tree(child, inner, i == len(children) - 1, root=False))
    return lines


@click.command(help="Show a running node's actors, chain and peers (from its GET /health).\n\n"
               "Exit codes: 0 ok, 1 degraded, 3 down, 4 unreachable (2: bad arguments).")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8998, show_default=True, help="The node's ops HTTP port.")
@click.option("--http-host", default="127.0.0.1", show_default=True, help="The node's ops HTTP address.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=3.0, show_default=True, help="Seconds to wait for the node.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw /health document instead of tables.")
@click.pass_context
def status_command(ctx: click.Context, http_port: int, http_host: str, timeout: float, as_json: bool) -> None:
    from click.core import ParameterSource

    given_before = ctx.obj if isinstance(ctx.obj, dict) else {}  # `run_node.py --http-port N status`
    if ctx.get_parameter_source("http_port") == ParameterSource.DEFAULT and "http_port" in given_before:
        http_port = given_before["http_port"]
    if ctx.get_parameter_source("http_host") == ParameterSource.DEFAULT and "http_host" in given_before:
        http_host = given_before["http_host"]
    if http_port == 0:
        raise click.UsageError("--http-port 0 means the ops HTTP is off: there is nothing to ask")
    try:
        doc = fetch_health(http_host, http_port, timeout)
    except Unreachable as exc:
        click.echo(f"unreachable: {exc}. Is the node running, and with this --http-port? "
                   f"(run_node.py status --http-port N --http-host H asks another one)", err=True)
        sys.exit(EXIT_UNREACHABLE)
    click.echo(json.dumps(doc, indent=2) if as_json else render(doc, fetch_overview(http_host, http_port, timeout)))
    status = doc["status"]
    if status == "ok":
        sys.exit(EXIT_OK)
    if status == "down":
        click.echo(f"down: {doc.get('reason') or 'the supervisor gave up'}", err=True)
        sys.exit(EXIT_DOWN)
    click.echo(f"{status}: {doc.get('reason') or 'not every actor is alive'}", err=True)
    sys.exit(EXIT_DEGRADED)
