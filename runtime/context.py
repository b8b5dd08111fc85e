"""What every actor of one node is given: its config, the registry, the metrics.

The registry is the only way one actor reaches another: it always holds the
*current* reference of each child, so nobody keeps a reference across a restart.
It is owned by the supervisor; actors only read it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pykka

from config import NodeConfig
from runtime.metrics import NodeMetrics


class Registry:
    """Name -> current ActorRef (and a cached proxy), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[str, pykka.ActorRef[Any]] = {}
        self._proxies: dict[str, Any] = {}

    def set(self, name: str, ref: pykka.ActorRef[Any] | None) -> None:
        with self._lock:
            if ref is None:
                self._refs.pop(name, None)
            else:
                self._refs[name] = ref
            self._proxies.pop(name, None)

    def ref(self, name: str) -> pykka.ActorRef[Any] | None:
        with self._lock:
            return self._refs.get(name)

    def proxy(self, name: str) -> Any | None:
        """A proxy to the current `name`, or None while it is down or restarting."""
        with self._lock:
            proxy = self._proxies.get(name)
            if proxy is not None:
                return proxy
            ref = self._refs.get(name)
        if ref is None or not ref.is_alive():
            return None
        try:
            proxy = ref.proxy()
        except pykka.ActorDeadError:
            return None
        with self._lock:
            if self._refs.get(name) is ref:
                self._proxies[name] = proxy
        return proxy

    def names(self) -> list[str]:
        with self._lock:
            return list(self._refs)

    def proxies(self, prefix: str) -> Iterator[Any]:
        """Proxies of every live actor whose name starts with `prefix`."""
        for name in self.names():
            if name.startswith(prefix):
                proxy = self.proxy(name)
                if proxy is not None:
                    yield proxy

    def defer(self, name: str, method: str, *args: Any, **kwargs: Any) -> bool:
        """Fire-and-forget call of `name.method(*args)`; False if `name` is not there now."""
        proxy = self.proxy(name)
        if proxy is None:
            return False
        try:
            getattr(proxy, method).defer(*args, **kwargs)
        except pykka.ActorDeadError:
            return False
        return True


@dataclass
class NodeContext:
    """Config, registry, metrics and the failure callback the supervisor installs."""

    config: NodeConfig
    registry: Registry = field(default_factory=Registry)
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    # (actor name, exception, fire-and-forget calls still queued for it)
    report_failure: Callable[[str, BaseException, list[Any]], None] = lambda name, exc, queued: None
