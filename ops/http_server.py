"""The ops HTTP server: /health, /metrics, /chain, /peers, POST /admin/crash/{actor}; the dashboard and explorer (ops/status_page.py).

A Flask app served by hypercorn on a background thread, beside the actors
(ops/serving.py: no hand-written HTTP parsing, slow and idle clients cost no
thread, bodies over 64 KiB refused before they are read, a clean public-API stop). It listens on `config.http_host` (127.0.0.1 by default: the endpoints show
internals and, with `--enable-fault-injection`, can crash actors, so nothing is
exposed beyond the machine unless the operator asks).

prometheus_client's WSGI app is called only for `/metrics` (its own server would
answer every path with metrics). Gauges that are only true at scrape time (actor
liveness, queue depth, process and worker CPU/RSS, miner hash rate) are refreshed
from a /health snapshot just before each scrape.

Nothing here waits long on an actor: see ops/snapshot.py.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pykka
from flask import Flask, Response, jsonify, request
from prometheus_client import make_wsgi_app
from werkzeug.exceptions import HTTPException

from ops import status_page
from ops.serving import BackgroundServer
from ops.snapshot import MINER_PREFIX, NodeInspector

if TYPE_CHECKING:  # node imports ops lazily; no import cycle at run time
    from node import Node

log = logging.getLogger("node.ops.http")

MAX_CHAIN_LIMIT = 100
DEFAULT_CHAIN_LIMIT = 20
KILL_WORKER_TIMEOUT = 2.0


class ParamError(ValueError):
    """A query parameter the client got wrong; becomes a 400 with this message."""


def _int_param(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw, 10)
    except ValueError:
        raise ParamError(f"'{name}' must be an integer, got {raw!r}") from None


def create_app(node: "Node", inspector: NodeInspector) -> Flask:
    """The Flask app for one node (one app per node: tests run several in a process)."""
    app = Flask(f"pow-node-ops-{node.config.name}")
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep "status" first, as documented
    metrics_app = make_wsgi_app(registry=node.ctx.metrics.registry)

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
            return jsonify(inspector.peers()), 200
        except LookupError as exc:
            return jsonify(error=str(exc)), 503

    status_page.register(app, node, inspector)  # GET /, /api/overview, /assets/..., /block/<ref>, /search

    @app.post("/admin/crash/<actor>")
    def crash(actor: str) -> tuple[Response, int]:
        if not node.config.enable_fault_injection:
            return jsonify(error="fault injection is off (start the node with --enable-fault-injection)"), 403
        return _crash(node, actor)

    return app


def _crash(node: "Node", actor: str) -> tuple[Response, int]:
    """Make `actor` fail the way a real bug would; say what was done.

    A MinerActor loses its worker process (SIGKILL), which it notices and fails
    on, as after a real worker crash; every other actor (NetworkIO, GossipManager,
    ChainKeeper, ConsensusRunner, ...) gets NodeActor.crash told to it, so the
    exception is raised inside the actor and reaches its on_failure.
    """
    if node.supervisor.child(actor) is None:
        names = [entry["name"] for entry in node.supervisor.actor_entries()]
        return jsonify(error=f"no actor named {actor!r}", actors=names), 404
    registry = node.ctx.registry
    ref = registry.ref(actor)
    proxy = registry.proxy(actor)
    if ref is None or proxy is None:
        return jsonify(error=f"{actor} is not running (restarting or stopped)"), 409
    if not hasattr(ref.actor_class, "crash"):
        return jsonify(error=f"{actor} has no fault injection"), 404
    urn = ref.actor_urn
    if actor.startswith(MINER_PREFIX) and hasattr(ref.actor_class, "kill_worker"):
        try:
            result = proxy.kill_worker().get(timeout=KILL_WORKER_TIMEOUT)
        except pykka.Timeout:
            return jsonify(error=f"{actor} did not answer kill_worker within {KILL_WORKER_TIMEOUT:g}s"), 504
        except Exception as exc:  # noqa: BLE001 - dead meanwhile, or the miner refused
            return jsonify(error=f"{actor}.kill_worker failed: {type(exc).__name__}: {exc}"), 409
        log.warning("fault injection: killed %s's worker process (%s)", actor, result)
        return jsonify(actor=actor, urn=urn, action="worker process killed (SIGKILL)", result=result), 202
    try:
        proxy.crash.defer("fault injection via HTTP")
    except pykka.ActorDeadError:
        return jsonify(error=f"{actor} is not running (restarting or stopped)"), 409
    log.warning("fault injection: raised an exception inside %s (%s)", actor, urn)
    return jsonify(actor=actor, urn=urn, action="exception raised inside the actor"), 202


class OpsHttpServer:
    """Serves the ops endpoints of `node` on a background thread until `stop()` (see ops/serving.py)."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.inspector = NodeInspector(node)
        self.app = create_app(node, self.inspector)
        self._server: BackgroundServer | None = None
        self.addresses: list[tuple[str, int]] = []

    @property
    def port(self) -> int:
        """The TCP port actually bound (the configured one)."""
        return self.addresses[0][1]

    def start(self) -> "OpsHttpServer":
        """Bind now (so a taken port fails here, loudly) and serve on a daemon thread."""
        cfg = self.node.config
        self.inspector.init_metrics()
        server = BackgroundServer(self.app, cfg.http_host, cfg.http_port, name=f"ops-http-{cfg.http_port}")
        try:
            self.addresses = [server.start()]
        except OSError as exc:  # port taken, address not ours: say which
            raise OSError(exc.errno, f"ops HTTP cannot listen on {cfg.http_host}:{cfg.http_port}: "
                                     f"{exc.strerror or exc}") from exc
        self._server = server
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
        server.stop()
        log.info("ops HTTP stopped")
