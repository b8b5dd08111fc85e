"""NodeActor's timers: set with the actor's own bound methods, fired as messages to it."""
from __future__ import annotations

import threading

import pytest

from actors.base import NodeActor
from config import NodeConfig
from runtime.context import NodeContext


class Ticking(NodeActor):
    def __init__(self, ctx: NodeContext, fired: threading.Event) -> None:
        super().__init__(ctx, "Ticking")
        self.fired = fired
        self.beats = 0

    def beat(self, label: str) -> None:
        self.beats += 1
        if label == "go" and self.beats >= 3:
            self.fired.set()

    def start_beating(self) -> None:
        self.every(0.01, self.beat, "go")

    def set_bad_timer(self, kind: str) -> None:
        targets = {"a name": "beat", "another object's method": self.fired.set, "a private method": self._private}
        self.every(0.01, targets[kind])  # type: ignore[arg-type]

    def _private(self) -> None:
        pass


@pytest.fixture
def ctx(tmp_path):
    context = NodeContext(NodeConfig(data_dir=tmp_path))
    yield context
    context.timers.close()


def test_a_timer_calls_the_bound_method_with_its_arguments(ctx):
    fired = threading.Event()
    ref = Ticking.start(ctx, fired)
    ctx.registry.mailbox("Ticking").attach(ref)  # the current instance: only it runs its timers
    try:
        ref.proxy().start_beating().get(timeout=2)
        assert fired.wait(5)
    finally:
        ref.stop()


@pytest.mark.parametrize("kind", ["a name", "another object's method", "a private method"])
def test_a_timer_refuses_anything_but_a_public_method_of_the_actor(ctx, kind):
    fired = threading.Event()
    ref = Ticking.start(ctx, fired)
    try:
        with pytest.raises(ValueError):
            ref.proxy().set_bad_timer(kind).get(timeout=2)
    finally:
        ref.stop()
