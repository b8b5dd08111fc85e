"""The registry's typed accessors: actors are found by the interface they implement."""
from __future__ import annotations

import pykka
import pytest

from messages.internal import TipChanged
from runtime.context import Registry, tell
from runtime.interfaces import ChainApi, TipListener


class FakeChain(pykka.ThreadingActor, ChainApi):
    def tip(self) -> tuple[int, str | None]:
        return 7, "ab" * 32


class Listener(pykka.ThreadingActor, TipListener):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[TipChanged] = []

    def on_tip_changed(self, event: TipChanged) -> None:
        self.events.append(event)

    def seen(self) -> list[TipChanged]:
        return self.events


class Bystander(pykka.ThreadingActor):
    pass


@pytest.fixture
def registry():
    registry = Registry()
    yield registry
    for name in registry.names():
        ref = registry.ref(name)
        if ref is not None and ref.is_alive():
            ref.stop()


def test_an_actor_is_found_by_its_interface_not_its_name(registry):
    registry.set("Whatever", FakeChain.start())
    registry.set("Other", Bystander.start())
    chain = registry.chain()
    assert chain is not None and chain.tip().get(timeout=2) == (7, "ab" * 32)
    assert registry.gossip() is None and registry.consensus() is None and registry.network() is None


def test_every_listener_is_told_and_nothing_else(registry):
    registry.set("L1", Listener.start())
    registry.set("Chain", FakeChain.start())
    registry.set("L2", Listener.start())
    listeners = registry.tip_listeners()
    assert len(listeners) == 2
    event = TipChanged(3, "cd" * 32)
    for listener in listeners:
        assert tell(listener, lambda proxy: proxy.on_tip_changed.defer(event))
    for name in ("L1", "L2"):
        assert registry.proxy(name).seen().get(timeout=2) == [event]


def test_a_stopped_actor_is_not_returned_and_tell_says_so(registry):
    ref = FakeChain.start()
    registry.set("ChainKeeper", ref)
    proxy = registry.chain()
    assert proxy is not None
    ref.stop()
    assert registry.chain() is None  # the cached proxy is not handed out once its actor is dead
    assert registry.proxy("ChainKeeper") is None
    assert not tell(proxy, lambda chain: chain.on_new_word.defer("x"))
    assert not tell(None, lambda chain: chain.on_new_word.defer("x"))


def test_a_replacement_is_found_after_a_restart(registry):
    first = FakeChain.start()
    registry.set("ChainKeeper", first)
    assert registry.chain().actor_ref is first
    first.stop()
    second = FakeChain.start()
    registry.set("ChainKeeper", second)
    assert registry.chain().actor_ref is second
