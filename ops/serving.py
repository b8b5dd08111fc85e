"""Serving the ops WSGI app: hypercorn (asyncio) on a background thread, behind a guard.

Why hypercorn: every connection is a coroutine, not a thread, so slow or idle
clients (a slowloris, a thousand idle sockets) cost a file descriptor each and no
request thread; a connection that sends nothing for READ_TIMEOUT seconds is closed
(header and body reads alike), idle keep-alive after KEEP_ALIVE_TIMEOUT, headers are
limited to MAX_HEADER_BYTES; and it stops through its documented `shutdown_trigger`.
Flask runs through a2wsgi's WSGI-to-ASGI adapter on a small thread pool.

`RequestGuard` (ASGI middleware) refuses a request whose declared body is over
MAX_BODY_BYTES with 413 *before reading any of it*, reads any other body whole
(at most MAX_BODY_BYTES: a chunked one past that is refused) before the app runs, and answers 503 when MAX_IN_FLIGHT requests are already being served.
Open connections are not capped by count (hypercorn has no public hook for that):
each costs one file descriptor and a coroutine, never a thread, and goes after
READ_TIMEOUT seconds of silence.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any, Awaitable, Callable

from a2wsgi import WSGIMiddleware
from hypercorn.asyncio import serve
from hypercorn.config import Config

log = logging.getLogger("node.ops.http")

MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
READ_TIMEOUT = 10.0  # seconds without a byte from the client (headers or body) before closing
KEEP_ALIVE_TIMEOUT = 5.0
MAX_IN_FLIGHT = 32  # requests being handled at once (beyond: 503)
REQUEST_THREADS = 4
STOP_TIMEOUT = 5.0

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RequestGuard:
    """ASGI middleware: body limit (checked on the declared length first) and an in-flight cap."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_body: int = MAX_BODY_BYTES,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.app = app
        self.max_body = max_body
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.refused = {"too_large": 0, "busy": 0}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        declared = _content_length(scope)
        if declared is None or declared > self.max_body:
            self.refused["too_large"] += 1
            await _respond(send, 413, b"request body too large (limit %d bytes)\n" % self.max_body)
            return
        if self.in_flight >= self.max_in_flight:
            self.refused["busy"] += 1
            await _respond(send, 503, b"busy\n")
            return
        self.in_flight += 1
        try:
            body = await self._read_body(receive)
            if body is None:
                self.refused["too_large"] += 1
                await _respond(send, 413, b"request body too large (limit %d bytes)\n" % self.max_body)
                return
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.in_flight -= 1

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, read before the app runs (a chunked one has no declared size); None past the limit."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return bytes(body)  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_body:
                return None
            if not message.get("more_body", False):
                return bytes(body)


def _content_length(scope: Scope) -> int | None:
    """The declared body length (0 when none is declared); None when it is not a number."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() and len(value) < 19 else None
    return 0


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that gives the app the body already read, then the client's own events."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> dict[str, Any]:
        return pending.pop() if pending else await receive()

    return replay


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body)), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class OutOfResourceFilter(logging.Filter):
    """Keeps asyncio's "socket.accept() out of system resource" storm to one line per interval.

    With the process out of file descriptors, asyncio logs an ERROR for every failed
    accept (thousands in a few seconds, drowning the log an operator needs). The
    first is let through, later ones within `interval` are only counted, and the
    next one let through says how many there were. Other records pass untouched.
    """

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "out of system resource" not in str(record.msg):
            return True
        now = self.clock()
        with self._lock:
            if self._last is not None and now - self._last < self.interval:
                self._suppressed += 1
                return False
            self._last, suppressed, self._suppressed = now, self._suppressed, 0
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} more since the last report)"
        record.exc_info = None  # the errno says it all; a traceback per episode is noise
        return True


_OUT_OF_RESOURCE = OutOfResourceFilter()


def _quiet_resource_storms() -> None:
    """Install the filter on asyncio's logger once per process."""
    asyncio_log = logging.getLogger("asyncio")
    if _OUT_OF_RESOURCE not in asyncio_log.filters:
        asyncio_log.addFilter(_OUT_OF_RESOURCE)


class BackgroundServer:
    """Serves a WSGI app on `host:port` from a thread of its own until `stop()`."""

    def __init__(self, wsgi_app: Any, host: str, port: int, name: str = "ops-http") -> None:
        self.guard = RequestGuard(WSGIMiddleware(wsgi_app, workers=REQUEST_THREADS))
        self.host, self.port, self.name = host, port, name
        self.address: tuple[str, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> tuple[str, int]:
        """Bind now (a taken port raises OSError here) and serve on a daemon thread."""
        _quiet_resource_storms()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family, backlog=128)
        sock.setblocking(False)
        self.address = sock.getsockname()[:2]
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the bound socket from here
        config.read_timeout = READ_TIMEOUT
        config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
        config.h11_max_incomplete_size = MAX_HEADER_BYTES
        config.h2_max_header_list_size = MAX_HEADER_BYTES
        config.wsgi_max_body_size = MAX_BODY_BYTES
        config.graceful_timeout = 1.0
        config.accesslog = None
        config.errorlog = log
        self._thread = threading.Thread(target=self._run, args=(config,), name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait(STOP_TIMEOUT)
        if self._error is not None:
            raise OSError(f"ops HTTP failed to start: {self._error}")
        return self.address

    def _run(self, config: Config) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(config))
        except BaseException as exc:  # noqa: BLE001 - logged; the node keeps running without ops HTTP
            self._error = exc
            self._ready.set()
            log.error("ops HTTP server stopped with an error: %s", exc)
        finally:
            loop.close()

    async def _serve(self, config: Config) -> None:
        self._stop = asyncio.Event()
        self._ready.set()
        await serve(self.guard, config, shutdown_trigger=self._stop.wait, mode="asgi")  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stop accepting, finish or drop open connections, and wait for the thread (the port is free after)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._thread = None
        if self._stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop ended on its own
                pass
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            log.warning("ops HTTP thread did not stop within %.1fs", STOP_TIMEOUT)
