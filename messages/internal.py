"""Messages the actors send each other (as opposed to the wire messages).

Frozen dataclasses: Pykka does not copy messages, so they must be immutable.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TipChanged:
    """Our chain's top changed: `height` is the number of blocks, `hash` the top's."""

    height: int
    hash: str | None


@dataclass(frozen=True, slots=True)
class Ping:
    """The supervisor's liveness check; every NodeActor answers it at once."""


@dataclass(frozen=True, slots=True)
class Attached:
    """Supervisor -> a new instance: you are the current one, listed in the registry (calls and
    answers addressed to the actor reach you from now on); runs its `on_attached` hook."""
