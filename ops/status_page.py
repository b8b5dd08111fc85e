"""The human status page served at `GET /`.

Rendered on the server with Jinja (autoescaped: peer names and block messages come
from strangers on the network) and refreshed by a meta refresh, so it works with
no JavaScript and shows the same data as `/health`.
"""
from __future__ import annotations

from typing import Any

from flask import render_template_string

from ops.formatting import fmt_bytes, fmt_percent, fmt_rate, fmt_time

REFRESH_SECONDS = 2
RECENT_BLOCKS = 10

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{ refresh }}">
<title>{{ node.name }} · {{ status }}</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
 h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
 table { border-collapse: collapse; } td, th { padding: .2em .8em; border-bottom: 1px solid #ddd; text-align: left; }
 code { font-size: 12px; } .ok { color: #080; } .degraded { color: #b60; } .down, .dead { color: #c00; }
 .muted { color: #888; }
</style>
</head>
<body>
<h1>{{ node.name }} <span class="{{ status }}">{{ status }}</span></h1>
<p>UDP {{ node.udp }} · difficulty {{ node.difficulty }} · {{ node.miners }} miner(s)
 · process {{ process.pid }}: CPU {{ fmt_percent(process.cpu_percent) }}, RSS {{ fmt_bytes(process.rss_bytes) }}
 {% if reason %}<br><span class="{{ status }}">{{ reason }}</span>{% endif %}</p>

<h2>Chain</h2>
{% if chain.height is none %}
<p class="down">chain unavailable: {{ chain.error }}</p>
{% else %}
<p>height <b>{{ chain.height }}</b> · top <code>{{ chain.hash or "(empty chain)" }}</code>
{% if consensus and consensus.running %} · syncing to {{ consensus.target_height }} ({{ consensus.stage }}, {{ consensus.fetched }} fetched){% endif %}</p>
{% if blocks %}
<table>
<tr><th>height</th><th>hash</th><th>mined by</th><th>messages</th><th>time (UTC)</th></tr>
{% for b in blocks %}
<tr><td>{{ b.height }}</td><td><code>{{ b.hash }}</code></td><td>{{ b.mined_by }}</td>
<td>{{ b.messages | join(", ") }}</td><td>{{ fmt_time(b.timestamp) }}</td></tr>
{% endfor %}
</table>
{% elif blocks_error %}<p class="down">{{ blocks_error }}</p>{% endif %}
{% endif %}

<h2>Actors</h2>
<table>
<tr><th>actor</th><th>state</th><th>restarts</th><th>last restart</th><th>last error</th><th>messages</th><th>queue</th>
<th>worker pid</th><th>hash rate</th><th>worker CPU</th><th>worker RSS</th></tr>
{% for a in actors %}
<tr><td>{{ a.name }}</td>
<td class="{{ 'ok' if a.alive else 'dead' }}">{{ 'running' if a.alive else ('stopped' if status == 'down' else 'restarting') }}</td>
<td>{{ a.restarts }}</td><td>{{ fmt_time(a.last_restart) }}</td><td>{{ a.last_error or "" }}</td>
<td>{{ a.messages | int }}</td><td>{{ a.queue_depth if a.queue_depth is not none else "" }}</td>
<td>{{ a.pid if a.pid is defined and a.pid is not none else "" }}</td>
<td>{{ fmt_rate(a.hashrate) if a.hashrate is defined else "" }}</td>
<td>{{ fmt_percent(a.cpu_percent) if a.cpu_percent is defined else "" }}</td>
<td>{{ fmt_bytes(a.rss_bytes) if a.rss_bytes is defined else "" }}</td></tr>
{% endfor %}
</table>

<h2>Peers ({{ peers | length if peers is not none else "unavailable" }})</h2>
{% if peers %}
<table>
<tr><th>name</th><th>address</th><th>last seen</th></tr>
{% for p in peers %}
<tr><td>{{ p.name }}</td><td>{{ p.host }}:{{ p.port }}</td><td>{{ "%.1f" | format(p.last_seen_age) }} s ago</td></tr>
{% endfor %}
</table>
{% elif peers is none %}<p class="down">{{ peers_error }}</p>
{% else %}<p class="muted">no peers yet</p>{% endif %}

<p class="muted">Refreshes every {{ refresh }} s · <a href="/health">/health</a> · <a href="/metrics">/metrics</a>
 · <a href="/chain">/chain</a> · <a href="/peers">/peers</a></p>
</body>
</html>
"""


def render(health: dict[str, Any], blocks: list[Any], blocks_error: str | None) -> str:
    """The page for one /health snapshot plus the most recent blocks (newest first)."""
    return render_template_string(
        _TEMPLATE,
        refresh=REFRESH_SECONDS,
        status=health["status"],
        reason=health.get("reason"),
        node=health["node"],
        process=health["process"],
        chain=health["chain"],
        consensus=health.get("consensus"),
        actors=health["actors"],
        peers=health.get("peers"),
        peers_error=health.get("peers_error"),
        blocks=blocks,
        blocks_error=blocks_error,
        fmt_rate=fmt_rate,
        fmt_bytes=fmt_bytes,
        fmt_percent=fmt_percent,
        fmt_time=fmt_time,
    )
