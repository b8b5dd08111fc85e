"""The operator's dashboard (`GET /`) and block explorer (`/block/<height>`, `/block/<hash>`).

* `GET /` is a page that renders the JSON of `GET /api/overview` (embedded in the
  page for the first paint, then fetched every few seconds and updated in place:
  no reload). It leads with what an operator asks first: is it synced, how long
  is the chain, when was the last block, how fast are we hashing and how long to
  a block, who are the peers; charts of the last hour; actors and supervision
  below. No CDN, no external assets: the script, the style and the SVG charts
  come from this server (`/assets/...`).
* The explorer pages are rendered on the server (they work without JavaScript):
  pages of blocks (`/blocks?before=H`), every field of a block with its
  confirmations, size and time since the previous block, links to its
  neighbours and home, a search box.

Everything shown comes from strangers on the network (peer names, block
messages, minedBy): Jinja autoescapes it on the server, and the script only ever
sets `textContent`, never HTML.
"""
from __future__ import annotations

import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, jsonify, redirect, render_template, request, send_from_directory

from chain.block import HASH_RE, Block
from ops.formatting import fmt_time
from ops.history import History, RateMeter, Sample
from messages.wire import GetBlockReply, encode
from ops.overview import expected_block_seconds, fmt_duration, hashrate_breakdown, sync_progress, sync_state
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
BLOCKS_PER_PAGE = 20  # the explorer's list of blocks (`/blocks?before=H`)
HASHRATE_WINDOW = 60.0  # seconds the dashboard's one hash-rate figure averages over (card and chart alike)


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
        # One figure, card and chart alike: the mean of the samples the chart draws over the
        # last minute (each sample is the miners' own rate at that moment), with its window.
        mining["live_total"] = mining["total"]
        mining["total"], mining["window_seconds"] = self.history.mean_hashrate(now, HASHRATE_WINDOW, mining["total"])
        mining["expected_block_seconds"] = expected_block_seconds(mining["total"], cfg.difficulty)
        mining["blocks_found"] = int(self.node.metrics.registry.get_sample_value("node_blocks_mined_total") or 0)
        mining["miners_configured"] = cfg.miners

        top = latest[0] if latest else None
        peers = self._peers(health, claims)
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
            "sync": self._sync(health, claims, now),
            "mining": mining,
            "peers": peers,
            "peer_counts": {"tried": sum(1 for p in peers if p.get("table") == "tried"),
                            "new": sum(1 for p in peers if p.get("table") == "new"),
                            "configured": len(cfg.peers)},
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

    def _sync(self, health: dict[str, Any], claims: dict[str, Any], now: float) -> dict[str, Any]:
        progress = sync_progress(health)
        if progress is None:
            self.sync_rate.reset()
            consensus = health.get("consensus") or {}
            height = (health.get("chain") or {}).get("height")
            state, best = sync_state(height, health.get("peers") or [], claims, bool(self.node.config.peers))
            return {"state": state, "best_claim": best, "chain_height": height,
                    "last_result": consensus.get("last_result")}
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
            peers.append({"name": peer.get("name"), "address": address, "table": peer.get("table"),
                          "last_seen_age": peer.get("last_seen_age"), "claimed_height": claim.get("height"),
                          "claimed_hash": claim.get("hash"), "claim_age": claim.get("age")})
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

    def page(self, before: int | None) -> tuple[list[Block], int]:
        """Up to BLOCKS_PER_PAGE blocks below height `before` (the top when None), newest first; our height.

        Raises LookupError when ChainKeeper can't answer (restarting).
        """
        tip = self.inspector.ask(Call(find_chain, lambda chain: chain.tip()))
        if not tip.ok:
            raise LookupError(f"ChainKeeper: {tip.error}")
        height = tip.value[0]
        end = height if before is None else min(before, height)
        start = max(0, end - BLOCKS_PER_PAGE)
        blocks = self.inspector.blocks(start, end - start) if end > start else []
        return list(reversed(blocks)), height

    def _at(self, height: int) -> Block | None:
        blocks = self.inspector.blocks(height, 1)
        return blocks[0] if blocks else None


def _value(answer: Any, default: Any) -> Any:
    return answer.value if answer is not None and answer.ok and answer.value is not None else default


def wire_size(block: Block) -> int:
    """Bytes the block takes on the wire, as the GET_BLOCK_REPLY that serves it."""
    return len(encode(GetBlockReply(block)))


def peers_with_claims(inspector: "NodeInspector") -> list[dict[str, Any]]:
    """`GET /peers`: the peer tables, each peer with its latest claim (`claimed_height`, `claimed_hash`,
    `claim_age` in seconds; null until it made one). Raises LookupError if GossipManager can't answer."""
    peers = inspector.peers()
    answer = inspector.ask(Call(find_consensus, lambda consensus: consensus.claimed_heights()))
    claims: dict[str, Any] = _value(answer, {})
    merged = []
    for peer in peers:
        claim = claims.get(f"{peer.get('host')}:{peer.get('port')}") or {}
        merged.append({**peer, "claimed_height": claim.get("height"), "claimed_hash": claim.get("hash"),
                       "claim_age": claim.get("age")})
    return merged


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
        return Response(render_template(_template(_DASHBOARD), overview=overview, refresh_ms=REFRESH_MS,
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

    @app.get("/blocks")
    def blocks() -> Any:
        raw = (request.args.get("before") or "").strip()
        if raw and not (_is_height(raw) and len(raw) <= MAX_HEIGHT_DIGITS):
            return _explorer_page(node, None, None, None, raw, "before= takes a block height (a number)"), 400
        try:
            page, height = dashboard.page(int(raw) if raw else None)
        except LookupError as exc:
            return _explorer_page(node, None, None, None, "", f"the chain is not available right now ({exc})"), 503
        return render_template(_template(_LIST_PAGE), blocks=page, height=height, name=node.config.name,
                                      difficulty=node.config.difficulty, per_page=BLOCKS_PER_PAGE,
                                      now=time.time(), fmt_duration=fmt_duration), 200

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


_compiled: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


def _template(source: str) -> Any:
    """`source` compiled once per app (compiling a page costs milliseconds of CPU; rendering it, microseconds)."""
    env = current_app.jinja_env
    templates = _compiled.setdefault(env, {})
    template = templates.get(source)
    if template is None:
        template = templates[source] = env.from_string(source)
    return template


def _explorer_page(node: NodeView, block: Block | None, previous: Block | None, height: int | None, query: str,
                   error: str | None) -> str:
    return render_template(
        _template(_BLOCK_PAGE), block=block, previous=previous, height=height, query=query, error=error, name=node.config.name,
        difficulty=node.config.difficulty, fmt_time=fmt_time,
        age=fmt_duration(time.time() - block.timestamp) if block is not None else None,
        confirmations=height - block.height if block is not None and height is not None else None,
        size=wire_size(block) if block is not None else None,
        since_previous=fmt_duration(block.timestamp - previous.timestamp)
        if block is not None and previous is not None and block.timestamp >= previous.timestamp else None,
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
    <span class="muted" id="node-line">pow-node {{ overview.node.version }} · udp {{ overview.node.udp }} · difficulty {{ overview.node.difficulty }}</span></div>
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
  <figure><figcaption>Hash rate <span class="muted" id="chart-hashrate-note"></span></figcaption><svg id="chart-hashrate" viewBox="0 0 320 110" role="img" aria-label="hash rate over the last hour"></svg></figure>
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
    <div id="words-panel" hidden><h2>Pending words <span class="muted" id="words-count"></span></h2>
    <ol id="words"></ol></div>
    <p class="muted" id="words-empty">no NEW_WORD queued</p></div>
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
  <a href="/blocks">all blocks</a> · <a href="/health">/health</a> · <a href="/metrics">/metrics</a> · <a href="/api/overview">/api/overview</a> · <a href="/peers">/peers</a></footer>
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
<tr><th>after previous</th><td id="block-since-previous">{% if since_previous %}{{ since_previous }}{% elif previous %}<span class="muted">stamped before its previous block</span>{% else %}<span class="muted">genesis</span>{% endif %}</td></tr>
<tr><th>confirmations</th><td id="block-confirmations">{{ confirmations }} <span class="muted">(this block and the {{ confirmations - 1 }} on top of it)</span></td></tr>
<tr><th>size</th><td id="block-size">{{ size }} bytes <span class="muted">(as the GET_BLOCK_REPLY datagram that serves it)</span></td></tr>
</table>
<p class="muted">Raw: <a href="/chain?from={{ block.height }}&amp;limit=1">/chain?from={{ block.height }}&amp;limit=1</a>
  · <a id="in-list" href="/blocks?before={{ block.height + 1 }}">in the list of blocks</a> · <a id="home" href="/">dashboard</a></p>
</div>
{% endif %}
</main>
</body>
</html>
"""

_LIST_PAGE = """<!doctype html>
<html lang="en">
<head>
""" + _HEAD + """
<title>blocks · {{ name }}</title>
</head>
<body>
<header class="top">
  <div><a class="node-name" href="/">{{ name }}</a> <span class="muted">block explorer · difficulty {{ difficulty }}
    · chain of {{ height }} blocks</span></div>
  <form class="search" action="/search" method="get" role="search">
    <input type="search" name="q" placeholder="block height or hash" aria-label="block height or hash">
    <button type="submit">Find block</button>
  </form>
</header>
<main>
<div class="panel">
<h1>Blocks {% if blocks %}{{ blocks[-1].height }} to {{ blocks[0].height }}{% endif %}</h1>
<nav class="prevnext">
  {% if blocks and blocks[0].height < height - 1 %}<a id="newer" href="/blocks?before={{ [blocks[0].height + 1 + per_page, height] | min }}">&larr; newer</a>{% else %}<span class="muted">newest</span>{% endif %}
  <a id="home" href="/">dashboard</a>
  {% if blocks and blocks[-1].height > 0 %}<a id="older" href="/blocks?before={{ blocks[-1].height }}">older &rarr;</a>{% else %}<span class="muted">genesis reached</span>{% endif %}
</nav>
{% if blocks %}
<table id="block-list"><thead><tr><th>#</th><th>hash</th><th>mined by</th><th>messages</th><th>age</th></tr></thead><tbody>
{% for b in blocks %}<tr><td class="num"><a href="/block/{{ b.height }}">{{ b.height }}</a></td>
<td class="hash"><a href="/block/{{ b.hash }}">{{ b.hash[:16] }}…</a></td><td>{{ b.mined_by }}</td>
<td>{{ b.messages | join(", ") }}</td><td>{{ fmt_duration(now - b.timestamp) }}</td></tr>
{% endfor %}</tbody></table>
{% else %}<p class="muted" id="explorer-error">no blocks here: the chain has {{ height }}</p>{% endif %}
</div>
</main>
</body>
</html>
"""
