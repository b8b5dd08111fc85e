"""The operator's dashboard (`GET /`) and block explorer (`/block/<height>`, `/block/<hash>`).

* `GET /` is a page that renders the JSON of `GET /api/overview` (embedded in the
  page for the first paint, then fetched every few seconds and updated in place:
  no reload). It leads with what an operator asks first: is it synced, how long
  is the chain, when was the last block, how fast are we hashing and how long to
  a block, who are the peers; charts of the last hour; actors and supervision
  below. No CDN, no external assets: the script, the style and the SVG charts
  come from this server (`/assets/...`).
* The explorer pages are rendered on the server (they work without JavaScript):
  every field of a block, links to its neighbours, a search box.

Everything shown comes from strangers on the network (peer names, block
messages, minedBy): Jinja autoescapes it on the server, and the script only ever
sets `textContent`, never HTML.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, redirect, render_template_string, request, send_from_directory

from chain.block import HASH_RE, Block
from ops.formatting import fmt_time
from ops.history import History, RateMeter, Sample
from ops.overview import expected_block_seconds, fmt_duration, hashrate_breakdown, sync_progress
from ops.snapshot import Call, find_chain, find_consensus
from ops.view import NodeView

if TYPE_CHECKING:
    from ops.snapshot import NodeInspector

STATIC_DIR = Path(__file__).resolve().parent / "static"
RECENT_BLOCKS = 10
INTERVAL_BLOCKS = 120  # blocks read for the block-interval chart (the last hour's, at most)
PENDING_WORDS_SHOWN = 20
REFRESH_MS = 2000
MAX_HEIGHT_DIGITS = 19  # a height is below 2**63: a longer digit string names no block (and int() is never asked)


def _is_height(ref: str) -> bool:
    """ASCII decimal digits only ("²" and "١٢" are str.isdigit() too, but not heights)."""
    return ref.isascii() and ref.isdigit()


class Dashboard:
    """What the page and the explorer need from one node, assembled for JSON."""

    def __init__(self, node: NodeView, inspector: "NodeInspector", history: History | None = None) -> None:
        self.node = node
        self.inspector = inspector
        self.history = history or History()
        self.started = time.time()
        self.sync_rate = RateMeter()

    # ------------------------------------------------------------ sampling

    def start_sampler(self) -> None:
        """Sample the figures the charts show, until the node stops."""
        self.inspector.kept_threads.append(self.history.run_sampler(self.sample, lambda: self.node.stopped))

    def sample(self) -> Sample:
        health = self.inspector.health(with_consensus=False)
        peers = health.get("peers")
        return Sample(time.time(), hashrate_breakdown(health)["total"], len(peers) if peers is not None else None,
                      (health.get("chain") or {}).get("height"))

    # ------------------------------------------------------------ the overview document

    def overview(self) -> dict[str, Any]:
        now = time.time()
        health = self.inspector.health()
        cfg = self.node.config
        chain = health.get("chain") or {}
        height = chain.get("height")
        answers = self.inspector.ask_many(self._calls(height))

        latest: list[Block] = list(reversed(_value(answers.get("latest"), [])))  # newest first
        recent: list[Block] = _value(answers.get("recent"), [])
        claims: dict[str, Any] = _value(answers.get("claims"), {})
        words: list[str] = _value(answers.get("words"), [])
        word_count = _value(answers.get("word_count"), None)

        mining = hashrate_breakdown(health)
        mining["expected_block_seconds"] = expected_block_seconds(mining["total"], cfg.difficulty)
        mining["blocks_found"] = int(self.node.metrics.registry.get_sample_value("node_blocks_mined_total") or 0)
        mining["miners_configured"] = cfg.miners

        top = latest[0] if latest else None
        return {
            "now": now,
            "status": health["status"],
            "reason": health.get("reason"),
            "node": {**health["node"], "uptime_seconds": round(now - self.started, 1), "peers_configured":
                     [f"{h}:{p}" for h, p in cfg.peers]},
            "chain": {
                "height": height,
                "top_index": height - 1 if isinstance(height, int) and height > 0 else None,
                "hash": chain.get("hash"),
                "error": chain.get("error"),
                "last_block_time": top.timestamp if top else None,
                "last_block_age": round(now - top.timestamp, 1) if top else None,
            },
            "sync": self._sync(health, now),
            "mining": mining,
            "peers": self._peers(health, claims),
            "peers_error": health.get("peers_error"),
            "latest_blocks": [_block_json(b) for b in latest],
            "pending_words": {"count": word_count, "shown": words},
            "charts": {**self.history.series(now), "block_interval": _intervals(recent, now, self.history.window)},
            "actors": health["actors"],
            "supervision": health.get("supervision"),
            "process": health.get("process"),
            "probes": health.get("probes") or [],
        }

    def _calls(self, height: Any) -> dict[str, Call]:
        calls = {
            "claims": Call(find_consensus, lambda consensus: consensus.claimed_heights()),
            "words": Call(find_chain, lambda chain: chain.pending_words(PENDING_WORDS_SHOWN)),
            "word_count": Call(find_chain, lambda chain: chain.word_count()),
        }
        if isinstance(height, int) and height > 0:
            latest, recent = max(0, height - RECENT_BLOCKS), max(0, height - INTERVAL_BLOCKS)
            calls["latest"] = Call(find_chain, lambda chain: chain.get_blocks(latest, RECENT_BLOCKS))
            calls["recent"] = Call(find_chain, lambda chain: chain.get_blocks(recent, INTERVAL_BLOCKS))
        return calls

    def _sync(self, health: dict[str, Any], now: float) -> dict[str, Any]:
        progress = sync_progress(health)
        peers = health.get("peers")
        if progress is None:
            self.sync_rate.reset()
            consensus = health.get("consensus") or {}
            if not self.node.config.peers and not peers:
                state = "alone"
            elif peers == []:
                state = "no peers"
            else:
                state = "in sync"
            return {"state": state, "last_result": consensus.get("last_result")}
        rate = progress.get("rate")
        if not isinstance(rate, (int, float)):
            rate = self.sync_rate.observe(now, progress["fetched"])
        eta = progress.get("eta_seconds")
        if not isinstance(eta, (int, float)) and rate and progress.get("total"):
            eta = max(0.0, (progress["total"] - progress["fetched"]) / rate) if rate > 0 else None
        return {"state": "syncing", **progress, "rate": rate, "eta_seconds": eta}

    def _peers(self, health: dict[str, Any], claims: dict[str, Any]) -> list[dict[str, Any]]:
        peers = []
        for peer in health.get("peers") or []:
            address = f"{peer.get('host')}:{peer.get('port')}"
            claim = claims.get(address) or {}
            peers.append({"name": peer.get("name"), "address": address, "last_seen_age": peer.get("last_seen_age"),
                          "claimed_height": claim.get("height"), "claim_age": claim.get("age")})
        return peers

    # ------------------------------------------------------------ explorer

    def block(self, ref: str) -> tuple[Block | None, Block | None, int]:
        """The block a /block/<ref> names (a height or a hash), the block before it, and our chain height.

        Raises LookupError when ChainKeeper can't answer (restarting).
        """
        tip = self.inspector.ask(Call(find_chain, lambda chain: chain.tip()))
        if not tip.ok:
            raise LookupError(f"ChainKeeper: {tip.error}")
        height = tip.value[0]
        if _is_height(ref):
            found = self._at(int(ref)) if len(ref) <= MAX_HEIGHT_DIGITS and int(ref) < height else None
        else:
            wanted = ref.lower()
            answer = self.inspector.ask(Call(find_chain, lambda chain: chain.find_block(wanted)))
            if not answer.ok:
                raise LookupError(f"ChainKeeper: {answer.error}")
            found = answer.value
        previous = self._at(found.height - 1) if found is not None and found.height > 0 else None
        return found, previous, height

    def _at(self, height: int) -> Block | None:
        blocks = self.inspector.blocks(height, 1)
        return blocks[0] if blocks else None


def _value(answer: Any, default: Any) -> Any:
    return answer.value if answer is not None and answer.ok and answer.value is not None else default


def _block_json(block: Block) -> dict[str, Any]:
    return {"height": block.height, "hash": block.hash, "minedBy": block.mined_by, "messages": list(block.messages),
            "nonce": block.nonce, "timestamp": block.timestamp}


def _intervals(blocks: list[Block], now: float, window: float) -> list[list[float]]:
    """[[time, seconds since the previous block], ...] for blocks of the last `window` seconds."""
    points = []
    for prev, block in zip(blocks, blocks[1:]):
        if now - block.timestamp <= window:
            points.append([float(block.timestamp), float(max(0, block.timestamp - prev.timestamp))])
    return points


# ---------------------------------------------------------------- routes


def register(app: Flask, node: NodeView, inspector: "NodeInspector") -> Dashboard:
    """Add the dashboard, its JSON, its assets and the explorer to `app`."""
    dashboard = Dashboard(node, inspector)
    dashboard.start_sampler()

    @app.get("/")
    def index() -> Response:
        overview = dashboard.overview()
        return Response(render_template_string(_DASHBOARD, overview=overview, refresh_ms=REFRESH_MS,
                                               title=f"{overview['node']['name']} · {overview['status']}"),
                        mimetype="text/html")

    @app.get("/api/overview")
    def api_overview() -> Response:
        return jsonify(dashboard.overview())

    @app.get("/assets/<path:name>")
    def assets(name: str) -> Response:
        response = send_from_directory(STATIC_DIR, name, max_age=60)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/search")
    def search() -> Any:
        query = (request.args.get("q") or "").strip().lower()
        if _is_height(query) or HASH_RE.match(query):
            return redirect(f"/block/{query}", code=303)
        return _explorer_page(node, None, None, None, query,
                              f"'{query}' is neither a block height (a number) nor a block hash (64 hex digits)"), 400

    @app.get("/block/<ref>")
    def block(ref: str) -> Any:
        ref = ref.strip().lower()
        if not (_is_height(ref) or HASH_RE.match(ref)):
            return _explorer_page(node, None, None, None, ref, "a block is named by its height (a number) or its hash "
                                                         "(64 hex digits)"), 400
        try:
            found, previous, height = dashboard.block(ref)
        except LookupError as exc:
            return _explorer_page(node, None, None, None, ref, f"the chain is not available right now ({exc})"), 503
        if found is None:
            what = f"height {ref}" if _is_height(ref) else f"hash {ref}"
            return _explorer_page(node, None, None, height, ref, f"no block with {what} in our chain of {height} blocks"), 404
        return _explorer_page(node, found, previous, height, ref, None), 200

    return dashboard


def _explorer_page(node: NodeView, block: Block | None, previous: Block | None, height: int | None, query: str,
                   error: str | None) -> str:
    return render_template_string(
        _BLOCK_PAGE, block=block, previous=previous, height=height, query=query, error=error, name=node.config.name,
        difficulty=node.config.difficulty, fmt_time=fmt_time,
        age=fmt_duration(time.time() - block.timestamp) if block is not None else None,
    )


_HEAD = """<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/dashboard.css">"""

_DASHBOARD = """<!doctype html>
<html lang="en">
<head>
""" + _HEAD + """
<title>{{ title }}</title>
</head>
<body>
<header class="top">
  <div><span class="node-name" id="node-name">{{ overview.node.name }}</span>
    <span class="pill" id="status" data-status="{{ overview.status }}">{{ overview.status }}</span>
    <span class="muted" id="node-line">udp {{ overview.node.udp }} · difficulty {{ overview.node.difficulty }}</span></div>
  <form class="search" action="/search" method="get" role="search">
    <input type="search" name="q" id="search-q" placeholder="block height or hash" aria-label="block height or hash">
    <button type="submit">Find block</button>
  </form>
</header>
<div class="banner" id="banner" hidden></div>
<main>
<section class="cards">
  <div class="card" id="card-sync"><h2>Sync</h2><div class="big" id="sync-state">–</div>
    <div class="bar" id="sync-bar" hidden><div id="sync-bar-fill"></div></div><div class="sub" id="sync-detail"></div></div>
  <div class="card" id="card-chain"><h2>Chain</h2><div class="big"><span id="chain-height">–</span> <small>blocks</small></div>
    <div class="sub" id="chain-detail"></div></div>
  <div class="card" id="card-hash"><h2>Hash rate</h2><div class="big" id="hashrate">–</div>
    <div class="sub" id="hash-detail"></div></div>
  <div class="card" id="card-peers"><h2>Peers</h2><div class="big" id="peer-count">–</div>
    <div class="sub" id="peer-detail"></div></div>
  <div class="card" id="card-uptime"><h2>Uptime</h2><div class="big" id="uptime">–</div>
    <div class="sub" id="process-detail"></div></div>
</section>
<section class="charts">
  <figure><figcaption>Hash rate</figcaption><svg id="chart-hashrate" viewBox="0 0 320 110" role="img" aria-label="hash rate over the last hour"></svg></figure>
  <figure><figcaption>Time between blocks</figcaption><svg id="chart-interval" viewBox="0 0 320 110" role="img" aria-label="time between blocks over the last hour"></svg></figure>
  <figure><figcaption>Peers</figcaption><svg id="chart-peers" viewBox="0 0 320 110" role="img" aria-label="peer count over the last hour"></svg></figure>
</section>
<section class="columns">
  <div class="panel wide"><h2>Latest blocks</h2>
    <table id="blocks"><thead><tr><th>#</th><th>hash</th><th>mined by</th><th>messages</th><th>age</th></tr></thead><tbody></tbody></table>
    <p class="muted" id="blocks-empty" hidden>no blocks yet</p></div>
  <div class="panel"><h2>Peers</h2>
    <table id="peers"><thead><tr><th>name</th><th>address</th><th>claims</th><th>seen</th></tr></thead><tbody></tbody></table>
    <p class="muted" id="peers-empty" hidden></p>
    <h2>Pending words <span class="muted" id="words-count"></span></h2>
    <ol id="words"></ol><p class="muted" id="words-empty" hidden>none queued (send NEW_WORD to add one)</p></div>
</section>
<section class="columns">
  <div class="panel wide"><h2>Actors</h2>
    <table id="actors"><thead><tr><th>actor</th><th>state</th><th>restarts</th><th>last error</th><th>queue</th><th>hash rate</th><th>pid</th></tr></thead><tbody></tbody></table></div>
  <div class="panel"><h2>Supervision</h2><div id="supervision"><p class="muted">no supervision tree reported</p></div>
    <h2>End-to-end probes</h2>
    <table id="probes"><thead><tr><th>probe</th><th>proves</th><th>last success</th><th>error</th></tr></thead><tbody></tbody></table>
    <p class="muted" id="probes-empty" hidden>probes are off</p></div>
</section>
</main>
<footer class="muted">Updated <span id="updated">now</span> · every {{ (refresh_ms / 1000) | int }} s without reloading ·
  <a href="/health">/health</a> · <a href="/metrics">/metrics</a> · <a href="/api/overview">/api/overview</a> · <a href="/peers">/peers</a></footer>
<noscript><p class="banner">This page needs JavaScript to show the figures; <a href="/health">/health</a> and the
  <a href="/block/0">block explorer</a> work without it.</p></noscript>
<script id="initial" type="application/json">{{ overview | tojson }}</script>
<script src="/assets/dashboard.js" data-refresh-ms="{{ refresh_ms }}"></script>
</body>
</html>
"""

_BLOCK_PAGE = """<!doctype html>
<html lang="en">
<head>
""" + _HEAD + """
<title>{% if block %}block {{ block.height }}{% else %}block explorer{% endif %} · {{ name }}</title>
</head>
<body>
<header class="top">
  <div><a class="node-name" href="/">{{ name }}</a> <span class="muted">block explorer · difficulty {{ difficulty }}
    {% if height is not none %}· chain of {{ height }} blocks{% endif %}</span></div>
  <form class="search" action="/search" method="get" role="search">
    <input type="search" name="q" value="{{ query }}" placeholder="block height or hash" aria-label="block height or hash">
    <button type="submit">Find block</button>
  </form>
</header>
<main>
{% if error %}
<div class="panel"><p class="error" id="explorer-error">{{ error }}</p>
  <p><a href="/">dashboard</a>{% if height %} · <a href="/block/{{ height - 1 }}">latest block</a>{% endif %}</p></div>
{% else %}
<div class="panel block-page">
<h1>Block <span id="block-height">{{ block.height }}</span>{% if block.height == height - 1 %} <span class="pill" data-status="ok">top of the chain</span>{% endif %}</h1>
<nav class="prevnext">
  {% if block.height > 0 %}<a id="prev" href="/block/{{ block.height - 1 }}">&larr; block {{ block.height - 1 }}</a>{% else %}<span class="muted">genesis: no previous block</span>{% endif %}
  {% if block.height < height - 1 %}<a id="next" href="/block/{{ block.height + 1 }}">block {{ block.height + 1 }} &rarr;</a>{% else %}<span class="muted">no next block yet</span>{% endif %}
</nav>
<table class="fields">
<tr><th>height</th><td>{{ block.height }} <span class="muted">(block number {{ block.height + 1 }} of the chain)</span></td></tr>
<tr><th>hash</th><td><code id="block-hash">{{ block.hash }}</code></td></tr>
<tr><th>follows</th><td>{% if previous %}<a href="/block/{{ previous.hash }}"><code>{{ previous.hash }}</code></a>
  <span class="muted">(block {{ previous.height }}'s hash, hashed first into this block's)</span>{% else %}<span class="muted">nothing: the genesis block</span>{% endif %}</td></tr>
<tr><th>minedBy</th><td id="block-mined-by">{{ block.mined_by }}</td></tr>
<tr><th>messages</th><td>{% if block.messages %}<ol class="messages">{% for m in block.messages %}<li><code>{{ m }}</code></li>{% endfor %}</ol>{% else %}<span class="muted">none</span>{% endif %}</td></tr>
<tr><th>nonce</th><td><code>{{ block.nonce }}</code></td></tr>
<tr><th>timestamp</th><td>{{ block.timestamp }} <span class="muted">({{ fmt_time(block.timestamp) }} UTC, {{ age }} ago)</span></td></tr>
</table>
<p class="muted">Raw: <a href="/chain?from={{ block.height }}&amp;limit=1">/chain?from={{ block.height }}&amp;limit=1</a></p>
</div>
{% endif %}
</main>
</body>
</html>
"""
