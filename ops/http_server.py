"""The ops HTTP server: /health, /metrics, /chain, /peers, POST /admin/crash/{actor}; the dashboard and explorer (ops/status_page.py).

A Flask app served by waitress on a background thread, beside the actors: no
hand-written HTTP parsing, a small fixed pool of request threads, and a clean
stop. It listens on `config.http_host` (127.0.0.1 by default: the endpoints show
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
import threading
from typing import TYPE_CHECKING, Any

import pykka
from flask import Flask, Response, jsonify, request
from prometheus_client import make_wsgi_app
from waitress import wasyncore
from waitress.server import BaseWSGIServer, create_server
from waitress.trigger import trigger as WakeTrigger
from werkzeug.exceptions import HTTPException

from ops import status_page
from ops.snapshot import MINER_PREFIX, NodeInspector

if TYPE_CHECKING:  # node imports ops lazily; no import cycle at run time
    from node import Node

log = logging.getLogger("node.ops.http")

MAX_CHAIN_LIMIT = 100
DEFAULT_CHAIN_LIMIT = 20
REQUEST_THREADS = 4
STOP_TIMEOUT = 5.0
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
    """Serves the ops endpoints of `node` on a background thread until `stop()`."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.inspector = NodeInspector(node)
        self.app = create_app(node, self.inspector)
        self._map: dict[int, Any] = {}
        self._server: Any = None
        self._wake: Any = None
        self._thread: threading.Thread | None = None
        self.addresses: list[tuple[str, int]] = []

    @property
    def port(self) -> int:
        """The TCP port actually bound (the configured one)."""
        return self.addresses[0][1]

    def start(self) -> "OpsHttpServer":
        """Bind now (so a taken port fails here, loudly) and serve on a daemon thread."""
        cfg = self.node.config
        self.inspector.init_metrics()
        try:
            self._server = create_server(
                self.app,
                map=self._map,
                host=cfg.http_host,
                port=cfg.http_port,
                threads=REQUEST_THREADS,
                ident="pow-node",
                channel_timeout=30,
                connection_limit=64,
            )
        except OSError as exc:  # port taken, address not ours: say which
            wasyncore.close_all(self._map)
            raise OSError(exc.errno, f"ops HTTP cannot listen on {cfg.http_host}:{cfg.http_port}: "
                                     f"{exc.strerror or exc}") from exc
        # Our own wake-up pipe in the server's socket map: stop() runs the shutdown
        # inside the serving thread through it, so no socket is closed under that
        # thread's feet.
        self._wake = WakeTrigger(self._map)
        self.addresses = [
            (d.effective_host, int(d.effective_port)) for d in self._map.values() if isinstance(d, BaseWSGIServer)
        ]
        self._thread = threading.Thread(target=self._serve, name=f"ops-http-{cfg.http_port}", daemon=True)
        self._thread.start()
        log.info("ops HTTP on %s", ", ".join(f"http://{h}:{p}/" for h, p in self.addresses))
        return self

    def _serve(self) -> None:
        try:
            self._server.run()
        except Exception:  # noqa: BLE001 - logged; the node itself keeps running
            log.exception("ops HTTP server stopped with an error")

    def stop(self) -> None:
        """Close the listening socket and every connection, wait for the request threads.

        The port is free again when this returns (the listening socket has
        SO_REUSEADDR, so connections in TIME_WAIT don't block a new bind).
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = None
        if thread is not None and thread.is_alive():
            self._wake.pull_trigger(lambda: wasyncore.close_all(self._map))
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                log.warning("ops HTTP thread did not stop within %.1fs", STOP_TIMEOUT)
        else:
            wasyncore.close_all(self._map)
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_TIMEOUT)
        log.info("ops HTTP stopped")
