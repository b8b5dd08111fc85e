"""Helpers for the ops tests: plain HTTP on loopback, and a stand-in MinerActor.

The stand-in lets the ops tests exercise what a MinerActor adds (health_details,
kill_worker) without depending on the real miner or spending CPU on hashing.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from actors.base import NodeActor
from runtime.interfaces import MinerApi


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def http(port: int, path: str, method: str = "GET", timeout: float = 5.0, body: bytes | None = None) -> HttpResult:
    """One request to 127.0.0.1:`port` (a POST sends `body`, empty by default); HTTP errors are returned, not raised."""
    data = (body if body is not None else b"") if method == "POST" else body
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=data)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResult(response.status, _headers(response.headers), response.read(), time.monotonic() - started)
    except urllib.error.HTTPError as exc:
        return HttpResult(exc.code, _headers(exc.headers), exc.read(), time.monotonic() - started)


def _headers(headers: Any) -> dict[str, str]:
    """Header names are case-insensitive: keyed here as "Content-Type" whatever the server sent."""
    return {name.title(): value for name, value in headers.items()}


def wait_http_ready(port: int, timeout: float = 15.0) -> HttpResult:
    """Wait until a node's ops HTTP answers /health (it starts after the actors)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http(port, "/health", timeout=1.0)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def actor_entry(health: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in health["actors"] if a["name"] == name)


class FakeMiner(NodeActor, MinerApi):
    """A MinerActor stand-in: fixed health details, a hang on demand, kill_worker."""

    HASHRATE = 1234.5

    def health_details(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "hashrate": self.HASHRATE, "cpu_percent": 12.5, "rss_bytes": 4096}

    def hang(self, seconds: float) -> None:
        """Block the actor's thread, as a stuck handler would."""
        time.sleep(seconds)

    def kill_worker(self) -> dict[str, Any]:
        """Like the real one: the worker dies, the actor notices and fails by itself."""
        self.actor_ref.proxy().crash.defer("worker process died (killed)")
        return {"killed_pid": 4242}


class FakeMinerWithoutKill(NodeActor):
    """A miner whose class has no kill_worker: the crash endpoint falls back to crash()."""

    def health_details(self) -> dict[str, Any]:
        return {"pid": None, "hashrate": 0.0}
