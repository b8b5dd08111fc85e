"""Serving the ops WSGI app: hypercorn (asyncio) on a kept background thread, behind a guard.

Why hypercorn: every connection is a coroutine, not a thread, so slow or idle
clients (a slowloris, a thousand idle sockets) cost a file descriptor each and no
request thread; headers are limited to MAX_HEADER_BYTES; and it stops through its
documented `shutdown_trigger`. Flask runs through a2wsgi's WSGI-to-ASGI adapter on
a small thread pool.

Deadlines (`Deadlines`, from the node's `http_request_deadline`, 10 s by default):
a request's headers and its body must together arrive within that total. Hypercorn's
keep-alive timer runs from the moment a connection opens (or its last response
went out) until a request's headers are complete, so it is the header deadline
(half the total, at most KEEP_ALIVE_TIMEOUT); the guard gives the body the rest
and answers 408 and closes when it has not all arrived by then. A connection that
sends nothing at all for the read timeout is closed too.

`RequestGuard` (ASGI middleware) refuses a request whose declared body is over
MAX_BODY_BYTES with 413 *before reading any of it*, and reads any other body whole
(at most MAX_BODY_BYTES: a chunked one past that is refused) before the app runs.
Only then does the request take one of the MAX_IN_FLIGHT slots (503 beyond), so
a slow uploader never holds a slot the operator's `/health` needs; bodies being
read have a pool of their own (MAX_BODY_READERS, 503 beyond: a bound on the memory
they hold), and a request without a body never waits for it.
Open connections are not capped by count (hypercorn has no public hook for that):
each costs one file descriptor and a coroutine, never a thread, and goes at the
deadlines above.

The serving thread is kept (`ThreadKeeper`, named `ops.http`): one that dies of a
bug is logged, counted in /health and restarted on the same port, and a fault can
be injected into it like any kept thread (it checks in every CHECK_INTERVAL).
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from a2wsgi import WSGIMiddleware
from hypercorn.asyncio import serve
from hypercorn.config import Config

from runtime.threads import ThreadKeeper, checkpoint

log = logging.getLogger("node.ops.http")

MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
READ_TIMEOUT = 10.0  # seconds without a byte from the client (headers or body) before closing
KEEP_ALIVE_TIMEOUT = 5.0  # idle connection, and the longest the header deadline gets
REQUEST_DEADLINE = 10.0  # headers plus body, in total (the node's http_request_deadline)
MAX_IN_FLIGHT = 32  # requests being handled at once (beyond: 503)
MAX_BODY_READERS = 256  # requests whose body is still arriving (beyond: 503); at most 16 MiB held
REQUEST_THREADS = 4
STOP_TIMEOUT = 5.0
CHECK_INTERVAL = 0.2  # how often the serving thread looks for an injected fault or a stop


@dataclass(frozen=True)
class Deadlines:
    """How long a request's parts may take to arrive; `total` is split between headers and body."""

    total: float = REQUEST_DEADLINE

    def __post_init__(self) -> None:
        if not self.total > 0:
            raise ValueError(f"the request deadline must be positive, got {self.total}")

    @property
    def headers(self) -> float:
        """From a connection's opening (or its last response) to complete headers."""
        return min(KEEP_ALIVE_TIMEOUT, self.total / 2)

    @property
    def body(self) -> float:
        """From complete headers to the end of the body."""
        return self.total - self.headers

    @property
    def read(self) -> float:
        """Silence (no byte at all) after which a connection is closed."""
        return min(READ_TIMEOUT, self.total)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RequestGuard:
    """ASGI middleware: body limit (checked on the declared length first), body deadline, and
    separate caps on bodies being read and on requests being served."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_body: int = MAX_BODY_BYTES,
                 max_in_flight: int = MAX_IN_FLIGHT, body_deadline: float = Deadlines().body,
                 max_body_readers: int = MAX_BODY_READERS) -> None:
        self.app = app
        self.max_body = max_body
        self.max_in_flight = max_in_flight
        self.body_deadline = body_deadline
        self.max_body_readers = max_body_readers
        self.in_flight = 0  # requests whose app is running (they hold a slot)
        self.reading = 0  # requests whose body is still arriving (they hold no slot)
        self.refused = {"too_large": 0, "busy": 0, "slow_body": 0, "readers_busy": 0}

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
        body = b""
        if declared or _chunked(scope):
            if self.reading >= self.max_body_readers:
                self.refused["readers_busy"] += 1
                await _respond(send, 503, b"busy\n")
                return
            self.reading += 1
            slow = False
            try:
                read = await asyncio.wait_for(self._read_body(receive), self.body_deadline)
            except asyncio.TimeoutError:
                read, slow = None, True
            except _ClientGone:
                return  # half a body is not a request: the app never sees it
            finally:
                self.reading -= 1  # (before any answer: the client may act on it at once)
            if slow:
                self.refused["slow_body"] += 1
                await _respond(send, 408, b"request body not received within %gs\n" % self.body_deadline)
                return
            if read is None:
                self.refused["too_large"] += 1
                await _respond(send, 413, b"request body too large (limit %d bytes)\n" % self.max_body)
                return
            body = read
        if self.in_flight >= self.max_in_flight:
            self.refused["busy"] += 1
            await _respond(send, 503, b"busy\n")
            return
        self.in_flight += 1
        try:
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.in_flight -= 1

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, read before the app runs (a chunked one has no declared size); None past the limit."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientGone()
            body += message.get("body", b"")
            if len(body) > self.max_body:
                return None
            if not message.get("more_body", False):
                return bytes(body)


class _ClientGone(Exception):
    """The client disconnected before its body was complete."""


def _content_length(scope: Scope) -> int | None:
    """The declared body length (0 when none is declared); None when it is not a number."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() and len(value) < 19 else None
    return 0


def _chunked(scope: Scope) -> bool:
    """True when the request says a body follows without a declared length."""
    return any(name.lower() == b"transfer-encoding" for name, _ in scope.get("headers", []))


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
    """Serves a WSGI app on `host:port` from a kept thread (`ops.http`) until `stop()`."""

    def __init__(self, wsgi_app: Any, host: str, port: int, name: str = "ops-http",
                 deadlines: Deadlines = Deadlines()) -> None:
        self.deadlines = deadlines
        self.guard = RequestGuard(WSGIMiddleware(wsgi_app, workers=REQUEST_THREADS), body_deadline=deadlines.body)
        self.host, self.port, self.name = host, port, name
        self.address: tuple[str, int] | None = None
        self.keeper: ThreadKeeper | None = None
        self._sock: socket.socket | None = None  # bound by start(), handed to the first run
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._halt = threading.Event()  # stop() was called: no run may keep serving
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> tuple[str, int]:
        """Bind now (a taken port raises OSError here) and serve on a kept daemon thread."""
        _quiet_resource_storms()
        self._sock = self._bind((self.host, self.port))
        self.address = self._sock.getsockname()[:2]
        self.keeper = ThreadKeeper("ops", "http", self._run, logger=log).start()
        self._ready.wait(STOP_TIMEOUT)
        if self._error is not None:
            self.keeper.stop(STOP_TIMEOUT)
            raise OSError(f"ops HTTP failed to start: {self._error}")
        return self.address

    def _bind(self, address: tuple[str, int]) -> socket.socket:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = socket.create_server(address, family=family, backlog=128)
        sock.setblocking(False)
        return sock

    def _config(self, sock: socket.socket) -> Config:
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the bound socket from here
        config.read_timeout = self.deadlines.read
        config.keep_alive_timeout = self.deadlines.headers  # runs until a request's headers are in
        config.h11_max_incomplete_size = MAX_HEADER_BYTES
        config.h2_max_header_list_size = MAX_HEADER_BYTES
        config.wsgi_max_body_size = MAX_BODY_BYTES
        config.graceful_timeout = 1.0
        config.accesslog = None
        config.errorlog = log
        return config

    def _run(self) -> None:
        """One run of the server (the kept thread's target): a restart binds the same address again."""
        try:
            sock, self._sock = self._sock, None
            if sock is None:
                assert self.address is not None
                sock = self._bind(self.address)
            config = self._config(sock)
        except BaseException as exc:
            self._fail_start(exc)
            raise
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(config))
        except BaseException as exc:
            self._fail_start(exc)
            raise  # the keeper logs it and, unless we are stopping, serves again
        finally:
            loop.close()

    def _fail_start(self, exc: BaseException) -> None:
        if not self._ready.is_set():
            self._error = exc
            self._ready.set()

    async def _serve(self, config: Config) -> None:
        """Serve until stop() (a clean return) or an injected fault (raised once the server has stopped)."""
        self._stop = stop = asyncio.Event()
        server = asyncio.ensure_future(serve(self.guard, config, shutdown_trigger=stop.wait, mode="asgi"))  # type: ignore[arg-type]
        self._ready.set()
        fault: BaseException | None = None
        while not server.done():
            if self._halt.is_set():
                stop.set()
            try:
                checkpoint()
            except BaseException as exc:  # an injected fault: stop serving, then die with it
                fault = exc
                stop.set()
            await asyncio.wait({server}, timeout=CHECK_INTERVAL)
        server.result()
        if fault is not None:
            raise fault

    def stop(self) -> None:
        """Stop accepting, finish or drop open connections, and wait for the thread (the port is free after)."""
        keeper, self.keeper = self.keeper, None
        if keeper is None:
            return
        self._halt.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop ended on its own
                pass
        keeper.stop(STOP_TIMEOUT)
        if keeper.is_alive():
            log.warning("ops HTTP thread did not stop within %.1fs", STOP_TIMEOUT)
