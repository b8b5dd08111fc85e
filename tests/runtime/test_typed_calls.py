"""Typed calls: an actor's callable surface is its interfaces, checked where the call is written."""
from __future__ import annotations

import pykka
import pytest

from actors.base import NodeActor
from config import NodeConfig
from runtime.context import NodeContext
from runtime.interfaces import ActorInterface, ChainApi, declared_methods
from runtime.mailbox import Call, Tick


class GreeterApi(ActorInterface):
    def greet(self, who: str) -> str:
        raise NotImplementedError


class Greeter(NodeActor, GreeterApi):
    def greet(self, who: str) -> str:
        return f"hello {who}"

    def internal_helper(self) -> str:
        """Public, but not part of any interface: not callable from outside."""
        return "secret"


@pytest.fixture
def greeter(tmp_path):
    ctx = NodeContext(NodeConfig(data_dir=tmp_path))
    ref = Greeter.start(ctx, "Greeter")
    ctx.registry.set("Greeter", ref)
    yield ctx, ref
    ref.stop()
    ctx.timers.close()


def test_the_surface_is_what_the_interfaces_declare():
    methods = declared_methods(Greeter)
    assert "greet" in methods and methods["greet"] is GreeterApi.greet
    assert {"ping", "crash", "stall", "health_details"} <= set(methods)  # every node actor's
    assert "internal_helper" not in methods and "stop" not in methods and "release" not in methods
    assert "on_receive" not in methods and "on_start" not in methods


def test_a_declared_call_goes_through(greeter):
    ctx, _ = greeter
    assert ctx.registry.proxy("Greeter").greet("you").get(timeout=2) == "hello you"


@pytest.mark.parametrize("name", ["greeet", "internal_helper", "stop", "release", "_invoke", "on_receive"])
def test_a_misspelt_or_undeclared_name_fails_where_it_is_called(greeter, name):
    ctx, _ = greeter
    proxy = ctx.registry.proxy("Greeter")
    with pytest.raises(AttributeError, match="declares no method"):
        getattr(proxy, name)


def test_a_call_message_with_a_foreign_function_is_refused_by_the_actor(greeter):
    ctx, ref = greeter
    future = ref.ask(Call(ChainApi.tip), block=False)  # Greeter is no ChainApi
    with pytest.raises(AttributeError, match="does not declare"):
        future.get(timeout=2)
    assert ref.is_alive()  # an ask's error is the caller's problem


def test_a_tick_runs_only_the_actors_own_method(greeter):
    ctx, ref = greeter
    ctx.registry.mailbox("Greeter").attach(ref)
    with pytest.raises(AttributeError):
        ref.ask(Tick(GreeterApi.greet, ("x",)), block=False).get(timeout=2)  # the interface's, not Greeter's
    assert ref.ask(Tick(Greeter.greet, ("x",)), block=False).get(timeout=2) == "hello x"


def test_a_call_message_carries_no_method_name():
    with pytest.raises(pykka.ActorDeadError):
        from runtime.mailbox import Mailbox

        Mailbox("Nobody").defer(GreeterApi.greet, "x")
    assert Call(GreeterApi.greet).method is GreeterApi.greet
