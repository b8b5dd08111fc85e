"""What every actor of one node is given: its config, the registry, the metrics.

The registry is the only way one actor reaches another: it always holds the
*current* reference of each child, so nobody keeps a reference across a restart.
It is owned by the supervisor; actors only read it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar, cast

import pykka

from config import NodeConfig
from runtime.interfaces import (
    ChainApi,
    ChainProxy,
    ConsensusApi,
    ConsensusProxy,
    DatagramApi,
    DatagramProxy,
    GossipApi,
    GossipProxy,
    NodeActorProxy,
    TipListener,
    TipListenerProxy,
)
from runtime.mailbox import Mailbox, SupervisedProxy
from runtime.metrics import NodeMetrics
from runtime.timers import TimerService

P = TypeVar("P")


class Registry:
    """Name -> current ActorRef, and typed access to the actors by interface; thread-safe.

    Actors reach each other with the typed accessors (`chain()`, `network()`,
    `gossip()`, `consensus()`, `tip_listeners()`), which find the live actor that
    implements an interface of `runtime/interfaces.py`. Names are the ops
    contract (`/health`, `/admin/crash/{actor}`) and are used only there and in
    tests, through `ref(name)` and `proxy(name)`.

    Each name also has a `Mailbox` for the life of the node (runtime/mailbox.py):
    proxies from here send through it, so fire-and-forget calls queued for an
    instance that crashes are handed to the next one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[str, pykka.ActorRef[Any]] = {}
        self._proxies: dict[str, Any] = {}
        self._mailboxes: dict[str, Mailbox] = {}

    def mailbox(self, name: str) -> Mailbox:
        """The mailbox of `name` (created on first use, kept across restarts)."""
        with self._lock:
            box = self._mailboxes.get(name)
            if box is None:
                box = self._mailboxes[name] = Mailbox(name)
            return box

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

    def names(self) -> list[str]:
        with self._lock:
            return list(self._refs)

    def proxy(self, name: str) -> Any | None:
        """A proxy to the current `name`, or None while it is down or restarting (ops and tests)."""
        with self._lock:
            proxy = self._proxies.get(name)
            ref = self._refs.get(name)
        if proxy is not None and proxy.actor_ref.is_alive():
            return proxy
        if ref is None or not ref.is_alive():
            return None
        if getattr(ref.actor_class, "takes_mailbox_calls", False):
            box = self.mailbox(name)
            if box.ref is None:  # registered by hand (tests): the mailbox follows the registry
                box.attach(ref)
            proxy = SupervisedProxy(box, ref)
        else:  # a plain Pykka actor (tests): a plain Pykka proxy
            try:
                proxy = ref.proxy()
            except pykka.ActorDeadError:
                return None
        with self._lock:
            if self._refs.get(name) is ref:
                self._proxies[name] = proxy
        return proxy

    def actor(self, name: str) -> NodeActorProxy | None:
        """The supervised actor called `name`, typed by what every node actor answers."""
        return cast("NodeActorProxy | None", self.proxy(name))

    # ---------------------------------------------------------- by interface

    def chain(self) -> ChainProxy | None:
        return cast("ChainProxy | None", self._first(ChainApi))

    def network(self) -> DatagramProxy | None:
        return cast("DatagramProxy | None", self._first(DatagramApi))

    def gossip(self) -> GossipProxy | None:
        return cast("GossipProxy | None", self._first(GossipApi))

    def consensus(self) -> ConsensusProxy | None:
        return cast("ConsensusProxy | None", self._first(ConsensusApi))

    def tip_listeners(self) -> list[TipListenerProxy]:
        return cast("list[TipListenerProxy]", self._all(TipListener))

    def _all(self, interface: type) -> list[pykka.ActorProxy[Any]]:
        """Proxies of every live actor whose class implements `interface`, in registration order."""
        with self._lock:
            names = [name for name, ref in self._refs.items() if issubclass(ref.actor_class, interface)]
        proxies = (self.proxy(name) for name in names)
        return [proxy for proxy in proxies if proxy is not None]

    def _first(self, interface: type) -> pykka.ActorProxy[Any] | None:
        found = self._all(interface)
        return found[0] if found else None


def tell(proxy: P | None, send: Callable[[P], Any]) -> bool:
    """Fire-and-forget `send(proxy)` (e.g. `lambda chain: chain.on_announce.defer(b, a)`).

    False when the actor is not there now (None, or it died since it was looked
    up): the caller decides whether that matters.
    """
    if proxy is None:
        return False
    try:
        send(proxy)
    except pykka.ActorDeadError:
        return False
    return True


@dataclass
class NodeContext:
    """Config, registry, metrics, the timer service and the termination callback the supervisor installs."""

    config: NodeConfig
    registry: Registry = field(default_factory=Registry)
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    timers: TimerService = field(default_factory=TimerService)
    # Called by an actor once it has released what it held, as its last act:
    # (actor name, its URN, why it ended; None for a requested stop). The supervisor installs it.
    on_terminated: Callable[[str, str, str | None], None] = lambda name, urn, reason: None
