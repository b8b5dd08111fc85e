"""The ops HTTP server: /health, /metrics, /chain, /peers, POST /admin/...; the dashboard and explorer (ops/status_page.py).

A Flask app served by hypercorn on a background thread, beside the actors
(ops/serving.py: no hand-written HTTP parsing, slow and idle clients cost no
thread, bodies over 64 KiB refused before they are read, headers and body due within
a total deadline so a slow upload is cut and never holds a request slot, a clean public-API stop). It listens on `config.http_host` (127.0.0.1 by default: the endpoints show
internals and, with `--enable-fault-injection`, can crash actors, so nothing is
exposed beyond the machine unless the operator asks).

prometheus_client's WSGI app is called only for `/metrics` (its own server would
answer every path with metrics). Gauges that are only true at scrape time (actor
liveness, queue depth, process and worker CPU/RSS, miner hash rate) are refreshed
from a /health snapshot just before each scrape.

Nothing here waits long on an actor: see ops/snapshot.py. The server sees the node
only through `NodeView` (reads) and, when the operator turned fault injection on,
a `FaultInjector` (ops/view.py); `ops/runner.py` starts and stops it with its node.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable

from flask import Flask, Response, jsonify, request
from prometheus_client import make_wsgi_app
from werkzeug.exceptions import HTTPException

from ops import status_page
from ops.serving import BackgroundServer, Deadlines, RequestGuard
from ops.snapshot import NodeInspector
from ops.view import FaultInjector, NodeView

log = logging.getLogger("node.ops.http")

MAX_CHAIN_LIMIT = 100
DEFAULT_CHAIN_LIMIT = 20
MAX_PARAM_DIGITS = 18  # an integer query parameter (a height, a count) is below 10**18 < 2**63
MAX_STALL_SECONDS = 3600.0
FAULTS_OFF = "fault injection is off (start the node with --enable-fault-injection)"


class ParamError(ValueError):
    """A query parameter the client got wrong; becomes a 400 with this message."""


def _int_param(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    digits = raw.strip().removeprefix("-")
    # ASCII digits only (int() would take "1_0", "١" and, past 4300 digits, raise), and few
    # enough that any value is below 2**63: nothing huge is ever parsed.
    if not (digits.isascii() and digits.isdigit()) or len(digits) > MAX_PARAM_DIGITS:
        raise ParamError(f"'{name}' must be an integer of at most {MAX_PARAM_DIGITS} digits, got {raw[:40]!r}")
    return int(raw.strip(), 10)


def create_app(node: NodeView, inspector: NodeInspector, faults: FaultInjector | None = None) -> Flask:
    """The Flask app for one node (one app per node: tests run several in a process).

    `faults` is None unless the operator allowed fault injection: the /admin
    endpoints then refuse with 403.
    """
    app = Flask(f"pow-node-ops-{node.config.name}")
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep "status" first, as documented
    metrics_app = make_wsgi_app(registry=node.metrics.registry)

    @app.errorhandler(ParamError)
    def bad_request(exc: ParamError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=exc.description, status=exc.code), exc.code or 500

    @app.get("/health")
    def health() -> tuple[Response, int]:
        doc = inspector.health()
        # 503 lets a load balancer or `curl -f` notice a node that gave up; the body
        # is the same document either way.
        return jsonify(doc), 503 if doc["status"] == "down" else 200

    @app.get("/metrics")
    def metrics() -> Response:
        inspector.refresh_metrics(inspector.health(with_chain=False, with_consensus=False))
        return Response.from_app(metrics_app, request.environ)

    @app.get("/chain")
    def chain() -> tuple[Response, int]:
        start = _int_param("from", 0)
        limit = _int_param("limit", DEFAULT_CHAIN_LIMIT)
        if start < 0:
            raise ParamError(f"'from' must be >= 0, got {start}")
        if limit < 1:
            raise ParamError(f"'limit' must be >= 1, got {limit}")
        limit = min(limit, MAX_CHAIN_LIMIT)
        try:
            blocks = inspector.blocks(start, limit)
        except LookupError as exc:
            return jsonify(error=str(exc)), 503
        return jsonify([block.to_wire() for block in blocks]), 200

    @app.get("/peers")
    def peers() -> tuple[Response, int]:
        try:
            return jsonify(status_page.peers_with_claims(inspector)), 200  # each peer with its latest claim
        except LookupError as exc:
            return jsonify(error=str(exc)), 503

    status_page.register(app, node, inspector)  # GET /, /api/overview, /assets/..., /block/<ref>, /search

    @app.post("/admin/crash/<actor>")
    def crash(actor: str) -> tuple[Response, int]:
        if faults is None:
            return jsonify(error=FAULTS_OFF), 403
        return _inject(lambda: faults.crash(actor, "fault injection via HTTP"), inspector.actor_names)

    @app.post("/admin/stall/<actor>")
    def stall(actor: str) -> tuple[Response, int]:
        if faults is None:
            return jsonify(error=FAULTS_OFF), 403
        seconds = _stall_seconds()
        return _inject(lambda: faults.stall(actor, seconds), inspector.actor_names)

    @app.post("/admin/kill-thread/<thread>")
    def kill_thread(thread: str) -> tuple[Response, int]:
        if faults is None:
            return jsonify(error=FAULTS_OFF), 403
        kept = next((k for k in inspector.kept_threads if k.name == thread and k.is_alive()), None)
        if kept is not None and kept.thread is not None:  # a thread of the ops pages themselves
            kept.thread.inject()
            return jsonify(thread=thread, action="exception raised inside the thread"), 202
        return _inject(lambda: faults.kill_thread(thread), lambda: [*faults.thread_names(),
                       *(k.name for k in inspector.kept_threads if k.is_alive())], key="threads")

    return app


def _stall_seconds() -> float:
    """`{"seconds": S}` from the request body: a number in (0, MAX_STALL_SECONDS]; else a 400."""
    body = request.get_json(force=True, silent=True)  # `curl -d` sends no JSON content type
    seconds = body.get("seconds") if isinstance(body, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or not 0 < seconds <= MAX_STALL_SECONDS:
        raise ParamError(f'the body must be JSON {{"seconds": S}} with 0 < S <= {MAX_STALL_SECONDS:g}')
    return float(seconds)


def _inject(fault: Callable[[], dict[str, Any]], actor_names: Callable[[], list[str]],
            key: str = "actors") -> tuple[Response, int]:
    """Run one fault and turn what it did, or why it could not, into a response (errors as FaultInjector lists them)."""
    try:
        done = fault()
    except NotImplementedError as exc:  # before RuntimeError, its base class
        return jsonify(error=str(exc) or "not offered by this node"), 501
    except LookupError as exc:  # KeyError's str() would quote the message: take it as given
        doc: dict[str, Any] = {"error": str(exc.args[0]) if exc.args else type(exc).__name__}
        names = actor_names()
        if names:
            doc[key] = names  # what there is, to pick from
        return jsonify(doc), 404
    except TimeoutError as exc:
        return jsonify(error=str(exc)), 504
    except RuntimeError as exc:
        return jsonify(error=str(exc)), 409
    return jsonify(done), 202


class OpsHttpServer:
    """Serves the ops endpoints of `node` on a background thread until `stop()` (see ops/serving.py).

    `faults` enables the /admin endpoints; leave it None unless the operator asked for fault injection.
    """

    def __init__(self, node: NodeView, faults: FaultInjector | None = None) -> None:
        self.node = node
        self.inspector = NodeInspector(node)
        self.app = create_app(node, self.inspector, faults)
        self._server: BackgroundServer | None = None
        self.addresses: list[tuple[str, int]] = []

    @property
    def port(self) -> int:
        """The TCP port actually bound (the configured one)."""
        return self.addresses[0][1]

    @property
    def guard(self) -> RequestGuard | None:
        """The request guard in front of the app while serving (its counters show what it refused)."""
        return self._server.guard if self._server is not None else None

    def start(self) -> "OpsHttpServer":
        """Bind now (so a taken port fails here, loudly) and serve on a daemon thread."""
        cfg = self.node.config
        self.inspector.init_metrics()
        server = BackgroundServer(self.app, cfg.http_host, cfg.http_port, name=f"ops-http-{cfg.http_port}",
                                  deadlines=Deadlines(cfg.http_request_deadline))
        try:
            self.addresses = [server.start()]
        except OSError as exc:  # port taken, address not ours: say which
            raise OSError(exc.errno, f"ops HTTP cannot listen on {cfg.http_host}:{cfg.http_port}: "
                                     f"{exc.strerror or exc}") from exc
        self._server = server
        if server.keeper is not None:  # the serving thread, in /health and open to fault injection
            self.inspector.kept_threads.append(server.keeper)
        log.info("ops HTTP on %s", ", ".join(f"http://{h}:{p}/" for h, p in self.addresses))
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection, wait for the serving thread.

        The port is free again when this returns (the listening socket has
        SO_REUSEADDR, so connections in TIME_WAIT don't block a new bind).
        """
        server, self._server = self._server, None
        if server is None:
            return
        keeper = server.keeper
        server.stop()
        if keeper in self.inspector.kept_threads:
            self.inspector.kept_threads.remove(keeper)
        log.info("ops HTTP stopped")
