"""The supervision tree's vocabulary: child specs, the events a supervisor handles, a child's state.

Kept apart from the runtime (supervisor.py) so that the shape of a tree (what
`node.py` declares) and the messages between supervisors can be read, and
tested, without the event loop that carries them out.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import pykka

from runtime.context import NodeContext
from runtime.restart_policy import SupervisorPolicy


# ---------------------------------------------------------------- specs


@dataclass(frozen=True)
class ChildSpec:
    """How to run one actor. `start(ctx, name)` returns a started ActorRef."""

    name: str
    start: Callable[[NodeContext, str], pykka.ActorRef[Any]]
    restart: str = "permanent"  # "permanent": always restarted; "temporary": never
    shutdown_timeout: float = 5.0


@dataclass(frozen=True)
class SupervisorSpec:
    """A child that is itself a supervisor. `children(ctx)` is resolved when it is built
    (so e.g. the miner count comes from the child spec, not from the command line)."""

    name: str
    children: Callable[[NodeContext], list["Spec"]]
    policy: SupervisorPolicy = field(default_factory=SupervisorPolicy)
    expendable: bool = True  # giving up degrades the node; the parent restarts it after a cool-down
    shutdown_timeout: float = 30.0


Spec = Union[ChildSpec, SupervisorSpec]


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class Terminated:
    """Child `name` (instance `urn`) has ended and released what it held; `reason` None = a stop."""

    name: str
    urn: str
    reason: str | None


@dataclass(frozen=True)
class StopRequest:
    """Stop every child in reverse start order; the caller waits on the supervisor's end (`wait`)."""

    exit_code: int


@dataclass(frozen=True)
class Revive:
    """Parent -> a supervisor that gave up: start your children again (answered with SubtreeUp
    or a Terminated when that fails)."""


@dataclass(frozen=True)
class SubtreeUp:
    """Child supervisor -> parent: every child of mine runs again."""

    name: str


@dataclass(frozen=True)
class SubtreeStopped:
    """Child supervisor -> parent: my children are stopped, as asked."""

    name: str


@dataclass(frozen=True)
class Escalate:
    """Anyone -> the root: a state owner hung (or a supervisor broke); end the node with exit 1."""

    reason: str


@dataclass(frozen=True)
class AddChild:
    """Start one more worker child (OTP's start_child), e.g. a miner for a CPU that joined."""

    spec: ChildSpec
    done: threading.Event


@dataclass(frozen=True)
class RemoveChild:
    """Stop a worker child for good and forget it (OTP's terminate_child + delete_child)."""

    name: str
    done: threading.Event


# ---------------------------------------------------------------- child state


@dataclass
class Child:
    spec: Spec
    sub: Any = None  # for a SupervisorSpec: its own Supervisor (typed loosely: this module comes before the runtime)
    ref: pykka.ActorRef[Any] | None = None
    # running | starting | stopping | restarting | cooling_down | stopped | failed
    state: str = "stopped"
    restarts: int = 0
    consecutive: int = 0
    started_at: float = 0.0
    last_restart: float | None = None  # wall-clock time, for operators
    last_error: str | None = None
    due: float | None = None  # monotonic time of a scheduled restart
    dead_since: float | None = None  # noticed dead without a Terminated
    giveups: int = 0  # consecutive give-ups of a subtree (for its cool-down)
    queued: bool = False  # a start or stop operation for it waits in the queue
    is_restart: bool = False  # the next start is a restart (counted)
    # An operation in flight:
    pending_ref: pykka.ActorRef[Any] | None = None
    start_future: Any = None
    deadline: float | None = None
    stopped_urn: str | None = None  # a Terminated(None) seen for this URN while stopping
    escalated: bool = False

    @property
    def name(self) -> str:
        return self.spec.name
